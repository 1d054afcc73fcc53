/// An experiment: the matrix configurations × workloads × conditions × repetitions,
/// with the configuration every other one is compared against.
public struct Experiment: Codable, Sendable, Hashable {
    public var name: String
    public var description: String?
    /// Name of the configuration the others are normalized against.
    public var baseline: String
    /// Seed of the randomized interleaved order; `nil` means "draw one and record it".
    public var seed: UInt64?
    public var configurations: [Configuration]
    public var workloads: [WorkloadSpec]
    public var conditions: [Condition]
    public var repetitions: RepetitionPolicy
    public var analysis: AnalysisSettings
    /// What the collectors measure; nil = the defaults (`CollectorSettings()`).
    public var collectors: CollectorSettings?
    /// Published values to draw beside ours (e.g. the xGemini paper's §5 headlines); nil = none.
    public var reference: ReferenceSet? = nil
    /// Noise sources this machine is put into for the run (ASLR, NUMA balancing, KSM, governor,
    /// boost); nil = the defaults (`EnvironmentSettings()`).
    public var environment: EnvironmentSettings? = nil
    /// What the collectors' metrics are (perf, usage, vmstat, monitor, fragmenter …), resolved when
    /// the experiment is loaded and stored with it; nil in experiments stored before declarations.
    public var collectorMetrics: [MetricDeclaration]?

    public init(
        name: String, description: String? = nil, baseline: String, seed: UInt64? = nil,
        configurations: [Configuration], workloads: [WorkloadSpec],
        conditions: [Condition] = [Condition(name: "clean")],
        repetitions: RepetitionPolicy = RepetitionPolicy(),
        analysis: AnalysisSettings = AnalysisSettings(), collectors: CollectorSettings? = nil
    ) {
        self.name = name
        self.description = description
        self.baseline = baseline
        self.seed = seed
        self.configurations = configurations
        self.workloads = workloads
        self.conditions = conditions
        self.repetitions = repetitions
        self.analysis = analysis
        self.collectors = collectors
    }

    public func configuration(named name: String) -> Configuration? {
        configurations.first { $0.name == name }
    }

    public func workload(labeled label: String) -> WorkloadSpec? {
        workloads.first { $0.label == label }
    }

    public func condition(named name: String) -> Condition? {
        conditions.first { $0.name == name }
    }
}

/// Where a configuration runs.
public enum PlatformKind: String, Codable, Sendable, Hashable, CaseIterable {
    /// This machine, natively: the host layer only.
    case local
    /// A stack of QEMU/KVM virtual machines: L0 host hypervisor, L1 guest (hypervisor), L2 guest.
    case qemu
}

/// A named configuration: a platform and the settings of each of its layers.
public struct Configuration: Codable, Sendable, Hashable {
    public var name: String
    public var platform: PlatformKind
    /// The host layer (L0). For `local` it is the only layer. For `qemu` it is this machine's own
    /// knobs (e.g. `vm.nr_hugepages` for hugetlb-backed guests); the stack's L0 is `layers[0]`.
    public var host: LayerSettings
    /// `qemu`: the stack, outermost first: L0 (host hypervisor), L1, L2 …; empty for `local`.
    public var layers: [VMLayer]
    public var description: String?

    public init(
        name: String, platform: PlatformKind = .local, host: LayerSettings = LayerSettings(), layers: [VMLayer] = [],
        description: String? = nil
    ) {
        self.name = name
        self.platform = platform
        self.host = host
        self.layers = layers
        self.description = description
    }

    /// The configuration as this machine's local platform applies it. For a `qemu` stack whose
    /// L0 is this machine (hardware virtualization: no emulated host), L0's settings are this
    /// machine's knobs, on top of `host:` (L0's value wins where both set a knob); otherwise
    /// the configuration itself.
    public func thisMachine(l0IsThisMachine: Bool) -> Configuration {
        guard platform == .qemu, l0IsThisMachine, let l0 = layers.first else { return self }
        var copy = self
        copy.host = host.overridden(by: l0.settings)
        return copy
    }

