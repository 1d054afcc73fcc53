import Foundation
import Logging
import NestBenchAnalysis
import NestBenchCollectors
import NestBenchConfig
import NestBenchFragmentation
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess
import NestBenchStats
import NestBenchStore
import NestBenchVM
import NestBenchWorkloads
import Synchronization

/// Errors that stop an experiment before or while it runs.
public struct OrchestratorError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Progress of an experiment, for the CLI's stderr line.
public struct Progress: Sendable {
    public var index: Int
    public var total: Int
    public var planned: PlannedRun
    public var elapsedSeconds: Double
    /// nil until one run has finished.
    public var etaSeconds: Double?
    /// Set when a run has just ended.
    public var finished: RunRecord?
}

/// Options of one experiment execution.
public struct RunOptions: Sendable {
    public var resultsDirectory: String
    public var seed: UInt64?
    public var tags: [String: String]
    /// Skip adaptive repetitions (run exactly `repetitions.min` per cell).
    public var fixedRepetitions: Bool
    /// Run only this share of the plan (`--shard K/N`).
    public var shard: Shard?
    /// Stored with the experiment run (`--campaign ID`).
    public var campaign: String?
    /// Continue this stored experiment run instead of starting one (`--resume`).
    public var resume: Resume?
    /// Called with the experiment run's id once it is known (the lock files name it).
    public var started: @Sendable (String) -> Void
    /// This machine as every run's provenance names it (set by `run`).
    var testbed: [String: String] = [:]

    /// What a resume continues: the experiment run, and whether failed runs are run again.
    public struct Resume: Sendable {
        public var id: String
        public var retryFailed: Bool

        public init(id: String, retryFailed: Bool = false) {
            self.id = id
            self.retryFailed = retryFailed
        }
    }

    public init(
        resultsDirectory: String, seed: UInt64? = nil, tags: [String: String] = [:], fixedRepetitions: Bool = false,
        shard: Shard? = nil, campaign: String? = nil, resume: Resume? = nil,
        started: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.resultsDirectory = resultsDirectory
        self.seed = seed
        self.tags = tags
        self.fixedRepetitions = fixedRepetitions
        self.shard = shard
        self.campaign = campaign
        self.resume = resume
        self.started = started
    }
}

/// Executes an experiment: plan → runs (configuration applied, workload run with collectors) →
/// each run stored as it ends → adaptive follow-up blocks → machine restored.
public final class Orchestrator: Sendable {
    public let registry: WorkloadRegistry
    public let platform: LocalPlatform
    public let store: Store
    /// nil: `defaultCollectors(for:)` of each experiment (its `collectors:` settings).
    public let collectors: [any RunCollector]?
    public let harness: HarnessLocator
    /// Boots and keeps the VM stacks of `qemu` configurations; nil when the experiment has none.
    public let vmPlatform: QemuPlatform?
    /// The platforms by kind: `local` (this machine) and any other registered provider.
    public let providers: [PlatformKind: any PlaceProvider]
    let logger: Logger
    /// Which boot each stack configuration is in (the reboot policy).
    let bootPlan = BootPlan()
    /// This run's environment knobs (set at preflight).
    let environmentKnobs = EnvironmentKnobs()

    public init(
        registry: WorkloadRegistry, platform: LocalPlatform, store: Store,
        collectors: [any RunCollector]? = nil, harness: HarnessLocator = HarnessLocator(),
        vmPlatform: QemuPlatform? = nil, providers extra: [any PlaceProvider] = [], logger: Logger
    ) {
        self.registry = registry
        self.platform = platform
        self.store = store
        self.collectors = collectors
        self.harness = harness
        self.vmPlatform = vmPlatform
        var providers: [PlatformKind: any PlaceProvider] = [.local: platform]
        if let vmPlatform { providers[.qemu] = vmPlatform }
        for provider in extra { providers[provider.kind] = provider }
        self.providers = providers
        self.logger = logger
    }

    /// Usage, vmstat deltas, perf counters (TLB events or why not, plus proxies) and the memory monitor.
    public static var defaultCollectors: [any RunCollector] { StandardCollectors.make() }

    /// The default collectors configured by an experiment's `collectors:` section.
    public static func defaultCollectors(for experiment: Experiment) -> [any RunCollector] {
        StandardCollectors.make(experiment.collectors ?? CollectorSettings())
    }

