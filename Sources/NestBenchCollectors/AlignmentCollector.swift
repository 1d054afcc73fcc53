import Foundation
import NestBenchAlignment
import NestBenchModel
import NestBenchProcess
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The alignment probe as a run collector on this machine: probes the measured process once, at the
/// end of its measured phase, while it is alive.
///
/// The hook: the collector asks for `NB_PHASE_STOP=1` in the child's environment (see
/// `RunCollector.environment`); a workload that honours it (nb-micro) stops itself with SIGSTOP
/// after its measured phase. A thread blocked in `waitid(WSTOPPED|WEXITED|WNOWAIT)` sees the stop,
/// probes, and sends SIGCONT. A workload that exits without stopping gets the metrics as unavailable.
public struct AlignmentCollector: RunCollector {
    public static let phaseStopVariable = "NB_PHASE_STOP"
    public var layer: String
    public var probe: AlignmentProbe

    public init(layer: String = "host", probe: AlignmentProbe = AlignmentProbe()) {
        self.layer = layer
        self.probe = probe
    }

    public var environment: [String: String] { [Self.phaseStopVariable: "1"] }

    public func attach(pid: Int32) -> any CollectorSession { Session(pid: pid, layer: layer, probe: probe) }

    final class Session: CollectorSession {
        let pid: Int32
        let layer: String
        let probe: AlignmentProbe
        let result = Mutex<[Metric]?>(nil)
        let done = DispatchSemaphore(value: 0)
        let started_ = Mutex(false)

        init(pid: Int32, layer: String, probe: AlignmentProbe) {
            self.pid = pid
            self.layer = layer
            self.probe = probe
        }

        func started() {
            started_.withLock { $0 = true }
            let thread = Thread { [self] in
                result.withLock { $0 = watch() }
                done.signal()
            }
            thread.name = "nestbench-align"
            thread.start()
        }

        /// Blocks until the child stops (probe, then continue it) or ends.
        private func watch() -> [Metric] {
            var info = siginfo_t()
            while true {
                let r = waitid(P_PID, id_t(pid), &info, WSTOPPED | WEXITED | WNOWAIT)
                if r == 0 { break }
                if errno == EINTR { continue }
                return AlignmentMetrics.unavailable(
                    layer: layer,
                    reason: "the process ended before the end of its measured phase (waitid: \(String(cString: strerror(errno))))"
                )
            }
            guard info.si_code == CLD_STOPPED else {
                return AlignmentMetrics.unavailable(
                    layer: layer,
                    reason:
                        "the workload exited without stopping at the end of its measured phase (only nb-micro honours \(AlignmentCollector.phaseStopVariable))"
                )
            }
            let stoppedAt = ContinuousClock.now
            let outcome: Result<ProcessAlignment, AlignmentUnavailable>
            do {
                outcome = .success(try probe.probe(pid: pid))
            } catch {
                outcome = .failure(error)
            }
            Glibc.kill(pid, SIGCONT)
            let held = (ContinuousClock.now - stoppedAt)
            let heldMillis = Double(held.components.seconds) * 1000 + Double(held.components.attoseconds) / 1e15
            switch outcome {
            case .success(let alignment):
                let when = String(
                    format: "probed once, at the end of the measured phase (the process stopped itself; held %.1f ms)",
                    heldMillis)
                return AlignmentMetrics.process(alignment, layer: layer, when: when)
            case .failure(let error):
                return AlignmentMetrics.unavailable(layer: layer, reason: error.description)
            }
        }

        func finish(_ o: ProcessOutcome) -> (metrics: [Metric], samples: [TimelineSample]) {
            guard started_.withLock({ $0 }) else {
                return (AlignmentMetrics.unavailable(layer: layer, reason: "the process never started"), [])
            }
            done.wait()
            done.signal()
            return (result.withLock { $0 } ?? [], [])
        }
    }
}