    /// The stack for `n` colocated workloads: its innermost layer as `n` guests that share its
    /// vCPUs, memory and pinning evenly (the paper: one L2 of 32 vCPUs/100 GB, or two of
    /// 16/50 GB); itself when that layer already has `n` instances; nil for another number of
    /// instances or a configuration that is not a stack. The copy's name keys its own stack.
    public func colocating(_ n: Int) -> Configuration? {
        guard platform == .qemu, layers.count >= 2, var last = layers.last else { return nil }
        if last.instances == n { return self }
        guard last.instances == 1, n >= 2 else { return nil }
        let each = max(1, last.vcpus / n)
        if !last.pinning.isEmpty {
            // Guest k's vCPU j runs where vCPU k·each + j of the single guest ran.
            let pins = last.pinning
            last.instancePinning = (0..<n).map { k in (0..<each).map { j in pins[(k * each + j) % pins.count] } }
        }
        last.vcpus = each
        last.pinning = last.instancePinning?.first ?? []
        last.memoryBytes = (last.memoryBytes / UInt64(n)) & ~((1 << 20) - 1)
        last.instances = n
        var copy = self
        copy.layers[copy.layers.count - 1] = last
        copy.name = "\(name)-\(n)guests"
        return copy
    }

    enum CodingKeys: String, CodingKey { case name, platform, host, layers, description }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        platform = try c.decode(PlatformKind.self, forKey: .platform)
        host = try c.decode(LayerSettings.self, forKey: .host)
        layers = try c.decodeIfPresent([VMLayer].self, forKey: .layers) ?? []
        description = try c.decodeIfPresent(String.self, forKey: .description)
    }
}

/// Memory-management settings of one layer (host or guest kernel).
public struct LayerSettings: Codable, Sendable, Hashable {
    public var thp: THPSettings
    public var khugepaged: KhugepagedSettings
    /// `vm.compaction_proactiveness: 0` style sysctls (dotted names under /proc/sys).
    public var sysctl: [String: String]
    /// Arbitrary sysfs/procfs writes, absolute path → value (e.g. a Gemini kernel's own knobs).
    public var sysfs: [String: String]

    public init(
        thp: THPSettings = THPSettings(), khugepaged: KhugepagedSettings = KhugepagedSettings(),
        sysctl: [String: String] = [:], sysfs: [String: String] = [:]
    ) {
        self.thp = thp
        self.khugepaged = khugepaged
        self.sysctl = sysctl
        self.sysfs = sysfs
    }

    /// These settings with every knob `other` sets taking `other`'s value.
    public func overridden(by other: LayerSettings) -> LayerSettings {
        var merged = self
        merged.thp.enabled = other.thp.enabled ?? thp.enabled
        merged.thp.defrag = other.thp.defrag ?? thp.defrag
        merged.thp.shmemEnabled = other.thp.shmemEnabled ?? thp.shmemEnabled
        merged.khugepaged.settings.merge(other.khugepaged.settings) { _, new in new }
        merged.sysctl.merge(other.sysctl) { _, new in new }
        merged.sysfs.merge(other.sysfs) { _, new in new }
        return merged
    }

    /// Every knob this layer sets, as absolute paths, in a stable order.
    public var knobs: [Knob] {
        var result: [Knob] = []
        let thpRoot = "/sys/kernel/mm/transparent_hugepage"
        if let v = thp.enabled { result.append(Knob(path: "\(thpRoot)/enabled", value: v)) }
        if let v = thp.defrag { result.append(Knob(path: "\(thpRoot)/defrag", value: v)) }
        if let v = thp.shmemEnabled { result.append(Knob(path: "\(thpRoot)/shmem_enabled", value: v)) }
        for (name, value) in khugepaged.values {
            result.append(Knob(path: "\(thpRoot)/khugepaged/\(name)", value: String(value)))
        }
        for (name, value) in sysctl.sorted(by: { $0.key < $1.key }) {
            result.append(Knob(path: "/proc/sys/" + name.replacingOccurrences(of: ".", with: "/"), value: value))
        }
        for (path, value) in sysfs.sorted(by: { $0.key < $1.key }) {
            result.append(Knob(path: path, value: value))
        }
        return result
    }
}

/// `/sys/kernel/mm/transparent_hugepage/{enabled,defrag,shmem_enabled}`.
public struct THPSettings: Codable, Sendable, Hashable {
    public static let enabledValues = ["always", "madvise", "never"]
    public static let defragValues = ["always", "defer", "defer+madvise", "madvise", "never"]
    public static let shmemValues = ["always", "within_size", "advise", "never", "deny", "force"]

    public var enabled: String?
    public var defrag: String?
    public var shmemEnabled: String?

    public init(enabled: String? = nil, defrag: String? = nil, shmemEnabled: String? = nil) {
        self.enabled = enabled
        self.defrag = defrag
        self.shmemEnabled = shmemEnabled
    }
}

