/// A problem with a workload entry, relative to the entry (`key` like `name` or `params.size`).
public struct WorkloadProblem: Sendable, Hashable {
    public var key: String
    public var message: String

    public init(key: String, message: String) {
        self.key = key
        self.message = message
    }
}

/// What workloads exist and which parameters they take; implemented by the workloads module
/// so that experiment validation can name unknown suites, apps and parameters.
public protocol WorkloadCatalog: Sendable {
    func problems(for spec: WorkloadSpec) -> [WorkloadProblem]
}

/// What the workloads and collectors declare about their metrics; implemented by the workloads
/// module, so that a loaded experiment carries the declarations the analysis reads.
public protocol MetricDeclaring: Sendable {
    /// The experiment with every workload's and the collectors' declarations filled in where missing.
    func declaring(_ experiment: Experiment) -> Experiment
}
