import Foundation
import NestBenchAlignment
import NestBenchModel
import NestBenchProcess
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The alignment probe as a run collector on this machine: probes the measured process once, at the
/// end of its measured phase, while it is alive; with `collectors.alignment.interval` (opt-in) also
/// every interval while it runs, into the run's timeline.
///
/// The hook: the collector asks for `NB_PHASE_STOP=1` in the child's environment (see
/// `RunCollector.environment`); a workload that honours it (nb-micro) stops itself with SIGSTOP
/// after its measured phase. A thread blocked in `waitid(WSTOPPED|WEXITED|WNOWAIT)` sees the stop,
/// probes, and sends SIGCONT. A workload that exits without stopping gets the metrics as unavailable.
public struct AlignmentCollector: RunCollector {
    public static let phaseStopVariable = "NB_PHASE_STOP"
    /// One probe pass over a pid (the real one reads pagemap and kpageflags; tests pass a fake).
    public typealias Source = @Sendable (Int32) throws(AlignmentUnavailable) -> ProcessAlignment

    public var layer: String
    public var probe: AlignmentProbe
    /// The timeline's period; nil: the probe runs once, at the end of the measured phase.
    public var intervalMillis: Int?
    let source: Source

    public init(layer: String = "host", probe: AlignmentProbe = AlignmentProbe(), intervalMillis: Int? = nil) {
        self.layer = layer
        self.probe = probe
        self.intervalMillis = intervalMillis
        self.source = { pid throws(AlignmentUnavailable) in try probe.probe(pid: pid) }
    }

    /// A collector whose probe passes come from `source` (a fake in tests).
    public init(layer: String = "host", intervalMillis: Int?, source: @escaping Source) {
        self.layer = layer
        self.probe = AlignmentProbe()
        self.intervalMillis = intervalMillis
        self.source = source
    }

    public var environment: [String: String] { [Self.phaseStopVariable: "1"] }

    public func attach(pid: Int32) -> any CollectorSession {
        Session(pid: pid, layer: layer, source: source, intervalMillis: intervalMillis)
    }

    final class Session: CollectorSession {
        let pid: Int32
        let layer: String
        let source: Source
        let intervalMillis: Int?
        let start = ContinuousClock.now
        let result = Mutex<[Metric]?>(nil)
        let done = DispatchSemaphore(value: 0)
        let started_ = Mutex(false)
        /// The timeline, when on (nil: off).
        let timeline: Mutex<AlignmentTimeline?>
        let stopTimeline = DispatchSemaphore(value: 0)
        let timelineDone = DispatchSemaphore(value: 0)

        init(pid: Int32, layer: String, source: @escaping Source, intervalMillis: Int?) {
            self.pid = pid
            self.layer = layer
            self.source = source
            self.intervalMillis = intervalMillis
            timeline = Mutex(intervalMillis.map { AlignmentTimeline(layer: layer, intervalMillis: $0) })
        }

        func started() {
            started_.withLock { $0 = true }
            if let intervalMillis {
                let sampler = Thread { [self] in
                    // Probe from CPUs the workload is not pinned to, where there are any.
                    Affinity.avoid(cpusOf: pid)
                    while stopTimeline.wait(timeout: .now() + .milliseconds(intervalMillis)) == .timedOut {
                        let t = Int64((ContinuousClock.now - start).seconds * 1000)
                        let began = ContinuousClock.now
                        let outcome = probe()
                        let took = (ContinuousClock.now - began).seconds
                        timeline.withLock { $0?.record(outcome, at: t, probeSeconds: took) }
                    }
                    timelineDone.signal()
                }
                sampler.name = "nestbench-align-timeline"
                sampler.start()
            }
            let thread = Thread { [self] in
                result.withLock { $0 = watch() }
                done.signal()
            }
            thread.name = "nestbench-align"
            thread.start()
        }

        /// One probe of the process (the timeline's and the end-of-phase one).
        private func probe() -> Result<ProcessAlignment, AlignmentUnavailable> {
            do throws(AlignmentUnavailable) {
                return .success(try source(pid))
            } catch {
                return .failure(error)
            }
        }

        /// Ends the timeline (the process stopped or ended): no timeline probe runs after this.
        private func endTimeline() {
            guard intervalMillis != nil else { return }
            stopTimeline.signal()
            timelineDone.wait()
        }

        /// How the end-of-phase probe is described: once, or also on the timeline.
        private func when(heldMillis: Double) -> String {
            let end = String(
                format: "at the end of the measured phase (the process stopped itself; held %.1f ms)", heldMillis)
            guard let t = timeline.withLock({ $0 }) else { return "probed once, " + end }
            return "probed every \(t.intervalMillis) ms while the workload ran (\(t.probes) times, "
                + String(format: "%.3f s in all", t.probeSeconds) + ") and once " + end
        }