/// `/sys/kernel/mm/transparent_hugepage/khugepaged/*`.
public struct KhugepagedSettings: Codable, Sendable, Hashable {
    public static let names = [
        "defrag", "pages_to_scan", "scan_sleep_millisecs", "alloc_sleep_millisecs",
        "max_ptes_none", "max_ptes_swap", "max_ptes_shared",
    ]
    /// Knob name (as in sysfs) → value, only the ones the experiment sets.
    public var values: [(String, Int)] {
        Self.names.compactMap { name in settings[name].map { (name, $0) } }
    }
    public var settings: [String: Int]

    public init(settings: [String: Int] = [:]) {
        self.settings = settings
    }
}

/// One write to a kernel file.
public struct Knob: Codable, Sendable, Hashable {
    public var path: String
    public var value: String

    public init(path: String, value: String) {
        self.path = path
        self.value = value
    }
}

/// A workload of the matrix: which program, with which parameters, pinned where.
public struct WorkloadSpec: Codable, Sendable, Hashable {
    /// Unique label in the experiment (defaults to `name`).
    public var label: String
    /// The suite: `micro` (built-in, Harness/), later `tailbench`, `parsec`.
    public var suite: String
    /// The app within the suite.
    public var name: String
    public var params: [String: String]
    /// CPUs the workload's threads are pinned to; empty means unpinned.
    public var cpus: [Int]
    /// Wall-clock limit of one run; the whole process group is killed after it.
    public var timeoutSeconds: Double
    public var environment: [String: String]
    /// A colocated group (suite `colocated`): these workloads start together, each in its own
    /// innermost guest of the stack (Fig. 14 of the paper); nil for a single workload.
    public var colocated: [WorkloadSpec]?
    /// What the workload's own metrics are (from its adapter or suite file), resolved when the
    /// experiment is loaded and stored with it; nil in experiments stored before declarations.
    public var metrics: [MetricDeclaration]?

    public init(
        label: String? = nil, suite: String, name: String, params: [String: String] = [:],
        cpus: [Int] = [], timeoutSeconds: Double = 600, environment: [String: String] = [:]
    ) {
        self.label = label ?? name
        self.suite = suite
        self.name = name
        self.params = params
        self.cpus = cpus
        self.timeoutSeconds = timeoutSeconds
        self.environment = environment
    }
}

/// A condition every (configuration, workload) runs under, e.g. clean vs fragmented.
public struct Condition: Codable, Sendable, Hashable {
    public var name: String
    public var fragmentation: FragmentationSpec?
    /// Memory held in a layer during the run (host memory pressure), see `MemoryPressureSpec`.
    public var memoryPressure: MemoryPressureSpec?
    /// The guest the workload runs in is saved and restored while it runs (time-to-responsiveness).
    public var saveRestore: SaveRestoreSpec?
    /// Before each run: sync, drop the page cache and compact all memory (needs root), so every
    /// run starts from the same unfragmented state. Default: on for fragmented conditions.
    public var compact: Bool

    public init(name: String, fragmentation: FragmentationSpec? = nil, compact: Bool? = nil) {
        self.name = name
        self.fragmentation = fragmentation
        self.compact = compact ?? (fragmentation != nil)
    }
}

/// Save and restore (working-set restore, TTR): `atSeconds` after the workload starts, the guest
/// layer `layer` is saved to an image file and restored from it (eagerly: the whole image is
/// loaded before it runs again) while the workload keeps running inside. The workload must
/// report its progress per interval (the micro with `params.progress`); TTR is the time from the
/// restore's start until its rate stays within `tolerance` of the rate before the save.
public struct SaveRestoreSpec: Codable, Sendable, Hashable {
    public enum Mode: String, Codable, Sendable, Hashable, CaseIterable {
        /// Saved to an image file, then restored from it: the guest runs again once the whole
        /// image is loaded.
        case eager
        /// Moved to a new QEMU by postcopy migration from the live one: the guest runs again at
        /// once, its pages coming over on demand (userfaultfd) and in the background.
        case lazy
    }
    /// The guest layer saved (`detachable: true`, its QEMU on this machine).
    public var layer: String
    public var mode: Mode = .eager
    /// Seconds after the workload's start.
    public var atSeconds: Double
    /// Fraction below the rate before the save that still counts as responsive.
    public var tolerance: Double

    public init(layer: String, atSeconds: Double, tolerance: Double = 0.10, mode: Mode = .eager) {
        self.layer = layer
        self.mode = mode
        self.atSeconds = atSeconds
        self.tolerance = tolerance
    }
}