    /// "20261121-235901-3fa2": sortable, unique enough, easy to type a prefix of.
    public static func newRunID(_ date: Date = Date()) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd-HHmmss"
        return f.string(from: date) + "-" + String(format: "%04x", UInt16.random(in: 0...UInt16.max))
    }

    /// The seed of a run's order: `--seed`, else the file's, else a fresh random one (recorded).
    public static func seed(option: UInt64?, experiment: Experiment) -> UInt64 {
        option ?? experiment.seed ?? UInt64.random(in: 1...UInt64.max)
    }

    /// A configuration as the local platform applies it: with hardware virtualization a stack's
    /// L0 is this machine, and its settings are this machine's knobs.
    /// The experiment's `environment:` knobs (ASLR, NUMA balancing, KSM, governor, boost) are
    /// set under every configuration's own knobs (a configuration that sets one itself wins).
    func onThisMachine(_ configuration: Configuration) -> Configuration {
        var c = providers[configuration.platform]?.thisMachine(configuration) ?? configuration
        var env = LayerSettings()
        let own = Set(c.host.knobs.map(\.path))
        for knob in environmentKnobs.knobs where !own.contains(knob.path) { env.sysfs[knob.path] = knob.value }
        c.host = env.overridden(by: c.host)
        return c
    }

    /// The knobs that put this machine into the experiment's environment: explicit settings
    /// always (preflight fails when they cannot be written), defaults only where writable (a
    /// non-root run leaves them, and the run's provenance says "uncontrolled").
    public static func environmentKnobs(_ settings: EnvironmentSettings?, isRoot: Bool = getuid() == 0) -> [Knob] {
        let machine = NoiseSources.readThisMachine()
        let sources = NoiseSources.assess(files: machine.files, processes: machine.processes, settings: settings)
        var knobs: [Knob] = []
        for source in sources where source.controlled {
            let explicit = settings?.isExplicit(source.name) ?? false
            for knob in source.knobs where explicit || (isRoot && FileManager.default.isWritableFile(atPath: knob.path)) {
                knobs.append(knob)
            }
        }
        return knobs
    }

    /// Every platform's VMs and helpers are gone.
    func teardownPlatforms() {
        for provider in providers.values { provider.teardownAll() }
    }

    /// The CPUs this process may use: its affinity mask, within its cgroup's cpuset.
    public static func allowedCPUs() -> (cpus: [Int], source: String)? {
        guard var cpus = Affinity.of(0) else { return nil }
        var source = "this process's affinity mask"
        if let cpuset = cgroupCPUSet() {
            let set = Set(cpuset.cpus)
            cpus = cpus.filter { set.contains($0) }
            source += " and cgroup cpuset \(cpuset.path)"
        }
        return (cpus, source)
    }

    /// The effective cpuset of this process's cgroup (v2 `cpuset.cpus.effective`, or v1's
    /// cpuset hierarchy `cpuset.effective_cpus`), when there is one.
    static func cgroupCPUSet() -> (cpus: [Int], path: String)? {
        guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        var candidates: [String] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let relative = fields[2] == "/" ? "" : String(fields[2])
            if fields[1].split(separator: ",").contains("cpuset") {
                candidates.append("/sys/fs/cgroup/cpuset\(relative)/cpuset.effective_cpus")
            } else if fields[0] == "0" && fields[1].isEmpty {
                candidates.append("/sys/fs/cgroup\(relative)/cpuset.cpus.effective")
            }
        }
        for path in candidates {
            if let value = try? String(contentsOfFile: path, encoding: .utf8), let cpus = CPUList.parse(value), !cpus.isEmpty {
                return (cpus, path)
            }
        }
        return nil
    }

    /// Pinned CPUs checked against where the workload runs: this machine's CPUs this process may
    /// use (affinity mask and cgroup cpuset), or the vCPUs of a stack's innermost layer; a
    /// stack's L0 pinning against this machine's CPUs. Done at preflight on the machine that
    /// runs the experiment (a file may be written elsewhere, or imported from a bigger testbed).
    public static func cpuProblems(
        _ experiment: Experiment, allowed: (cpus: [Int], source: String)? = Orchestrator.allowedCPUs()
    ) -> [String] {
        var problems: [String] = []
        func outside(_ cpus: [Int], _ available: Set<Int>) -> [Int] { cpus.filter { !available.contains($0) } }
        let local = allowed.map {
            (Set($0.cpus), "this machine has only CPUs \(CPUList.format($0.cpus)) for nestbench (\($0.source))")
        }
        for (index, workload) in experiment.workloads.enumerated() {
            for member in workload.colocated ?? [workload] where !member.cpus.isEmpty {
                for configuration in experiment.configurations {
                    if configuration.platform == .qemu, let inner = configuration.layers.last {
                        let bad = outside(member.cpus, Set(0..<inner.vcpus))
                        if !bad.isEmpty {
                            problems.append(
                                "workloads[\(index)] (\(member.label)).cpus: CPU \(CPUList.format(bad)) does not exist in \(inner.name) of configuration \(configuration.name), which has \(inner.vcpus) vCPUs"
                            )
                        }
                    } else if let (available, what) = local {
                        let bad = outside(member.cpus, available)
                        if !bad.isEmpty {
                            problems.append(
                                "workloads[\(index)] (\(member.label)).cpus: CPU \(CPUList.format(bad)) cannot be used: \(what)")
                        }
                    }
                }
            }
        }
        if let (available, what) = local {
            for configuration in experiment.configurations where configuration.platform == .qemu {
                guard let l0 = configuration.layers.first, !l0.pinning.isEmpty else { continue }
                let bad = outside(l0.pinning, available)
                if !bad.isEmpty {
                    problems.append(
                        "configurations.\(configuration.name).layers.\(l0.name).pinning: CPU \(CPUList.format(bad)) cannot be used: \(what)"
                    )
                }
            }
        }
        var seen: Set<String> = []
        return problems.filter { seen.insert($0).inserted }
    }

    /// Checks that the experiment can run here without changing anything.
    public func preflight(_ experiment: Experiment) throws(OrchestratorError) {
        // Nothing to run is an error, found before any knob changes.
        let availability = Availability(experiment, registry: registry)
        if availability.nothingRuns {
            throw OrchestratorError((["no cell of the experiment can run here:"] + availability.lines).joined(separator: "\n"))
        }
        environmentKnobs.set(Self.environmentKnobs(experiment.environment))
        var problems = LocalPlatform.preflight(experiment.configurations.map(onThisMachine))
        problems += Self.cpuProblems(experiment)
        let isRoot = getuid() == 0
        for condition in experiment.conditions {
            if condition.compact && !isRoot {
                problems.append(
                    "conditions.\(condition.name).compact: dropping caches and compacting memory needs root; run nestbench as root or set compact: false"
                )
            }
            for knob in condition.fragmentation?.knobs ?? [] {
                if !FileManager.default.fileExists(atPath: knob.path) {
                    problems.append("conditions.\(condition.name).fragmentation.sysctl: this kernel has no \(knob.path)")
                } else if !isRoot || !FileManager.default.isWritableFile(atPath: knob.path) {
                    problems.append(
                        "conditions.\(condition.name).fragmentation: writing \(knob.path) needs root; run nestbench as root")
                }
            }
        }
        if !problems.isEmpty { throw OrchestratorError(problems.joined(separator: "\n")) }
    }

    /// The testbed of a resumed experiment run's run that was in flight when it stopped, as
    /// provenance: that of its last run stored before the stop (the attempt that stopped ran
    /// there), else the machine the experiment run started on; `testbed.from` says which. Stored
    /// runs of earlier resumes' in-flight runs (`resumed_at`) measured nothing and do not count.
    static func stoppedTestbed(_ stored: ExperimentRunRecord, runs: [RunRecord]) -> [String: String] {
        let measured = runs.filter { $0.testbed != nil && $0.provenance["resumed_at"] == nil }
        if let last = measured.max(by: { ($0.endedAt, $0.planned.sequence) < ($1.endedAt, $1.planned.sequence) }) {
            var provenance = last.provenance.filter { $0.key == Testbed.hostKey || $0.key == Testbed.fingerprintKey }
            provenance["testbed.from"] = "the last run stored before the stop (#\(last.planned.sequence))"
            return provenance
        }
        return Testbed.provenance(stored.machine).merging(["testbed.from": "the machine the experiment run started on"]) {
            $1
        }
    }

    /// Runs the experiment; returns the experiment run id. Throws only for failures that stop it
    /// (the store, the platform); a workload failing is a stored run.
    public func run(
        _ loaded: LoadedExperiment, options: RunOptions,
        progress: @escaping @Sendable (Progress) -> Void = { _ in }
    ) async throws -> String {
        let experiment = loaded.experiment
        try preflight(experiment)
        let id = options.resume?.id ?? Self.newRunID()
        var machine = MachineProbe.describe()
        let kinds = Set(experiment.configurations.map(\.platform))
        for kind in PlatformKind.allCases where kinds.contains(kind) {
            guard let provider = providers[kind] else {
                throw OrchestratorError(
                    "the experiment has \(kind.rawValue) configurations but the \(kind.rawValue) platform is not set up")
            }
            provider.describe(into: &machine.extra)
            let problems = await provider.preflight(
                experiment.configurations.filter { $0.platform == kind }, artifacts: "\(options.resultsDirectory)/artifacts/\(id)"
            )
            if !problems.isEmpty { throw OrchestratorError(problems.joined(separator: "\n")) }
        }
        var options = options
        options.testbed = Testbed.provenance(machine)
        let seed: UInt64
        var generator: SeededGenerator
        var plan: [PlannedRun]
        // The runs still to do, in order: the whole plan, or what a resumed run has left.
        var queue: [PlannedRun]
        var fixed = options.fixedRepetitions
        var shard = options.shard
        bootPlan.reset(policy: experiment.repetitions)
        if let resume = options.resume {
            guard let stored = try store.experimentRun(resume.id) else {
                throw OrchestratorError("no experiment run \(resume.id) in \(store.path) to resume")
            }
            seed = stored.seed
            shard = stored.shard
            fixed = stored.fixedRepetitions ?? options.fixedRepetitions
            let point = try store.resumePoint(id)
            plan = stored.plan
            if let state = point.generatorState {
                generator = SeededGenerator(state: state)
            } else {
                // Stored before resume existed: the initial plan alone can be drawn again.
                generator = SeededGenerator(seed: seed)
                let initial = try Self.initialPlan(experiment, shard: shard, generator: &generator)
                guard initial == plan else {
                    throw OrchestratorError(
                        "experiment run \(id) cannot be resumed: it has adaptive blocks but was stored without its plan generator's state (by an older nestbench)"
                    )
                }
            }
            let resumedAt = Date()
            var records = Dictionary(try store.runs(of: id).map { ($0.planned.sequence, $0) }) { a, _ in a }
            // The run in flight when it stopped (kill -9, a crash) has no record: it is stored
            // `interrupted`, never left dangling, and run again.
            if let k = point.inFlight, k < plan.count, records[k] == nil {
                let interrupted = RunRecord(
                    experimentRunID: id, planned: plan[k], status: .interrupted,
                    reason:
                        "in flight when experiment run \(id) stopped (\(stored.status.rawValue)); run again by --resume",
                    startedAt: stored.finishedAt ?? resumedAt, endedAt: stored.finishedAt ?? resumedAt,
                    provenance: Self.stoppedTestbed(stored, runs: Array(records.values)).merging([
                        "resumed_at": ISO8601DateFormatter().string(from: resumedAt)
                    ]) { $1 })
                try store.record(interrupted)
                records[k] = interrupted
            }
            // Interrupted runs (and failed ones with --retry-failed) not yet run again are run
            // again first, as new plan entries of the same cell and repetition.
            var retries: [PlannedRun] = []
            for (i, p) in plan.enumerated() {
                guard let r = records[p.sequence],
                    r.status == .interrupted || (resume.retryFailed && r.status == .failed)
                else { continue }
                let again = plan[(i + 1)...].contains { $0.cell == p.cell && $0.repetition == p.repetition }
                if !again {
                    retries.append(
                        PlannedRun(
                            sequence: plan.count + retries.count, configuration: p.configuration, workload: p.workload,
                            condition: p.condition, repetition: p.repetition))
                }
            }
            plan += retries
            queue = retries + plan.filter { records[$0.sequence] == nil && $0.sequence < plan.count - retries.count }
            try store.updatePlan(id, plan: plan, generatorState: generator.state)
            try store.reopen(id)
            logger.notice(
                "experiment run resumed",
                metadata: [
                    "run.id": "\(id)", "runs.kept": "\(records.count)", "runs.again": "\(retries.count)",
                    "runs.left": "\(queue.count)",
                ])
        } else {
            seed = Self.seed(option: options.seed, experiment: experiment)
            generator = SeededGenerator(seed: seed)
            plan = try Self.initialPlan(experiment, shard: shard, generator: &generator)
            queue = plan
            let record = ExperimentRunRecord(
                id: id, experiment: experiment, filePath: loaded.path, contentHash: loaded.contentHash,
                content: loaded.content, seed: seed, plan: plan, startedAt: Date(), machine: machine,
                tags: RunTagging.initial(machine: machine, experiment: experiment, user: options.tags),
                campaign: options.campaign, shard: shard, fixedRepetitions: options.fixedRepetitions)
            try store.begin(record, generatorState: generator.state)
        }
        options.started(id)
        // Adaptive repetitions of a shard: per shard, up to its share of `repetitions.max`.
        var adaptive = experiment
        if let shard {
            let blocks = shard.blocks(of: experiment.repetitions.min)
            adaptive.repetitions.min = blocks
            adaptive.repetitions.max = Swift.max(blocks, (experiment.repetitions.max + shard.count - 1) / shard.count)
        }
        // With the knob journal: a later invocation marks this run `killed` if this process dies.
        try? platform.journal.beginExperiment(id, store: store.path)
        defer { try? platform.journal.endExperiment(id) }
        logger.notice("experiment run started", metadata: ["run.id": "\(id)", "run.seed": "\(seed)", "runs": "\(plan.count)"])

        // Signals only request cancellation (`Cancellation.shared`, which also kills the
        // workload's process group); this loop notices at its next safe point and restores the
        // machine here, once, on this thread.
        let cancellation = Cancellation.shared
        let collectors = self.collectors ?? Self.defaultCollectors(for: experiment)
        let start = ContinuousClock.now
        var durations: [Double] = []
        var consoleOffsets: [String: UInt64] = [:]
        // Progress counts the whole plan; a resumed run starts where it stopped.
        var done = plan.count - queue.count
        do {
            while true {
                if let signal = cancellation.signal { throw Interrupted(signal: signal) }
                if queue.isEmpty && !fixed {
                    // Every planned run ended (also when a resumed run stopped just there).
                    let more = followUp(experiment: adaptive, runs: try store.runs(of: id), plan: plan, generator: &generator)
                    if !more.isEmpty {
                        plan += more
                        queue += more
                        try store.updatePlan(id, plan: plan, generatorState: generator.state)
                        logger.info("adaptive repetitions", metadata: ["runs.added": "\(more.count)"])
                    }
                }
                if queue.isEmpty { break }
                let planned = queue.removeFirst()
                let index = done
                let elapsed = (ContinuousClock.now - start).seconds
                let eta = durations.isEmpty ? nil : Statistics.mean(durations) * Double(plan.count - index)
                progress(Progress(index: index, total: plan.count, planned: planned, elapsedSeconds: elapsed, etaSeconds: eta))
                let runStart = ContinuousClock.now
                let kernelLog = KernelLogWatch()
                try store.setInFlight(id, sequence: planned.sequence)
                var run = try await execute(
                    planned, experiment: experiment, experimentRunID: id, options: options, collectors: collectors)
                if cancellation.isRequested && run.status != .ok {
                    // Its workload (or condition) was stopped by the signal: not a failure of the run.
                    run.status = .interrupted
                    run.reason = "interrupted by signal \(cancellation.signal ?? 0)" + (run.reason.map { " (\($0))" } ?? "")
                    try store.updateRunStatus(id, sequence: planned.sequence, status: .interrupted, reason: run.reason)
                }
                run = try afterRun(
                    run, kernelLog: kernelLog, consoleOffsets: &consoleOffsets, environment: experiment.environment)
                durations.append((ContinuousClock.now - runStart).seconds)
                progress(
                    Progress(
                        index: index, total: plan.count, planned: planned,
                        elapsedSeconds: (ContinuousClock.now - start).seconds, etaSeconds: nil, finished: run))
                done += 1
            }
            try store.setInFlight(id, sequence: nil)
        } catch {
            let status: ExperimentRunRecord.Status = cancellation.isRequested ? .interrupted : .failed
            teardownPlatforms()
            ChildRegistry.shared.killAll()
            let restoreError = Result { try platform.restoreAll() }
            try? store.finish(id, status: status)
            if case .failure(let e) = restoreError {
                logger.critical("restoring the machine failed", metadata: ["error": "\(e)"])
                RestoreFailures.record("\(e)")
                if let signal = cancellation.signal {
                    throw OrchestratorError("interrupted by signal \(signal); restoring the machine failed: \(e)")
                }
                throw OrchestratorError("\(error); and restoring the machine failed: \(e)")
            }
            if let signal = cancellation.signal { throw Interrupted(signal: signal) }
            throw error
        }
        teardownPlatforms()
        try platform.restoreAll()
        if let tags = try store.experimentRun(id)?.tags {
            try store.setTags(id, RunTags.compact(tags, configurations: experiment.configurations.map(\.name)))
        }
        // An experiment none of whose runs could run has no data: not `completed`.
        let runs = try store.runs(of: id)
        let ranAny = runs.contains { $0.status == .ok || $0.status == .failed }
        try store.finish(id, status: ranAny ? .completed : .nothingRan)
        return id
    }

    /// The initial plan: the whole experiment's, or a shard's share of it.
    static func initialPlan(_ experiment: Experiment, shard: Shard?, generator: inout SeededGenerator) throws(OrchestratorError)
        -> [PlannedRun]
    {
        guard let shard else { return Planner.initialPlan(for: experiment, generator: &generator) }
        do {
            return try Planner.initialPlan(for: experiment, shard: shard, generator: &generator)
        } catch {
            throw OrchestratorError(error.message)
        }
    }

    /// After each run: the kernel log of this machine since the run started and of every VM layer
    /// (its console log since the last scan) — an oops, BUG, WARNING, OOM kill, hung task, RCU
    /// stall or KVM error marks the run (`kernel_log` in its provenance) or fails it
    /// (`environment.kernel_log: fail`) —; the noise sources' state and this machine's paging mode.
    func afterRun(
        _ run: RunRecord, kernelLog: KernelLogWatch, consoleOffsets: inout [String: UInt64],
        environment: EnvironmentSettings?
    ) throws -> RunRecord {
        var run = run
        var findings: [(layer: String, finding: KernelLog.Finding)] = []
        if let why = kernelLog.unavailableReason {
            run.provenance["kernel_log.host"] = "unavailable: \(why)"
        } else {
            let text = kernelLog.drain().joined(separator: "\n")
            findings += KernelLog.findings(in: text).map { ("host", $0) }
            run.provenance["kernel_log.host"] = "scanned"
        }
        for (key, path) in run.provenance where key.hasSuffix(".console") {
            let layer = String(key.dropLast(".console".count))
            guard let handle = FileHandle(forReadingAtPath: path) else { continue }
            defer { try? handle.close() }
            let from = consoleOffsets[path] ?? 0
            try? handle.seek(toOffset: from)
            let data = (try? handle.readToEnd()) ?? Data()
            consoleOffsets[path] = from + UInt64(data.count)
            // What the console held when the run's placement opened (the boot, the time between
            // runs) is recorded beside the run, not held against it.
            let runStart = run.provenance["\(layer).console_from"].flatMap(UInt64.init)
            let split = runStart.map { Int(min(UInt64(data.count), $0 > from ? $0 - from : 0)) } ?? 0
            let before = KernelLog.findings(in: String(decoding: data.prefix(split), as: UTF8.self))
            if !before.isEmpty {
                run.provenance["kernel_log.\(layer).before_run"] = KernelLog.summary(before)
                logger.notice(
                    "kernel log before the run (boot or between runs; the run is not marked)",
                    metadata: ["layer": "\(layer)", "findings": "\(before.count)", "first": "\(before[0].line)"])
            }
            findings += KernelLog.findings(in: String(decoding: data.dropFirst(split), as: UTF8.self)).map { (layer, $0) }
            run.provenance["kernel_log.\(layer)"] =
                runStart != nil ? "scanned (from the run's start)" : from == 0 ? "scanned (console since boot)" : "scanned"
        }
        if !findings.isEmpty {
            let summary = findings.map { "\($0.layer): \($0.finding.kind): \($0.finding.line)" }.joined(separator: " | ")
            run.provenance["kernel_log"] = summary
            logger.warning(
                "kernel log during the run", metadata: ["run.sequence": "\(run.planned.sequence)", "findings": "\(summary)"])
            if environment?.kernelLogFails == true, run.status == .ok {
                run.status = .failed
                run.reason = "kernel log during the run (environment.kernel_log: fail): \(summary)"
            }
        }
        let machine = NoiseSources.readThisMachine()
        for (k, v) in NoiseSources.provenance(
            NoiseSources.assess(
                files: machine.files, processes: machine.processes, settings: environment))
        {
            run.provenance[k] = v
        }
        var pagingFiles: [String: String] = [:]
        for p in NestedPaging.files { if let t = KernelFile.read(p) { pagingFiles[p] = t } }
        if let mode = NestedPaging.mode(files: pagingFiles) { run.provenance["paging.host"] = mode }
        try store.amend(run)
        return run
    }

    /// Cells whose primary-metric ratio CI is wider than the target get one more interleaved block
    /// (with their baseline cell), until `repetitions.max`.
    func followUp(experiment: Experiment, runs: [RunRecord], plan: [PlannedRun], generator: inout SeededGenerator)
        -> [PlannedRun]
    {
        let done = AdaptiveRepetitions.plannedRepetitions(plan)
        let comparisons = Comparator.comparisons(experiment: experiment, runs: runs)
        let cells = AdaptiveRepetitions.cellsNeedingMore(experiment: experiment, plan: plan, comparisons: comparisons)
        guard !cells.isEmpty else { return [] }
        return Planner.blocks(
            cells: cells.sorted(), repetitions: done, blocks: 1, startSequence: plan.count, generator: &generator)
    }

    /// One planned run, on whatever platform its configuration names: this machine's part of the
    /// configuration applied, the provider's placement (this machine, or a booted stack), the
    /// condition in the places it names, the workload in each workload place with the collectors
    /// attached there, the condition undone, the record stored. Failures of the placement, the
    /// condition or the workload are stored runs with the reason; a lost placement (dead stack)
    /// is discarded so the next run starts it afresh.
    func execute(
        _ planned: PlannedRun, experiment: Experiment, experimentRunID: String, options: RunOptions,
        collectors: [any RunCollector]
    ) async throws -> RunRecord {
        let started = Date()
        var provenance: [String: String] = options.testbed
        guard let requested = experiment.configuration(named: planned.configuration),
            let workload = experiment.workload(labeled: planned.workload),
            let condition = experiment.condition(named: planned.condition)
        else { throw OrchestratorError("the plan names a cell the experiment does not have: \(planned)") }
        let samples = SampleBox()
        func store(_ result: WorkloadResult) throws -> RunRecord {
            let record = RunRecord(
                experimentRunID: experimentRunID, planned: planned, status: result.status, reason: result.reason,
                startedAt: started, endedAt: Date(), invocations: result.invocations, exitStatus: result.exitStatus,
                signal: result.signal, metrics: result.metrics, provenance: provenance.merging(result.provenance) { $1 },
                outputTail: result.outputTail)
            try self.store.record(record, samples: samples.samples.map { ($0.tMillis, $0.name, $0.value) })
            return record
        }

        let readBack = try platform.activate(onThisMachine(requested))
        for (path, value) in readBack { provenance["knob:\(path)"] = value }
        provenance["platform"] = requested.platform.rawValue
        if !workload.cpus.isEmpty { provenance["pinning"] = CPUList.format(workload.cpus) }

        // The workloads of the run with their adapters: one, or the members of a colocated group.
        var members: [(WorkloadSpec, any WorkloadAdapter)] = []
        for member in workload.colocated ?? [workload] {
            guard let adapter = registry.adapter(for: member.suite) else {
                return try store(WorkloadResult(status: .unavailable, reason: "no adapter for suite \(member.suite)"))
            }
            if let reason = adapter.unavailableReason(for: member) {
                return try store(WorkloadResult(status: .unavailable, reason: reason))
            }
            members.append((member, adapter))
        }
        let colocated = workload.colocated != nil
        // A colocated group runs in a stack whose innermost layer is one guest per member.
        var configuration = requested
        if colocated {
            guard requested.platform != .local else {
                return try store(
                    WorkloadResult(
                        status: .unavailable,
                        reason:
                            "\(workload.label): colocated workloads run in separate guests of a stack; configuration \(requested.name) is not a qemu configuration"
                    ))
            }
            guard let split = requested.colocating(members.count) else {
                return try store(
                    WorkloadResult(
                        status: .unavailable,
                        reason:
                            "\(planned.workload): configuration \(requested.name)'s innermost layer has instances: \(requested.layers.last?.instances ?? 0); \(members.count) colocated workloads need 1 (split evenly) or \(members.count)"
                    ))
            }
            configuration = split
            provenance["colocation"] = "\(members.count) guests: " + members.map(\.0.label).joined(separator: ", ")
        }
        let artifacts = absolute("\(options.resultsDirectory)/artifacts/\(experimentRunID)")
        let tag = "\(planned.sequence)-\(planned.configuration)-\(planned.workload)-\(planned.condition)-r\(planned.repetition)"
        let host = LocalPlace(platform: platform, collectors: collectors, runsDirectory: artifacts)
        guard let provider = providers[configuration.platform] else {
            return try store(
                WorkloadResult(
                    status: .unavailable, reason: "the \(configuration.platform.rawValue) platform is not set up"))
        }
        // Reboot policy: a stack configuration's repetitions are spread over `repetitions.boots`
        // boots in the interleaved order; a run whose boot is not the current one boots afresh.
        let stacked = configuration.platform == .qemu
        let bootIndex = bootPlan.wanted(planned)
        if stacked && bootPlan.needsReboot(configuration.name, index: bootIndex) { provider.discard(configuration) }
        let placement: any Placement
        do {
            placement = try await provider.open(
                configuration, host: host, collectors: experiment.collectors ?? CollectorSettings(), artifacts: artifacts)
            if stacked {
                bootPlan.booted(configuration.name, index: bootIndex)
                provenance["vm_boot.index"] = String(bootIndex + 1)
            }
        } catch {
            provenance["stack_directory"] = artifacts + "/vm"
            logger.error("placement failed", metadata: ["configuration": "\(configuration.name)", "error": "\(error)"])
            if case .unreachable(_, let reason) = error { return try store(WorkloadResult(status: .failed, reason: reason)) }
            return try store(WorkloadResult(status: .failed, reason: error.description))
        }
        provenance.merge(placement.provenance) { $1 }
        if configuration.platform == .qemu {
            try self.store.addTags(
                experimentRunID,
                RunTags.yielding(
                    RunTagging.stack(placement.provenance, configuration: configuration, named: planned.configuration),
                    to: options.tags))
        }
        let targets = placement.workloadPlaces
        // Member i runs in guest i: checked before anything indexes members by guest.
        if colocated && targets.count != members.count {
            return try store(
                WorkloadResult(
                    status: .failed,
                    reason: "\(members.count) colocated workloads but \(targets.count) innermost guests in the stack"))
        }
        // The label of what runs in workload place i: its member (colocated), else its place.
        func label(_ i: Int) -> String { colocated ? members[i].0.label : targets[i].name }

        // The condition, in the layer it names (default: where the workload runs); with several
        // places, in each, its metrics under the workload's label there (or the place's name).
        var conditionPlaces = targets
        if let layer = condition.fragmentation?.layer ?? condition.memoryPressure?.layer {
            guard let named = placement.places(forLayer: layer) else {
                let reason =
                    configuration.platform == .local
                    ? "condition \(condition.name): layer \(layer) names a VM layer; configuration \(configuration.name) runs on this machine (platform local)"
                    : "condition \(condition.name): configuration \(configuration.name) has no layer \(layer)"
                return try store(
                    WorkloadResult(status: configuration.platform == .local ? .unavailable : .failed, reason: reason))
            }
            conditionPlaces = named
        }
        var prepared: [(prefix: String, condition: PreparedCondition)] = []
        if condition.fragmentation != nil || condition.memoryPressure != nil || condition.compact {
            let runner = ConditionRunner(harness: harness, journal: platform.journal, logger: logger)
            do {
                for place in conditionPlaces {
                    let several = conditionPlaces.count > 1
                    let prefix = several ? targets.indices.first { targets[$0].name == place.name }.map(label) ?? place.name : ""
                    let directory = place.runDirectory(several ? "\(tag)-\(place.name)-fragment" : "\(tag)-fragment")
                    prepared.append((prefix, try await runner.prepare(condition, in: place, directory: directory)))
                }
            } catch {
                for (_, p) in prepared {
                    if let session = p.fragmentation { await session.release() }
                    if let session = p.pressure { await session.release() }
                    _ = await p.restore()
                }
                if placement.lostReason != nil { provider.discard(configuration) }
                return try store(WorkloadResult(status: .failed, reason: "condition \(condition.name): \(error)"))
            }
        }
        for (prefix, p) in prepared {
            for (key, value) in p.provenance { provenance[PreparedCondition.prefixed(key, prefix)] = value }
        }

        // Save/restore: the guest it names (where the workload runs) is saved and restored
        // `at` seconds after the workload starts.
        var savePlace: (any SaveRestorePlace)?
        if let spec = condition.saveRestore {
            guard let named = placement.places(forLayer: spec.layer), named.count == 1,
                let place = named[0] as? any SaveRestorePlace, targets.contains(where: { $0.name == place.name })
            else {
                return try store(
                    WorkloadResult(
                        status: .failed,
                        reason:
                            "condition \(condition.name): \(spec.layer) of configuration \(configuration.name) cannot be saved and restored (it must be the single guest the workload runs in, detachable: true, its QEMU on this machine)"
                    ))
            }
            savePlace = place
        }

        // The workload in each workload place, collectors attached there.
        let observation = await placement.beginRun()
        let gate = SaveGate()
        let saveAt = condition.saveRestore.map { Int($0.atSeconds * 1000) }
        let saveMode = condition.saveRestore?.mode ?? .eager
        let saveTask = savePlace.map { place in
            Task { () -> Result<SaveRestoreTimes, any Error>? in
                if let saveAt { try? await Task.sleep(for: .milliseconds(saveAt)) }
                guard gate.begin() else { return nil }
                do {
                    return .success(try await place.saveAndRestore(saveMode))
                } catch {
                    return .failure(error)
                }
            }
        }
        let logger = self.logger
        let runMembers = members
        let labels = targets.indices.map(label)
        let results = await withTaskGroup(of: (Int, WorkloadResult).self) { group in
            for (i, place) in targets.enumerated() {
                let prefix = colocated || i > 0 ? labels[i] : ""
                group.addTask {
                    let directory = place.runDirectory(tag)
                    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                    let context = WorkloadContext(
                        runDirectory: directory, logger: logger,
                        launchMeasured: { spec throws(ProcessError) in
                            let run = try await place.launchMeasured(spec)
                            samples.append(
                                run.samples.map { s in
                                    var s = s
                                    s.name = PreparedCondition.prefixed(s.name, prefix)
                                    return s
                                })
                            return MeasuredOutcome(outcome: run.outcome, metrics: run.metrics)
                        },
                        startHelper: { spec throws(ProcessError) in try await place.startHelper(spec) },
                        readFile: { path in try? await place.read(path) })
                    let (workload, adapter) = colocated ? runMembers[i] : runMembers[0]
                    return (i, await adapter.run(workload, context: context))
                }
            }
            var all: [(Int, WorkloadResult)] = []
            for await r in group { all.append(r) }
            return all.sorted { $0.0 < $1.0 }.map(\.1)
        }
        if gate.workloadsEnded() { saveTask?.cancel() }
        let saved = await saveTask?.value
        for (i, place) in targets.enumerated() {
            provenance["run_directory" + (i == 0 ? "" : ".\(place.name)")] = place.runDirectory(tag)
        }

        // Counters stop, the fragmenter releases its memory and the condition's knobs go back,
        // whatever the workload's outcome.
        var conditionMetrics = await observation.finish()
        var restoreFailures: [String] = []
        for (prefix, p) in prepared {
            var metrics = p.metrics
            if let fragmentation = p.fragmentation {
                let (fragmentMetrics, fragmentSamples, extra) = await fragmentation.finish()
                metrics += fragmentMetrics
                samples.append(
                    fragmentSamples.map { s in
                        var s = s
                        s.name = PreparedCondition.prefixed(s.name, prefix)
                        return s
                    })
                for (key, value) in extra { provenance[PreparedCondition.prefixed(key, prefix)] = value }
            }
            if let pressure = p.pressure {
                let (pressureMetrics, pressureSamples, extra) = await pressure.finish()
                metrics += pressureMetrics
                samples.append(
                    pressureSamples.map { s in
                        var s = s
                        s.name = PreparedCondition.prefixed(s.name, prefix)
                        return s
                    })
                for (key, value) in extra { provenance[PreparedCondition.prefixed(key, prefix)] = value }
            }
            conditionMetrics += metrics.map { m in
                var m = m
                m.name = PreparedCondition.prefixed(m.name, prefix)
                return m
            }
            if placement.lostReason == nil { restoreFailures += await p.restore() }
        }
        if !restoreFailures.isEmpty {
            // The place keeps a knob the next run does not expect: start it afresh next time.
            logger.warning("condition knobs not restored", metadata: ["failures": "\(restoreFailures)"])
            provenance["condition.restore"] = restoreFailures.joined(separator: "; ")
            provider.discard(configuration)
        }
        guard var result = results.first else {
            return try store(WorkloadResult(status: .failed, reason: "the placement has no place to run the workload in"))
        }
        if let spec = condition.saveRestore, let savePlace {
            switch saved {
            case .success(let times)?:
                // Counters on the vCPU threads of the QEMU that was saved stopped with it: the
                // restored QEMU's threads were not counted, so they do not cover the run.
                conditionMetrics = conditionMetrics.map { m in
                    guard m.source == "perf", m.value != nil else { return m }
                    return .unavailable(
                        m.name, unit: m.unit, polarity: m.polarity, source: m.source,
                        reason:
                            "unavailable: counted on the vCPU threads of \(savePlace.name)'s QEMU, which the save ended (the restored QEMU's threads were not counted)"
                    )
                }
                // What the workload's adapter read of its progress (nothing when it reports none).
                let intervals = result.progress?.intervals ?? []
                let progressStart = result.progress?.clockStart
                conditionMetrics += SaveRestoreMetrics.metrics(
                    times: times, intervals: intervals, progressStart: progressStart, tolerance: spec.tolerance,
                    layer: savePlace.name)
                // The progress timeline on this machine's clock, the outage included (the workload's
                // own `progress.ops_per_sec` is on the guest's clock, which stood still meanwhile).
                if let progressStart,
                    let timeline = SaveRestoreMetrics.hostTimeline(intervals, progressStart: progressStart, times: times)
                {
                    samples.append(
                        timeline.intervals.map {
                            TimelineSample(
                                tMillis: Int64(($0.end * 1000).rounded()), name: "restore.host_progress.ops_per_sec",
                                value: $0.rate)
                        })
                }
                provenance["save_restore"] =
                    spec.mode == .eager
                    ? "\(savePlace.name) saved \(String(format: "%.3f", spec.atSeconds)) s after the workload's start and restored eagerly"
                    : "\(savePlace.name) moved to a new QEMU \(String(format: "%.3f", spec.atSeconds)) s after the workload's start by postcopy migration (lazy: running at once, its pages following)"
            case .failure(let error)?:
                if result.status == .ok { result.status = .failed }
                result.reason = (result.reason.map { $0 + "; " } ?? "") + "condition \(condition.name): \(error)"
            case nil:
                if result.status == .ok { result.status = .failed }
                result.reason =
                    (result.reason.map { $0 + "; " } ?? "")
                    + "condition \(condition.name): the workload ended before the save at \(spec.atSeconds) s: nothing was saved (make it run longer)"
            }
        }
        // The workloads' own timelines, under each member's label as their metrics.
        for (i, other) in results.enumerated() {
            let prefix = colocated || i > 0 ? label(i) : ""
            samples.append(
                other.samples.map { s in
                    var s = s
                    s.name = PreparedCondition.prefixed(s.name, prefix)
                    return s
                })
        }
        // Colocated group: every member's metrics under its label. Copies of one workload
        // (`instances:`): the first as it is, the others under their place's name. Any failure
        // fails the run.
        if colocated {
            result.metrics = []
            result.status = .ok
            result.reason = nil
        }
        for (i, other) in results.enumerated() where colocated || i > 0 {
            let name = label(i)
            result.metrics += other.metrics.map { m in
                var m = m
                m.name = "\(name).\(m.name)"
                m.detail = "\(targets[i].name): " + (m.detail ?? "")
                return m
            }
            if i > 0 { result.invocations += other.invocations }
            if other.status != .ok && result.status == .ok {
                result.status = other.status
                result.reason = "\(name): \(other.reason ?? other.status.rawValue)"
            }
        }
        result.invocations = placement.invocations + result.invocations
        if let lost = placement.lostReason {
            provider.discard(configuration)
            if result.status == .ok { result.status = .failed }
            result.reason = (result.reason.map { $0 + "; " } ?? "") + "the stack died during the run (\(lost))"
            return try store(result)
        }
        result.metrics += conditionMetrics
        let (layerMetrics, layerProvenance) = await placement.state()
        result.metrics += layerMetrics
        provenance.merge(layerProvenance) { $1 }
        return try store(result)
    }

    func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}

