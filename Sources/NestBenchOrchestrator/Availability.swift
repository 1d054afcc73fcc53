import NestBenchModel
import NestBenchWorkloads

/// Whether the cells of an experiment can run here, checked before any configuration is applied:
/// a workload whose suite, binary or input is missing cannot run in any cell.
public struct Availability: Sendable {
    /// Workload label → why it cannot run here (a colocated group: its first missing member).
    public var unavailable: [(workload: String, reason: String)]
    /// Workload labels that can run.
    public var runnable: [String]

    public init(_ experiment: Experiment, registry: WorkloadRegistry) {
        var unavailable: [(String, String)] = []
        var runnable: [String] = []
        for workload in experiment.workloads {
            var reason: String?
            for member in workload.colocated ?? [workload] {
                guard let adapter = registry.adapter(for: member.suite) else {
                    reason = "no adapter for suite \(member.suite)"
                    break
                }
                if let why = adapter.unavailableReason(for: member) {
                    reason = workload.colocated == nil ? why : "\(member.label): \(why)"
                    break
                }
            }
            if let reason { unavailable.append((workload.label, reason)) } else { runnable.append(workload.label) }
        }
        self.unavailable = unavailable
        self.runnable = runnable
    }

    /// Nothing can run: every workload is unavailable.
    public var nothingRuns: Bool { runnable.isEmpty && !unavailable.isEmpty }

    /// One line per unavailable workload.
    public var lines: [String] { unavailable.map { "workload \($0.workload) cannot run here: \($0.reason)" } }
}