/// Memory pressure: before the workload starts, `nb-hold` allocates anonymous memory in the
/// layer until its MemAvailable is at most `availableBytes`, and holds it until the run ends (the
/// memory-overcommit scenarios: THP vs KSM under host pressure).
public struct MemoryPressureSpec: Codable, Sendable, Hashable {
    public enum Method: String, Codable, Sendable, Hashable, CaseIterable {
        /// `nb-hold` allocates in the layer (any place).
        case hold
        /// The layer's virtio balloon is inflated over QMP (a guest layer with `balloon: true`
        /// whose QEMU runs on this machine), and deflated to full after the run.
        case balloon
    }
    public var method: Method = .hold
    /// MemAvailable to leave in the layer, in bytes.
    public var availableBytes: UInt64
    /// Allocation step (the last step takes only what is left above the target).
    public var stepBytes: UInt64
    /// How long reaching the target may take.
    public var timeoutSeconds: Double
    /// The layer to pressure in a `qemu` stack (`host`, `L0`, `L1`, …); nil = where the workload runs.
    public var layer: String?

    public init(availableBytes: UInt64, stepBytes: UInt64 = 16 << 20, timeoutSeconds: Double = 600, layer: String? = nil) {
        self.availableBytes = availableBytes
        self.stepBytes = stepBytes
        self.timeoutSeconds = timeoutSeconds
        self.layer = layer
    }
}

/// Memory fragmentation to inject before a run (see METHOD.md, "Fragmenting memory").
public struct FragmentationSpec: Codable, Sendable, Hashable {
    public enum Method: String, Codable, Sendable, Hashable, CaseIterable {
        case anonHoles = "anon-holes"
        case pageCache = "page-cache"
    }
    public var method: Method
    public var targetFMFI: Double
    public var order: Int
    /// Memory the fragmenter never takes while populating (its OOM margin), in bytes.
    public var slackBytes: UInt64
    /// Memory to leave free for the workload, in bytes; the rest stays held. nil: give back all
    /// that is not needed to keep the index.
    public var freeBytes: UInt64?
    /// Hold the fragmentation while the workload runs (false: fragment, release, then run).
    public var hold: Bool
    /// mlock the pages that keep memory fragmented, so compaction cannot migrate them
    /// (with vm.compact_unevictable_allowed=0).
    public var mlock: Bool
    /// A run whose FMFI leaves target ± tolerance is flagged in the report.
    public var tolerance: Double
    /// Sysctls pinned for the run (restored afterwards); default: compaction pinned off.
    public var sysctl: [String: String]
    /// How long reaching the target may take.
    public var timeoutSeconds: Double
    /// Whose memory is fragmented in a `qemu` stack: a layer name (`L0`, `L1`, `L2`) or `host`
    /// (this machine); nil = the layer the workload runs in. A `local` configuration has only
    /// the host.
    public var layer: String?

    /// vm.compaction_proactiveness=0 and vm.compact_unevictable_allowed=0: neither proactive
    /// compaction nor compaction of mlocked pages undoes the holes during the run.
    public static let pinnedCompaction = ["vm.compaction_proactiveness": "0", "vm.compact_unevictable_allowed": "0"]

    public init(
        method: Method = .anonHoles, targetFMFI: Double, order: Int = 9,
        slackBytes: UInt64 = 1 << 30, freeBytes: UInt64? = nil, hold: Bool = true, mlock: Bool = true, tolerance: Double = 0.05,
        sysctl: [String: String] = FragmentationSpec.pinnedCompaction, timeoutSeconds: Double = 300, layer: String? = nil
    ) {
        self.layer = layer
        self.method = method
        self.targetFMFI = targetFMFI
        self.order = order
        self.slackBytes = slackBytes
        self.freeBytes = freeBytes
        self.hold = hold
        self.mlock = mlock
        self.tolerance = tolerance
        self.sysctl = sysctl
        self.timeoutSeconds = timeoutSeconds
    }

    /// The sysctls as knobs.
    public var knobs: [Knob] {
        sysctl.sorted { $0.key < $1.key }.map {
            Knob(path: "/proc/sys/" + $0.key.replacingOccurrences(of: ".", with: "/"), value: $0.value)
        }
    }
}

/// How many repetitions of each cell to run.
public struct RepetitionPolicy: Codable, Sendable, Hashable {
    public var min: Int
    public var max: Int
    /// Stop adding repetitions to a cell once its ratio CI half-width, relative to the ratio,
    /// is below this (e.g. 0.02 = ±2%).
    public var targetRelativeCI: Double
    /// VM boots per configuration of a `qemu` stack (`repetitions.boots`); nil = the default
    /// (`defaultStackBoots`). Local configurations have no boot to repeat.
    public var boots: Int? = nil

