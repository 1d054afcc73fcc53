import Foundation

/// Which direction of a metric is an improvement.
public enum Polarity: String, Codable, Sendable, Hashable {
    case higherIsBetter = "higher"
    case lowerIsBetter = "lower"
    /// Informational: a change is reported, never judged.
    case neutral
}

/// One measured value of one run, or the reason it could not be measured.
///
/// A metric is never invented: when the machine cannot measure it, `value` is nil and
/// `unavailable` says why (e.g. "unavailable: no PMU").
public struct Metric: Codable, Sendable, Hashable {
    public var name: String
    public var value: Double?
    public var unit: String
    public var polarity: Polarity
    /// Where it came from: `workload`, `rusage`, `timing`, `vmstat`, `smaps`, `perf`, `monitor`, …
    public var source: String
    /// Why there is no value.
    public var unavailable: String?
    /// Set when the value stands in for something the machine cannot measure (e.g. page-faults for TLB misses).
    public var proxyFor: String?
    /// Free-form provenance: the perf scope and encoded event, the file read, …
    public var detail: String?

    public init(
        name: String, value: Double?, unit: String, polarity: Polarity, source: String,
        unavailable: String? = nil, proxyFor: String? = nil, detail: String? = nil
    ) {
        self.name = name
        self.value = value
        self.unit = unit
        self.polarity = polarity
        self.source = source
        self.unavailable = unavailable
        self.proxyFor = proxyFor
        self.detail = detail
    }

    public static func unavailable(
        _ name: String, unit: String, polarity: Polarity, source: String, reason: String
    ) -> Metric {
        Metric(name: name, value: nil, unit: unit, polarity: polarity, source: source, unavailable: reason)
    }
}

/// Outcome of one measured run.
public enum RunStatus: String, Codable, Sendable, Hashable {
    case ok
    /// The workload ran and failed (non-zero exit, signal, timeout, unparsable output).
    case failed
    /// The run could not be attempted here (a missing suite, an unsupported condition, …).
    case unavailable
    /// Stopped by a signal to nestbench (Ctrl-C, SIGTERM): its workload was killed.
    case interrupted
}

/// One cell of the matrix at one repetition, as planned.
public struct PlannedRun: Codable, Sendable, Hashable {
    /// Position in the execution order, from 0.
    public var sequence: Int
    public var configuration: String
    public var workload: String
    public var condition: String
    /// Repetition number of this cell, from 1.
    public var repetition: Int

    public init(sequence: Int, configuration: String, workload: String, condition: String, repetition: Int) {
        self.sequence = sequence
        self.configuration = configuration
        self.workload = workload
        self.condition = condition
        self.repetition = repetition
    }

    public var cell: Cell { Cell(configuration: configuration, workload: workload, condition: condition) }
}

/// A (configuration, workload, condition) cell of the matrix.
public struct Cell: Codable, Sendable, Hashable, Comparable {
    public var configuration: String
    public var workload: String
    public var condition: String

    public init(configuration: String, workload: String, condition: String) {
        self.configuration = configuration
        self.workload = workload
        self.condition = condition
    }

    public static func < (a: Cell, b: Cell) -> Bool {
        (a.workload, a.condition, a.configuration) < (b.workload, b.condition, b.configuration)
    }
}

/// Exactly how a workload process was started.
public struct Invocation: Codable, Sendable, Hashable {
    public var argv: [String]
    public var environment: [String: String]
    public var workingDirectory: String
    public var cpus: [Int]

    public init(argv: [String], environment: [String: String], workingDirectory: String, cpus: [Int]) {
        self.argv = argv
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.cpus = cpus
    }
}

/// The record of one measured run, stored as soon as the run ends.
public struct RunRecord: Codable, Sendable, Hashable {
    public var experimentRunID: String
    public var planned: PlannedRun
    public var status: RunStatus
    /// Why a run failed or was unavailable.
    public var reason: String?
    public var startedAt: Date
    public var endedAt: Date
    public var invocations: [Invocation]
    public var exitStatus: Int32?
    public var signal: Int32?
    public var metrics: [Metric]
    /// Layer provenance: knobs as applied and read back, kernel, pinning, …
    public var provenance: [String: String]
    /// Last lines of the workload's output, kept for failed runs.
    public var outputTail: String?

    public init(
        experimentRunID: String, planned: PlannedRun, status: RunStatus, reason: String? = nil,
        startedAt: Date, endedAt: Date, invocations: [Invocation] = [], exitStatus: Int32? = nil,
        signal: Int32? = nil, metrics: [Metric] = [], provenance: [String: String] = [:],
        outputTail: String? = nil
    ) {
        self.experimentRunID = experimentRunID
        self.planned = planned
        self.status = status
        self.reason = reason
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.invocations = invocations
        self.exitStatus = exitStatus
        self.signal = signal
        self.metrics = metrics
        self.provenance = provenance
        self.outputTail = outputTail
    }

    public func metric(_ name: String) -> Metric? { metrics.first { $0.name == name } }
}

/// What the machine a run happened on is.
public struct MachineDescription: Codable, Sendable, Hashable {
    public var hostname: String
    public var cpuModel: String
    public var cores: Int
    public var memoryBytes: UInt64
    public var kernel: String
    /// THP and khugepaged settings as read at the start.
    public var thp: [String: String]
    /// Anything else worth keeping (virtualization, PMU, …).
    public var extra: [String: String]

