import Foundation
import NestBenchCollectors
import NestBenchModel

/// Hardware counters for a workload in a stack, counted from this machine on the vCPU threads of
/// the VM it runs (its outermost guest: threads named `CPU n/KVM` or `CPU n/TCG`, QEMU runs with
/// debug-threads=on) with guest-only events (libpfm `:mg`) — the host-side method of NESTED.md,
/// which needs no vPMU at any level. Every guest level runs on those threads, so the page walks of
/// the innermost workload are in the count, together with whatever else the guests did meanwhile
/// (the detail of each metric says so). The metrics are named as for local runs (`tlb_misses`,
/// `tlb.*`, `cycles`, `instructions`); without a PMU each is unavailable with the reason.
public final class GuestCounters: @unchecked Sendable {
    let plan: PerfPlan
    let counters: CounterSet?
    let where_: String

    /// Opens and enables the counters on the outermost guest's vCPU threads.
    public init(stack: QemuStack, settings: PerfSettings) {
        var guest = settings
        guest.scope = PerfScope.guest.rawValue
        guest.proxies = false  // software events on vCPU threads count QEMU's faults, not the guest's
        plan = PerfPlanner.plan(guest)
        let outer = stack.layers.first { $0.parent == nil }
        let threads = outer.map { Self.vcpuThreads(of: $0.qemuPID) } ?? []
        where_ = outer.map { "\($0.name)'s vCPU threads on this machine" } ?? "no VM on this machine"
        if plan.requests.isEmpty || threads.isEmpty {
            counters = nil
        } else {
            let set = CounterSet(
                requests: plan.requests, target: .threads(threads), groupSize: plan.groupSize, enableOnExec: false)
            set.enable()
            counters = set
        }
    }

    /// Stops counting and returns the metrics.
    public func finish() -> [Metric] {
        guard let counters else {
            if plan.requests.isEmpty { return plan.unavailable }
            return plan.unavailable
                + plan.requests.map {
                    .unavailable(
                        $0.metric, unit: "events", polarity: .lowerIsBetter, source: "perf",
                        reason: "unavailable: no vCPU threads found (\(where_))")
                }
        }
        counters.disable()
        let metrics = PerfPlanner.metrics(plan, counters: counters).map { m -> Metric in
            var m = m
            m.detail =
                "counted from this machine on \(where_) with guest-only events (all guest activity during the workload)"
                + (m.detail.map { "; \($0)" } ?? "")
            return m
        }
        counters.closeAll()
        return metrics
    }

    /// The vCPU threads of a QEMU process on this machine, by their thread names.
    public static func vcpuThreads(of pid: Int32, proc: String = "/proc") -> [Int32] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "\(proc)/\(pid)/task")) ?? []
        return tasks.compactMap { Int32($0) }.sorted().filter { tid in
            (try? String(contentsOfFile: "\(proc)/\(pid)/task/\(tid)/comm", encoding: .utf8))?.hasPrefix("CPU ") == true
        }
    }
}
