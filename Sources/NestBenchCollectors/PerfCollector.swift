import Foundation
import NestBenchModel
import NestBenchProcess

/// The counters a run opens, decided once per experiment: what can be counted here, and for
/// everything else the reason it cannot.
public struct PerfPlan: Sendable {
    public struct Entry: Sendable, Hashable {
        public var request: CounterRequest
        public var unit: String
        public var polarity: Polarity
        public var proxyFor: String?
    }

    public var scope: PerfScope
    public var entries: [Entry]
    /// Metrics that cannot be measured here, with the reason (e.g. "unavailable: no PMU (…)").
    public var unavailable: [Metric]
    /// The TLB event set in use, if any.
    public var eventSet: TLBEventSet?
    /// Counter events per group (≤ the PMU's generic counters).
    public var groupSize: Int
    /// Metrics summed into `tlb_misses`.
    public var walkMetrics: [String]

    public var requests: [CounterRequest] { entries.map(\.request) }
}

/// Builds `PerfPlan`s from the experiment's `collectors.perf` settings and this machine.
public enum PerfPlanner {
    /// Kernel software events and a tracepoint, labeled with what they stand in for where they do
    /// (task-clock for cycles). Page faults are page faults: they stand in for nothing (a fault is
    /// not a TLB miss), so they carry no `proxyFor`.
    public static let proxies: [(metric: String, event: String, unit: String, proxyFor: String?)] = [
        ("perf.page_faults", "perf::PERF_COUNT_SW_PAGE_FAULTS", "faults", nil),
        ("perf.minor_faults", "perf::PERF_COUNT_SW_PAGE_FAULTS_MIN", "faults", nil),
        ("perf.task_clock", "perf::PERF_COUNT_SW_TASK_CLOCK", "ns", "cycles"),
    ]
    public static let tracepointProxy = (metric: "perf.tlb_flush", tracepoint: "tlb:tlb_flush", proxyFor: "tlb_misses")

    public static func plan(
        _ settings: PerfSettings, hardware: PMUProbe.Status = PMUProbe.hardware(), cpu: CPUIdentity = .local(),
        tracepoint: (String) throws -> EncodedEvent = Tracepoint.encode
    ) -> PerfPlan {
        let scope = PerfScope(rawValue: settings.scope) ?? .host
        var entries: [PerfPlan.Entry] = []
        var unavailable: [Metric] = []
        var eventSet: TLBEventSet?
        let pmu = try? Perfmon.corePMU()

        func add(metric: String, event: String, polarity: Polarity, counterReason: String?) {
            do {
                let encoded = try Perfmon.encode(event, scope: scope)
                if encoded.usesCounter, let counterReason {
                    unavailable.append(
                        .unavailable(metric, unit: "events", polarity: polarity, source: "perf", reason: counterReason))
                } else {
                    entries.append(
                        PerfPlan.Entry(
                            request: CounterRequest(metric: metric, event: encoded, scope: scope), unit: "events",
                            polarity: polarity))
                }
            } catch {
                unavailable.append(
                    .unavailable(
                        metric, unit: "events", polarity: polarity, source: "perf", reason: counterReason ?? error.reasonText))
            }
        }

        var hardwareReason: String?
        if case .unavailable(let reason) = hardware { hardwareReason = reason }

        var defaults: [(String, String, Polarity)] = []
        if settings.defaultEvents {
            switch TLBEventSets.select(corePMU: pmu, cpu: cpu) {
            case .success(let set):
                eventSet = set
                defaults = set.events.map { ($0.metric, set.qualified($0), $0.polarity) }
            case .failure(let failure):
                let reason = hardwareReason ?? "unavailable: \(failure.reason)"
                for name in TLBEventSets.headlineMetrics where name != "tlb_misses" {
                    unavailable.append(
                        .unavailable(
                            name, unit: "events", polarity: name == "instructions" ? .neutral : .lowerIsBetter, source: "perf",
                            reason: hardwareReason == nil ? reason : "\(reason); \(failure.reason)"))
                }
            }
        }
        var seen: Set<String> = []
        for (metric, event) in settings.events.sorted(by: { $0.key < $1.key }) {
            seen.insert(metric)
            add(metric: metric, event: event, polarity: .lowerIsBetter, counterReason: hardwareReason)
        }
        for (metric, event, polarity) in defaults where !seen.contains(metric) {
            add(metric: metric, event: event, polarity: polarity, counterReason: hardwareReason)
        }
        let walkMetrics = (eventSet?.walkMetrics ?? []).filter { w in entries.contains { $0.request.metric == w } }
        if settings.defaultEvents, walkMetrics.isEmpty {
            let why =
                unavailable.first { TLBEventSets.walkMetricNames.contains($0.name) }?.unavailable
                ?? unavailable.first?.unavailable ?? "unavailable: no page-walk events"
            unavailable.insert(
                .unavailable("tlb_misses", unit: "events", polarity: .lowerIsBetter, source: "perf", reason: why), at: 0)
        }

        if settings.proxies {
            for p in proxies {
                do {
                    let encoded = try Perfmon.encode(p.event, scope: .host)
                    entries.append(
                        PerfPlan.Entry(
                            request: CounterRequest(metric: p.metric, event: encoded, scope: scope), unit: p.unit,
                            polarity: .lowerIsBetter, proxyFor: p.proxyFor))
                } catch {
                    unavailable.append(
                        Metric(
                            name: p.metric, value: nil, unit: p.unit, polarity: .lowerIsBetter, source: "perf",
                            unavailable: error.reasonText, proxyFor: p.proxyFor))
                }
            }
            do {
                let encoded = try tracepoint(tracepointProxy.tracepoint)
                entries.append(
                    PerfPlan.Entry(
                        request: CounterRequest(metric: tracepointProxy.metric, event: encoded, scope: scope), unit: "events",
                        polarity: .lowerIsBetter, proxyFor: tracepointProxy.proxyFor))
            } catch {
                unavailable.append(
                    Metric(
                        name: tracepointProxy.metric, value: nil, unit: "events", polarity: .lowerIsBetter, source: "perf",
                        unavailable: "unavailable: \(error)", proxyFor: tracepointProxy.proxyFor))
            }
        }
        return PerfPlan(
            scope: scope, entries: entries, unavailable: unavailable, eventSet: eventSet,
            groupSize: groupSize(pmu: pmu, cpu: cpu), walkMetrics: walkMetrics)
    }