    public init(
        hostname: String, cpuModel: String, cores: Int, memoryBytes: UInt64, kernel: String,
        thp: [String: String], extra: [String: String] = [:]
    ) {
        self.hostname = hostname
        self.cpuModel = cpuModel
        self.cores = cores
        self.memoryBytes = memoryBytes
        self.kernel = kernel
        self.thp = thp
        self.extra = extra
    }
}

/// The record of one execution of an experiment file.
public struct ExperimentRunRecord: Codable, Sendable, Hashable {
    /// - running: in progress (or its owner died and no invocation has noticed yet)
    /// - completed: every planned run ended and at least one ran (ok or failed)
    /// - interrupted: stopped by a signal; the machine was restored
    /// - killed: its owner died without finishing (kill -9, power loss), found by a later invocation
    /// - failed: stopped by an error (the store, the platform)
    /// - nothingRan: every planned run ended but none could run (all unavailable)
    public enum Status: String, Codable, Sendable, Hashable, CaseIterable {
        case running, completed, interrupted, killed, failed
        case nothingRan = "nothing-ran"

        /// Complete data: what history, compare, nightly and report use by default.
        public var isComplete: Bool { self == .completed }
    }
    public var id: String
    public var experiment: Experiment
    public var filePath: String
    /// SHA-256 of the experiment file's bytes.
    public var contentHash: String
    public var content: String
    public var seed: UInt64
    public var plan: [PlannedRun]
    public var startedAt: Date
    public var finishedAt: Date?
    public var status: Status
    public var machine: MachineDescription
    /// Tags: the user's (commit, patch series …) and the automatic ones (`AutomaticTags`), some
    /// scoped to a configuration (`RunTags`).
    public var tags: [String: String]
    /// The campaign this experiment run belongs to (`run --campaign ID`): the shards of one
    /// experiment run on several testbeds, analysed together by `report --campaign ID`.
    public var campaign: String?
    /// This experiment run's share of the plan (`run --shard K/N`); nil: the whole plan.
    public var shard: Shard?
    /// Whether adaptive repetitions were off (`--fixed-repetitions`); nil in stores from before.
    public var fixedRepetitions: Bool?

    public init(
        id: String, experiment: Experiment, filePath: String, contentHash: String, content: String,
        seed: UInt64, plan: [PlannedRun], startedAt: Date, finishedAt: Date? = nil,
        status: Status = .running, machine: MachineDescription, tags: [String: String] = [:],
        campaign: String? = nil, shard: Shard? = nil, fixedRepetitions: Bool? = nil
    ) {
        self.campaign = campaign
        self.shard = shard
        self.fixedRepetitions = fixedRepetitions
        self.id = id
        self.experiment = experiment
        self.filePath = filePath
        self.contentHash = contentHash
        self.content = content
        self.seed = seed
        self.plan = plan
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.status = status
        self.machine = machine
        self.tags = tags
    }
}

/// One share of a sharded experiment: shard `index` (0-based, as Slurm's array task ids) of
/// `count`. It runs the whole repetition blocks `index`, `index + count`, `index + 2·count`, … of
/// the experiment's initial plan, so a testbed is a blocking factor, never confounded with a
/// configuration.
public struct Shard: Codable, Sendable, Hashable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// "K/N" with 0 ≤ K < N; nil for anything else.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]), n >= 1, k >= 0, k < n else { return nil }
        self.init(index: k, count: n)
    }

    public var description: String { "\(index)/\(count)" }

    /// How many of `blocks` repetition blocks this shard runs.
    public func blocks(of blocks: Int) -> Int { blocks > index ? (blocks - index + count - 1) / count : 0 }
}

/// The testbed a run happened on: provenance keys every run records, so runs of one campaign
/// measured on several machines can be told apart and analysed per testbed.
public enum Testbed {
    /// Provenance key: the testbed's host name.
    public static let hostKey = "testbed"
    /// Provenance key: "CPU model | kernel release | memory bytes".
    public static let fingerprintKey = "testbed.fingerprint"

    /// The provenance entries of a machine.
    public static func provenance(_ machine: MachineDescription) -> [String: String] {
        [hostKey: machine.hostname, fingerprintKey: fingerprint(machine)]
    }

    public static func fingerprint(_ machine: MachineDescription) -> String {
        "\(machine.cpuModel) | \(machine.kernel) | \(machine.memoryBytes) bytes"
    }
}

extension RunRecord {
    /// The testbed the run happened on (host name and fingerprint), nil for runs stored before
    /// testbeds were recorded.
    public var testbed: String? {
        provenance[Testbed.hostKey].map { host in provenance[Testbed.fingerprintKey].map { "\(host) (\($0))" } ?? host }
    }

    /// Provenance key naming the VM boot a run happened in. Runs that share a boot are resampled
    /// together by the hierarchical bootstrap; a run without it is its own group.
    public static let bootProvenanceKey = "vm_boot"

    /// The bootstrap group of this run: its VM boot, else the run itself.
    public var bootstrapGroup: String {
        provenance[Self.bootProvenanceKey] ?? "\(experimentRunID)#\(planned.sequence)"
    }
}
