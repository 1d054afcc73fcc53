import Foundation
import NestBenchModel
import NestBenchProcess
import Synchronization

/// One reading of the memory monitor: machine-wide FMFI, MemFree and vmstat counters, and the
/// workload's AnonHugePages.
public struct MonitorReading: Sendable, Hashable {
    public var fmfi: Double?
    public var memFreeBytes: Double?
    public var anonHugeBytes: Double?
    public var vmstat: [String: Int64]

    public init(fmfi: Double?, memFreeBytes: Double?, anonHugeBytes: Double?, vmstat: [String: Int64]) {
        self.fmfi = fmfi
        self.memFreeBytes = memFreeBytes
        self.anonHugeBytes = anonHugeBytes
        self.vmstat = vmstat
    }
}

/// Where the monitor reads from (files replaceable for tests).
public struct MonitorSources: Sendable, Hashable {
    public var buddyinfo: String
    public var vmstat: String
    public var meminfo: String
    public var procRoot: String

    public init(
        buddyinfo: String = "/proc/buddyinfo", vmstat: String = "/proc/vmstat", meminfo: String = "/proc/meminfo",
        procRoot: String = "/proc"
    ) {
        self.buddyinfo = buddyinfo
        self.vmstat = vmstat
        self.meminfo = meminfo
        self.procRoot = procRoot
    }

    /// Takes one reading (what a sample costs).
    public func read(pid: Int32?, order: Int) -> MonitorReading {
        let fmfi = KernelFile.read(buddyinfo).flatMap { try? Buddyinfo.parse($0, path: buddyinfo) }?.machineFMFI(order: order)
        let free = KernelFile.read(meminfo).flatMap { KeyValueFile.meminfo($0)["MemFree"] }.map(Double.init)
        let huge = pid.flatMap { KernelFile.read("\(procRoot)/\($0)/smaps_rollup") }
            .flatMap { KeyValueFile.meminfo($0)["AnonHugePages"] }.map(Double.init)
        let counters = KernelFile.read(vmstat).map { THPCounters.pick(KeyValueFile.vmstat($0)) } ?? [:]
        return MonitorReading(fmfi: fmfi, memFreeBytes: free, anonHugeBytes: huge, vmstat: counters)
    }
}

/// Samples memory state every N ms while the workload runs (like mmtests' monitors) into the
/// run's timeline: `fmfi.order9`, `mem_free_bytes`, `anon_huge_bytes`, `vmstat.<counter>` (delta
/// since the run started). Summaries — before/after/min/max — go into the run's metrics.
public final class MemoryMonitor: RunCollector {
    public let intervalMillis: Int
    public let order: Int
    public let sources: MonitorSources

    public init(intervalMillis: Int = 250, order: Int = 9, sources: MonitorSources = MonitorSources()) {
        self.intervalMillis = max(1, intervalMillis)
        self.order = order
        self.sources = sources
    }

    public func attach(pid: Int32) -> any CollectorSession {
        Session(pid: pid, interval: intervalMillis, order: order, sources: sources)
    }

    final class Session: CollectorSession {
        let pid: Int32
        let interval: Int
        let order: Int
        let sources: MonitorSources
        let start = ContinuousClock.now
        let timeline: Mutex<MonitorTimeline>
        let stop = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        let running = Atomic<Bool>(false)

        init(pid: Int32, interval: Int, order: Int, sources: MonitorSources) {
            self.pid = pid
            self.interval = interval
            self.order = order
            self.sources = sources
            timeline = Mutex(
                MonitorTimeline(before: sources.read(pid: nil, order: order), order: order, intervalMillis: interval))
        }

        var elapsedMillis: Int64 { Int64((ContinuousClock.now - start).seconds * 1000) }

        func started() {
            running.store(true, ordering: .relaxed)
            let thread = Thread { [self] in
                // Sample from CPUs the workload is not pinned to, where there are any.
                Affinity.avoid(cpusOf: pid)
                while stop.wait(timeout: .now() + .milliseconds(interval)) == .timedOut {
                    let reading = sources.read(pid: pid, order: order)
                    let t = elapsedMillis
                    timeline.withLock { $0.record(reading, at: t, includeProcess: true) }
                }
                done.signal()
            }
            thread.name = "nestbench-monitor"
            thread.start()
        }

        func finish(_ outcome: ProcessOutcome) -> (metrics: [Metric], samples: [TimelineSample]) {
            if running.load(ordering: .relaxed) {
                stop.signal()
                done.wait()
            }
            // The workload has exited: machine-wide state only.
            let reading = sources.read(pid: nil, order: order)
            let t = elapsedMillis
            let zones = (try? Buddyinfo.parse(KernelFile.read(sources.buddyinfo) ?? ""))?.machineZonesDescription ?? "?"
            return timeline.withLock {
                $0.record(reading, at: t, includeProcess: false)
                return ($0.summary(zones: zones), $0.samples)
            }
        }
    }
}

