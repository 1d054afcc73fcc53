import Foundation
import NestBenchModel
import NestBenchProcess
import Synchronization

/// A timeline sample taken during a run.
public struct TimelineSample: Sendable, Hashable {
    public var tMillis: Int64
    public var name: String
    public var value: Double

    public init(tMillis: Int64, name: String, value: Double) {
        self.tMillis = tMillis
        self.name = name
        self.value = value
    }
}

/// Collects around one measured process: attached while the child waits at the gate, finished
/// after it exits.
public protocol RunCollector: Sendable {
    func attach(pid: Int32) -> any CollectorSession
    /// Variables the measured process needs for this collector (e.g. `NB_PHASE_STOP` for the
    /// alignment probe's end-of-phase hook); merged into its environment before it starts.
    var environment: [String: String] { get }
}

extension RunCollector {
    public var environment: [String: String] { [:] }
}

extension Array where Element == any RunCollector {
    /// The environment every collector asks for, merged.
    public var environment: [String: String] {
        reduce(into: [:]) { all, c in all.merge(c.environment) { $1 } }
    }
}

public protocol CollectorSession: Sendable {
    /// The child was released (exec'ed).
    func started()
    /// The child exited: the metrics and timeline this collector measured.
    func finish(_ outcome: ProcessOutcome) -> (metrics: [Metric], samples: [TimelineSample])
}

/// Wall time and resource usage of the process (wait4), always available.
public struct UsageCollector: RunCollector {
    public init() {}

    public func attach(pid: Int32) -> any CollectorSession { Session() }

    struct Session: CollectorSession {
        func started() {}
        func finish(_ o: ProcessOutcome) -> (metrics: [Metric], samples: [TimelineSample]) {
            let m = [
                Metric(
                    name: "wall_seconds", value: o.wallSeconds, unit: "s", polarity: .lowerIsBetter, source: "timing",
                    detail: "exec to exit, monotonic clock"),
                Metric(name: "user_seconds", value: o.usage.userSeconds, unit: "s", polarity: .lowerIsBetter, source: "rusage"),
                Metric(
                    name: "system_seconds", value: o.usage.systemSeconds, unit: "s", polarity: .lowerIsBetter, source: "rusage"),
                Metric(
                    name: "minor_faults", value: Double(o.usage.minorFaults), unit: "faults", polarity: .lowerIsBetter,
                    source: "rusage"),
                Metric(
                    name: "max_rss_bytes", value: Double(o.usage.maxRSSKiB) * 1024, unit: "bytes", polarity: .neutral,
                    source: "rusage"),
            ]
            return (m, [])
        }
    }
}

/// THP and compaction counters of /proc/vmstat, as deltas over the run (machine-wide).
public struct VmstatCollector: RunCollector {
    public var path: String

    public init(path: String = "/proc/vmstat") {
        self.path = path
    }

    public func attach(pid: Int32) -> any CollectorSession {
        Session(path: path, before: KernelFile.read(path).map { THPCounters.pick(KeyValueFile.vmstat($0)) })
    }

    struct Session: CollectorSession {
        var path: String
        var before: [String: Int64]?
        func started() {}
        func finish(_ o: ProcessOutcome) -> (metrics: [Metric], samples: [TimelineSample]) {
            guard let before, let text = KernelFile.read(path) else {
                return (
                    [
                        Metric.unavailable(
                            "thp_fault_alloc", unit: "events", polarity: .neutral, source: "vmstat",
                            reason: "unavailable: cannot read \(path)")
                    ], []
                )
            }
            let delta = THPCounters.delta(before: before, after: THPCounters.pick(KeyValueFile.vmstat(text)))
            let metrics = delta.keys.sorted().map { name in
                Metric(
                    name: "vmstat.\(name)", value: Double(delta[name]!), unit: "events", polarity: .neutral,
                    source: "vmstat", detail: "machine-wide delta over the run")
            }
            return (metrics, [])
        }
    }
}

/// Samples the process's AnonHugePages (/proc/PID/smaps_rollup) while it runs.
public final class SmapsSampler: RunCollector {
    public let intervalMillis: Int

    public init(intervalMillis: Int = 500) {
        self.intervalMillis = intervalMillis
    }

    public func attach(pid: Int32) -> any CollectorSession { Session(pid: pid, interval: intervalMillis) }

    final class Session: CollectorSession {
        let pid: Int32
        let interval: Int
        let state = Mutex<(samples: [TimelineSample], stop: Bool)>(([], false))
        let done = DispatchSemaphore(value: 0)
        let start = ContinuousClock.now

        init(pid: Int32, interval: Int) {
            self.pid = pid
            self.interval = interval
        }

        func started() {
            let thread = Thread { [self] in
                while !state.withLock({ $0.stop }) {
                    if let text = KernelFile.read("/proc/\(pid)/smaps_rollup"),
                        let huge = KeyValueFile.meminfo(text)["AnonHugePages"]
                    {
                        let t = Int64((ContinuousClock.now - start).seconds * 1000)
                        state.withLock {
                            $0.samples.append(TimelineSample(tMillis: t, name: "anon_huge_bytes", value: Double(huge)))
                        }
                    }
                    usleep(UInt32(interval * 1000))
                }
                done.signal()
            }
            thread.name = "nestbench-smaps"
            thread.start()
        }

        func finish(_ o: ProcessOutcome) -> (metrics: [Metric], samples: [TimelineSample]) {
            state.withLock { $0.stop = true }
            done.wait()
            let samples = state.withLock { $0.samples }
            guard let max = samples.map(\.value).max() else {
                return (
                    [
                        Metric.unavailable(
                            "anon_huge_bytes_max", unit: "bytes", polarity: .neutral, source: "smaps",
                            reason: "unavailable: the process ended before the first sample (\(interval) ms)")
                    ], []
                )
            }
            return (
                [
                    Metric(
                        name: "anon_huge_bytes_max", value: max, unit: "bytes", polarity: .neutral, source: "smaps",
                        detail:
                            "max of /proc/PID/smaps_rollup AnonHugePages sampled every \(interval) ms (\(samples.count) samples)")
                ],
                samples
            )
        }
    }
}