/// Whether a run's save/restore began before its workloads ended: one that has not begun by
/// then is skipped (its wait cancelled); one that has is never interrupted.
final class SaveGate: Sendable {
    private enum State { case waiting, saving, skipped }
    private let state = Mutex(State.waiting)
    /// The save may begin (false: the workloads already ended).
    func begin() -> Bool {
        state.withLock {
            if $0 == .waiting { $0 = .saving }
            return $0 == .saving
        }
    }
    /// The workloads ended: true when the save had not begun (it never will).
    func workloadsEnded() -> Bool {
        state.withLock {
            if $0 == .waiting { $0 = .skipped }
            return $0 == .skipped
        }
    }
}

/// Collects timeline samples from the measured launches of one run.
final class SampleBox: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [TimelineSample] = []

    func append(_ s: [TimelineSample]) {
        lock.lock()
        items += s
        lock.unlock()
    }

    var samples: [TimelineSample] {
        lock.lock()
        defer { lock.unlock() }
        return items
    }
}

/// The reboot policy's state: which boot (0-based) each stack configuration is in.
final class BootPlan: @unchecked Sendable {
    private let lock = NSLock()
    private var policy = RepetitionPolicy()
    private var current: [String: Int] = [:]

    func reset(policy: RepetitionPolicy) {
        lock.withLock {
            self.policy = policy
            current = [:]
        }
    }

    /// The boot a planned run belongs in.
    func wanted(_ planned: PlannedRun) -> Int { lock.withLock { policy.bootIndex(repetition: planned.repetition) } }

    /// Whether the configuration's booted stack is an earlier boot than `index`.
    func needsReboot(_ configuration: String, index: Int) -> Bool {
        lock.withLock { current[configuration].map { $0 != index } ?? false }
    }

    func booted(_ configuration: String, index: Int) { lock.withLock { current[configuration] = index } }
}

/// The environment knobs of the experiment being run.
final class EnvironmentKnobs: @unchecked Sendable {
    private let lock = NSLock()
    private var value: [Knob] = []
    func set(_ knobs: [Knob]) { lock.withLock { value = knobs } }
    var knobs: [Knob] { lock.withLock { value } }
}