    /// Boots per stack configuration when the file does not say: two, so boot-to-boot variance
    /// is in the CI (the hierarchical bootstrap needs two boots per side).
    public static let defaultStackBoots = 2

    /// Boots a stack configuration gets: the file's value, else the default, never more than
    /// `min` (each boot holds at least one block).
    public var stackBoots: Int { Swift.max(1, Swift.min(boots ?? Self.defaultStackBoots, min)) }

    /// Which boot (0-based) of its configuration's stack a repetition (1-based) runs in: the
    /// `min` initial blocks are split into `stackBoots` contiguous spans in the interleaved order;
    /// adaptive follow-up blocks run in the last boot.
    public func bootIndex(repetition: Int) -> Int {
        let b = stackBoots
        guard b > 1 else { return 0 }
        return Swift.min(b - 1, Swift.max(0, repetition - 1) * b / Swift.max(min, 1))
    }

    public init(min: Int = 5, max: Int = 10, targetRelativeCI: Double = 0.02) {
        self.min = min
        self.max = max
        self.targetRelativeCI = targetRelativeCI
    }
}

/// How comparisons are judged.
public struct AnalysisSettings: Codable, Sendable, Hashable {
    /// Two-sided significance level.
    public var alpha: Double
    /// A significant change smaller than this relative effect is still reported as `same`.
    public var minEffect: Double
    /// The metric adaptive repetitions and headlines are judged on (nil: each workload's declared primary metric).
    public var primaryMetric: String?
    /// When set, every condition is also compared with this one within each configuration
    /// (e.g. fragmented vs clean).
    public var baselineCondition: String?

    public init(
        alpha: Double = 0.05, minEffect: Double = 0.01, primaryMetric: String? = nil, baselineCondition: String? = nil
    ) {
        self.alpha = alpha
        self.minEffect = minEffect
        self.primaryMetric = primaryMetric
        self.baselineCondition = baselineCondition
    }
}

extension Experiment {
    /// What the loader would reject in an experiment that did not come through it (an import):
    /// the same ranges and references as `ExperimentLoader`, as "key.path: problem".
    public var problems: [String] {
        var problems: [String] = []
        if name.isEmpty { problems.append("name: empty") }
        if configurations.isEmpty { problems.append("configurations: at least one configuration is required") }
        if workloads.isEmpty { problems.append("workloads: at least one workload is required") }
        if configuration(named: baseline) == nil {
            problems.append("baseline: \"\(baseline)\" is not one of the configurations")
        }
        if Set(configurations.map(\.name)).count != configurations.count {
            problems.append("configurations: duplicate names")
        }
        if Set(workloads.map(\.label)).count != workloads.count { problems.append("workloads: duplicate labels") }
        if conditions.isEmpty || Set(conditions.map(\.name)).count != conditions.count {
            problems.append("conditions: none, or duplicate names")
        }
        if !(2...1000).contains(repetitions.min) { problems.append("repetitions.min: \(repetitions.min) is outside 2…1000") }
        if !(2...1000).contains(repetitions.max) { problems.append("repetitions.max: \(repetitions.max) is outside 2…1000") }
        if repetitions.max < repetitions.min {
            problems.append("repetitions.max: \(repetitions.max) is smaller than min (\(repetitions.min))")
        }
        if !(repetitions.targetRelativeCI >= 0.0001 && repetitions.targetRelativeCI <= 1) {
            problems.append("repetitions.target_ci: \(repetitions.targetRelativeCI) is outside 0.0001…1")
        }
        if !(analysis.alpha >= 0.0001 && analysis.alpha <= 0.5) {
            problems.append("analysis.alpha: \(analysis.alpha) is outside 0.0001…0.5")
        }
        if !(analysis.minEffect >= 0 && analysis.minEffect <= 10) {
            problems.append("analysis.min_effect: \(analysis.minEffect) is outside 0…10")
        }
        if let c = analysis.baselineCondition, condition(named: c) == nil {
            problems.append("analysis.baseline_condition: \"\(c)\" is not one of the conditions")
        }
        for (i, w) in workloads.enumerated() {
            for m in w.colocated ?? [w] where m.cpus.contains(where: { $0 < 0 || $0 > CPUList.maxCPU }) {
                problems.append("workloads[\(i)].cpus: CPUs must be 0…\(CPUList.maxCPU)")
            }
        }
        return problems
    }
}
