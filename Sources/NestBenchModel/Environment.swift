import Foundation

/// The measurement environment an experiment asks for (`environment:`): the usual noise sources
/// of this machine, each `off`, `on`, a value (the CPU governor) or `leave` (not controlled; the
/// run records its state and `doctor` warns). nil fields take the defaults below.
public struct EnvironmentSettings: Codable, Sendable, Hashable {
    /// Address-space layout randomization (`kernel.randomize_va_space`); default `off`.
    public var aslr: String?
    /// Automatic NUMA balancing (`kernel.numa_balancing`); default `off`.
    public var numaBalancing: String?
    /// Kernel same-page merging (`/sys/kernel/mm/ksm/run`); default `leave` (seed scenarios vary
    /// it; an experiment sets it here or with a `sysfs:` knob).
    public var ksm: String?
    /// cpufreq scaling governor of every CPU; default `performance` (where cpufreq exists).
    public var governor: String?
    /// Frequency boost/turbo; default `off` (where the machine has a boost knob).
    public var boost: String?
    /// What an oops/BUG/WARNING/OOM kill/hung task/KVM error in the kernel log during a run does:
    /// `mark` the run (default) or `fail` it.
    public var kernelLog: String?

    public init(
        aslr: String? = nil, numaBalancing: String? = nil, ksm: String? = nil, governor: String? = nil,
        boost: String? = nil, kernelLog: String? = nil
    ) {
        self.aslr = aslr
        self.numaBalancing = numaBalancing
        self.ksm = ksm
        self.governor = governor
        self.boost = boost
        self.kernelLog = kernelLog
    }

    enum CodingKeys: String, CodingKey {
        case aslr
        case numaBalancing = "numa_balancing"
        case ksm, governor, boost
        case kernelLog = "kernel_log"
    }

    /// The named settings with their effective values (defaults applied).
    public var effective: [(name: String, value: String)] {
        [
            ("aslr", aslr ?? "off"), ("numa_balancing", numaBalancing ?? "off"), ("ksm", ksm ?? "leave"),
            ("governor", governor ?? "performance"), ("boost", boost ?? "off"),
        ]
    }

    /// Whether the experiment file itself chose the setting (not the default).
    public func isExplicit(_ name: String) -> Bool {
        switch name {
        case "aslr": return aslr != nil
        case "numa_balancing": return numaBalancing != nil
        case "ksm": return ksm != nil
        case "governor": return governor != nil
        case "boost": return boost != nil
        default: return false
        }
    }

    /// `fail`: a kernel-log finding fails the run; else it marks it.
    public var kernelLogFails: Bool { kernelLog == "fail" }

    public static let names = ["aslr", "numa_balancing", "ksm", "governor", "boost", "kernel_log"]
}

/// Published values to draw beside ours, with where they come from.
public struct ReferenceSet: Codable, Sendable, Hashable {
    /// Where the values come from (paper, section, table).
    public var source: String
    public var values: [ReferenceValue]

    public init(source: String, values: [ReferenceValue]) {
        self.source = source
        self.values = values
    }
}

/// One published ratio to the baseline: e.g. xGemini's throughput +16.5% without fragmentation
/// is `{figure: fig11, configuration: xgemini, condition: clean, ratio: 1.165}`.
public struct ReferenceValue: Codable, Sendable, Hashable {
    /// The report figure it belongs beside (`fig11` … `fig16`, `fig13-mean`, `fig13-p99`).
    public var figure: String
    public var configuration: String
    /// nil: every condition.
    public var condition: String?
    /// The published value as a ratio to the baseline (1.165 for +16.5%).
    public var ratio: Double
    /// What the value is, in the source's words ("throughput +16.5%").
    public var label: String?

    public init(figure: String, configuration: String, condition: String? = nil, ratio: Double, label: String? = nil) {
        self.figure = figure
        self.configuration = configuration
        self.condition = condition
        self.ratio = ratio
        self.label = label
    }
}