        /// Blocks until the child stops (probe, then continue it) or ends.
        private func watch() -> [Metric] {
            var info = siginfo_t()
            while true {
                let r = waitid(P_PID, id_t(pid), &info, WSTOPPED | WEXITED | WNOWAIT)
                if r == 0 { break }
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                endTimeline()
                return AlignmentMetrics.unavailable(
                    layer: layer,
                    reason: "the process ended before the end of its measured phase (waitid: \(reason))"
                )
            }
            endTimeline()
            guard info.si_code == CLD_STOPPED else {
                return AlignmentMetrics.unavailable(
                    layer: layer,
                    reason:
                        "the workload exited without stopping at the end of its measured phase (only nb-micro honours \(AlignmentCollector.phaseStopVariable))"
                )
            }
            let stoppedAt = ContinuousClock.now
            let outcome = probe()
            Glibc.kill(pid, SIGCONT)
            let heldMillis = (ContinuousClock.now - stoppedAt).seconds * 1000
            switch outcome {
            case .success(let alignment):
                return AlignmentMetrics.process(alignment, layer: layer, when: when(heldMillis: heldMillis))
            case .failure(let error):
                return AlignmentMetrics.unavailable(layer: layer, reason: error.description)
            }
        }

        func finish(_ o: ProcessOutcome) -> (metrics: [Metric], samples: [TimelineSample]) {
            guard started_.withLock({ $0 }) else {
                var metrics = AlignmentMetrics.unavailable(layer: layer, reason: "the process never started")
                if let t = timeline.withLock({ $0 }) { metrics += t.metrics() }
                return (metrics, [])
            }
            done.wait()
            done.signal()
            var metrics = result.withLock { $0 } ?? []
            guard let t = timeline.withLock({ $0 }) else { return (metrics, []) }
            metrics += t.metrics()
            return (metrics, t.samples)
        }
    }
}

/// The alignment probe's timeline (`collectors.alignment.interval`): one point per probe while the
/// workload ran — `align.huge.<layer>` (fraction of its present 2 MiB regions one huge page),
/// `align.regions` (present regions) and `align.timeline.probe_ms` (how long that probe took, i.e.
/// how long it read the process's page tables) — and what the probing cost the run in all.
public struct AlignmentTimeline: Sendable {
    public let layer: String
    public let intervalMillis: Int
    public private(set) var samples: [TimelineSample] = []
    /// Probe passes run (successful or not).
    public private(set) var probes = 0
    /// Their total wall time, seconds.
    public private(set) var probeSeconds = 0.0
    /// First and last time a probe ran, ms since the workload started.
    public private(set) var firstMillis: Int64?
    public private(set) var lastMillis: Int64?
    /// Why a pass had no huge fraction (the first such reason), e.g. no root for PFNs.
    public private(set) var unavailableReason: String?

    public init(layer: String, intervalMillis: Int) {
        self.layer = layer
        self.intervalMillis = intervalMillis
    }

    public var hugeName: String { "align.huge.\(layer)" }
    public static let probeMillisName = "align.timeline.probe_ms"

    /// Adds one probe pass taken `t` ms after the workload started, which took `probeSeconds`.
    public mutating func record(
        _ outcome: Result<ProcessAlignment, AlignmentUnavailable>, at t: Int64, probeSeconds seconds: Double
    ) {
        probes += 1
        probeSeconds += seconds
        if firstMillis == nil { firstMillis = t }
        lastMillis = t
        samples.append(TimelineSample(tMillis: t, name: Self.probeMillisName, value: seconds * 1000))
        switch outcome {
        case .success(let alignment):
            let s = alignment.summary
            samples.append(TimelineSample(tMillis: t, name: "align.regions", value: Double(s.present)))
            if let fraction = s.hugeFraction {
                samples.append(TimelineSample(tMillis: t, name: hugeName, value: fraction))
            } else if unavailableReason == nil {
                unavailableReason = "no present 2 MiB region in the probed mappings at t=\(t) ms"
            }
        case .failure(let error):
            if unavailableReason == nil { unavailableReason = error.reason }
        }
    }

    /// `align.timeline_probes` and `align.timeline_probe_seconds`: how often the probe ran while the
    /// workload ran and for how long in all (the perturbation the timeline adds), with when.
    public func metrics(source: String = AlignmentMetrics.source) -> [Metric] {
        let points = samples.filter { $0.name == hugeName }.count
        var when = "the alignment timeline: probed every \(intervalMillis) ms while the workload ran"
        if let firstMillis, let lastMillis {
            when += ", \(probes) time(s) from t=\(firstMillis) ms to t=\(lastMillis) ms"
        } else {
            when += "; the workload stopped or ended before the first probe"
        }
        when += "; \(points) point(s) of \(hugeName)"
        if let unavailableReason, points < probes { when += " (the others: unavailable: \(unavailableReason))" }
        return [
            Metric(
                name: "align.timeline_probes", value: Double(probes), unit: "probes", polarity: .neutral, source: source,
                detail: when),
            Metric(
                name: "align.timeline_probe_seconds", value: probeSeconds, unit: "s", polarity: .neutral, source: source,
                detail:
                    "total wall time of the timeline's probe passes, each holding the workload's memory-map lock while it read pagemap; "
                    + when),
        ]
    }
}