    /// The PMU's generic counters, one fewer on Intel while the NMI watchdog holds one.
    static func groupSize(pmu: PMUDescription?, cpu: CPUIdentity) -> Int {
        guard let pmu, pmu.counters > 0 else { return 4 }
        let watchdog = KernelFile.read("/proc/sys/kernel/nmi_watchdog")?.trimmed == "1"
        return max(1, pmu.counters - (watchdog && cpu.vendor == "GenuineIntel" ? 1 : 0))
    }

    /// Metrics from a finished counter set: scaled values with scope and encoded event in
    /// `detail`; "not counted" where a counter never ran; `tlb_misses` as the sum of the walks.
    public static func metrics(_ plan: PerfPlan, counters: CounterSet) -> [Metric] {
        let readings = counters.read()
        var metrics = plan.unavailable
        var values: [String: Double] = [:]
        for (entry, reading) in zip(plan.entries, readings) {
            let r = entry.request
            let base = "scope=\(r.scope.rawValue); target=\(counters.target); \(r.event.provenance)"
            var metric = Metric(
                name: r.metric, value: nil, unit: entry.unit, polarity: entry.polarity, source: "perf",
                proxyFor: entry.proxyFor, detail: base)
            if let failure = counters.failures[r.metric] {
                metric.unavailable = failure.reasonText
            } else if let reading {
                if let scaled = reading.scaled {
                    metric.value = scaled
                    values[r.metric] = scaled
                    metric.detail =
                        base
                        + "; time_enabled=\(reading.timeEnabled)ns; time_running=\(reading.timeRunning)ns; raw=\(reading.raw)"
                        + (reading.timeRunning < reading.timeEnabled
                            ? String(
                                format: "; scaled ×%.3f (multiplexed)", Double(reading.timeEnabled) / Double(reading.timeRunning))
                            : "")
                } else {
                    metric.unavailable = "unavailable: not counted (time_running = 0: the counter was never scheduled)"
                }
            } else {
                metric.unavailable = "unavailable: the counter could not be read"
            }
            metrics.append(metric)
        }
        if !plan.walkMetrics.isEmpty {
            let parts = plan.walkMetrics.compactMap { values[$0] }
            if parts.count == plan.walkMetrics.count {
                metrics.append(
                    Metric(
                        name: "tlb_misses", value: parts.reduce(0, +), unit: "events", polarity: .lowerIsBetter, source: "perf",
                        detail: "sum of \(plan.walkMetrics.joined(separator: " + ")) (completed page walks)"))
            } else {
                metrics.append(
                    .unavailable(
                        "tlb_misses", unit: "events", polarity: .lowerIsBetter, source: "perf",
                        reason: "unavailable: not all of \(plan.walkMetrics.joined(separator: ", ")) were counted"))
            }
        }
        return metrics
    }
}

/// Counts the workload as perf stat does: counters opened on the gated child with disabled +
/// enable_on_exec + inherit, read after it exits, scaled for multiplexing.
public final class PerfCollector: RunCollector {
    public let plan: PerfPlan

    public init(plan: PerfPlan) {
        self.plan = plan
    }

    public convenience init(settings: PerfSettings = PerfSettings()) {
        self.init(plan: PerfPlanner.plan(settings))
    }

    public func attach(pid: Int32) -> any CollectorSession {
        Session(
            plan: plan,
            counters: CounterSet(requests: plan.requests, target: .process(pid), groupSize: plan.groupSize, enableOnExec: true))
    }

    final class Session: CollectorSession {
        let plan: PerfPlan
        let counters: CounterSet

        init(plan: PerfPlan, counters: CounterSet) {
            self.plan = plan
            self.counters = counters
        }

        func started() {}

        func finish(_ outcome: ProcessOutcome) -> (metrics: [Metric], samples: [TimelineSample]) {
            let metrics = PerfPlanner.metrics(plan, counters: counters)
            counters.closeAll()
            return (metrics, [])
        }
    }
}