/// The memory monitor's timeline and its summary, from readings taken wherever the workload runs
/// (this machine's monitor thread, or a guest's agent): the same samples and metric names in both.
public struct MonitorTimeline: Sendable {
    public let order: Int
    public let intervalMillis: Int
    public let before: MonitorReading
    public private(set) var samples: [TimelineSample] = []

    /// Starts with the reading taken before the workload (at t = 0).
    public init(before: MonitorReading, order: Int, intervalMillis: Int) {
        self.before = before
        self.order = order
        self.intervalMillis = intervalMillis
        record(before, at: 0, includeProcess: false)
    }

    var fmfiName: String { "fmfi.order\(order)" }

    /// Adds one reading; `includeProcess` while the workload runs (its AnonHugePages).
    public mutating func record(_ r: MonitorReading, at t: Int64, includeProcess: Bool) {
        if let v = r.fmfi { samples.append(TimelineSample(tMillis: t, name: fmfiName, value: v)) }
        if let v = r.memFreeBytes { samples.append(TimelineSample(tMillis: t, name: "mem_free_bytes", value: v)) }
        if includeProcess, let v = r.anonHugeBytes {
            samples.append(TimelineSample(tMillis: t, name: "anon_huge_bytes", value: v))
        }
        for (name, value) in r.vmstat.sorted(by: { $0.key < $1.key }) {
            if let b = before.vmstat[name] {
                samples.append(TimelineSample(tMillis: t, name: "vmstat.\(name)", value: Double(value - b)))
            }
        }
    }

    /// Before/after/min/max of FMFI and MemFree, and the workload's AnonHugePages max/min.
    /// `zones` names what the FMFI covers.
    public func summary(zones: String, source: String = "monitor") -> [Metric] {
        var metrics: [Metric] = []
        let interval = intervalMillis
        metrics += summary(
            name: fmfiName, metric: "monitor.fmfi\(order)", unit: "ratio",
            what: "FMFI at order \(order) over \(zones) (/proc/buddyinfo)", source: source)
        metrics += summary(name: "mem_free_bytes", metric: "monitor.mem_free", unit: "bytes", what: "MemFree", source: source)
        let huge = samples.filter { $0.name == "anon_huge_bytes" }
        if let max = huge.map(\.value).max(), let min = huge.map(\.value).min() {
            let what =
                "the workload's AnonHugePages (/proc/PID/smaps_rollup) sampled every \(interval) ms (\(huge.count) samples)"
            metrics.append(
                Metric(
                    name: "anon_huge_bytes_max", value: max, unit: "bytes", polarity: .neutral, source: source,
                    detail: "max of " + what))
            metrics.append(
                Metric(
                    name: "monitor.anon_huge.min", value: min, unit: "bytes", polarity: .neutral, source: source,
                    detail: "min of " + what))
        } else {
            // The same names whatever the run's length.
            for name in ["anon_huge_bytes_max", "monitor.anon_huge.min"] {
                metrics.append(
                    .unavailable(
                        name, unit: "bytes", polarity: .neutral, source: source,
                        reason: "unavailable: the process ended before the first sample (\(interval) ms)"))
            }
        }
        return metrics
    }

    func summary(name: String, metric: String, unit: String, what: String, source: String) -> [Metric] {
        let series = samples.filter { $0.name == name }.sorted { $0.tMillis < $1.tMillis }
        guard let first = series.first, let last = series.last else {
            return [
                .unavailable(
                    metric + ".before", unit: unit, polarity: .neutral, source: source,
                    reason: "unavailable: cannot read \(what)")
            ]
        }
        let values = series.map(\.value)
        let detail = "\(what), \(series.count) samples every \(intervalMillis) ms"
        return [
            Metric(
                name: metric + ".before", value: first.value, unit: unit, polarity: .neutral, source: source,
                detail: "before the workload: " + detail),
            Metric(
                name: metric + ".after", value: last.value, unit: unit, polarity: .neutral, source: source,
                detail: "after the workload exited: " + detail),
            Metric(name: metric + ".min", value: values.min()!, unit: unit, polarity: .neutral, source: source, detail: detail),
            Metric(name: metric + ".max", value: values.max()!, unit: unit, polarity: .neutral, source: source, detail: detail),
        ]
    }
}

/// The collectors a run attaches, from the experiment's `collectors:` settings.
public enum StandardCollectors {
    public static func make(_ settings: CollectorSettings = CollectorSettings()) -> [any RunCollector] {
        var list: [any RunCollector] = [
            UsageCollector(), VmstatCollector(), PerfCollector(settings: settings.perf),
            AlignmentCollector(intervalMillis: settings.alignment?.intervalMillis),
        ]
        // `monitor.interval: off` turns every sampler off (no timeline, no anon_huge_bytes_max).
        if let interval = settings.monitor.intervalMillis {
            list.append(MemoryMonitor(intervalMillis: interval, order: settings.monitor.order))
        }
        return list
    }
}
