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
            (UsageCollector.metrics(o), [])
        }
    }

    /// Wall time and rusage of a process that ended.
    public static func metrics(_ o: ProcessOutcome) -> [Metric] {
        [
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
            return (VmstatCollector.metrics(before: before, after: THPCounters.pick(KeyValueFile.vmstat(text))), [])
        }
    }

    /// `vmstat.<counter>`: after − before of the THP and compaction counters.
    public static func metrics(before: [String: Int64], after: [String: Int64], in place: String = "") -> [Metric] {
        let delta = THPCounters.delta(before: THPCounters.pick(before), after: THPCounters.pick(after))
        return delta.keys.sorted().map { name in
            Metric(
                name: "vmstat.\(name)", value: Double(delta[name]!), unit: "events", polarity: .neutral,
                source: "vmstat", detail: "machine-wide delta over the run" + (place.isEmpty ? "" : " in \(place)"))
        }
    }
}
