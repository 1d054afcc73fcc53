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

    public init(resultsDirectory: String, seed: UInt64? = nil, tags: [String: String] = [:], fixedRepetitions: Bool = false) {
        self.resultsDirectory = resultsDirectory
        self.seed = seed
        self.tags = tags
        self.fixedRepetitions = fixedRepetitions
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
    let logger: Logger

    public init(
        registry: WorkloadRegistry, platform: LocalPlatform, store: Store,
        collectors: [any RunCollector]? = nil, harness: HarnessLocator = HarnessLocator(),
        vmPlatform: QemuPlatform? = nil, logger: Logger
    ) {
        self.registry = registry
        self.platform = platform
        self.store = store
        self.collectors = collectors
        self.harness = harness
        self.vmPlatform = vmPlatform
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

    /// A configuration as the local platform applies it: with hardware virtualization a stack's
    /// L0 is this machine, and its settings are this machine's knobs.
    func onThisMachine(_ configuration: Configuration) -> Configuration {
        configuration.thisMachine(l0IsThisMachine: vmPlatform.map { !$0.virtualization.isEmulated } ?? false)
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

    /// Runs the experiment; returns the experiment run id. Throws only for failures that stop it
    /// (the store, the platform); a workload failing is a stored run.
    public func run(
        _ loaded: LoadedExperiment, options: RunOptions,
        progress: @escaping @Sendable (Progress) -> Void = { _ in }
    ) async throws -> String {
        let experiment = loaded.experiment
        try preflight(experiment)
        let id = Self.newRunID()
        let usesVMs = experiment.configurations.contains { $0.platform == .qemu }
        var machine = MachineProbe.describe()
        if usesVMs {
            guard let vmPlatform else {
                throw OrchestratorError("the experiment has qemu configurations but the qemu platform is not set up")
            }
            if case .emulated(let reason) = vmPlatform.virtualization {
                machine.extra["warning"] = HostVirtualization.emulatedNote
                machine.extra["virtualization"] = "emulated host: \(reason)"
            } else {
                machine.extra["virtualization"] = "hardware"
            }
            let problems = await vmPlatform.preflight(
                experiment.configurations, artifacts: "\(options.resultsDirectory)/artifacts/\(id)")
            if !problems.isEmpty { throw OrchestratorError(problems.joined(separator: "\n")) }
        }
        let seed = options.seed ?? experiment.seed ?? UInt64.random(in: 1...UInt64.max)
        var generator = SeededGenerator(seed: seed)
        var plan = Planner.initialPlan(for: experiment, generator: &generator)
        let record = ExperimentRunRecord(
            id: id, experiment: experiment, filePath: loaded.path, contentHash: loaded.contentHash,
            content: loaded.content, seed: seed, plan: plan, startedAt: Date(), machine: machine,
            tags: options.tags)
        try store.begin(record)
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
        var index = 0
        do {
            while index < plan.count {
                if let signal = cancellation.signal { throw Interrupted(signal: signal) }
                let planned = plan[index]
                let elapsed = (ContinuousClock.now - start).seconds
                let eta = durations.isEmpty ? nil : Statistics.mean(durations) * Double(plan.count - index)
                progress(Progress(index: index, total: plan.count, planned: planned, elapsedSeconds: elapsed, etaSeconds: eta))
                let runStart = ContinuousClock.now
                var run = try await execute(
                    planned, experiment: experiment, experimentRunID: id, options: options, collectors: collectors)
                if cancellation.isRequested && run.status != .ok {
                    // Its workload (or condition) was stopped by the signal: not a failure of the run.
                    run.status = .interrupted
                    run.reason = "interrupted by signal \(cancellation.signal ?? 0)" + (run.reason.map { " (\($0))" } ?? "")
                    try store.updateRunStatus(id, sequence: planned.sequence, status: .interrupted, reason: run.reason)
                }
                durations.append((ContinuousClock.now - runStart).seconds)
                progress(
                    Progress(
                        index: index, total: plan.count, planned: planned,
                        elapsedSeconds: (ContinuousClock.now - start).seconds, etaSeconds: nil, finished: run))
                index += 1
                if let signal = cancellation.signal { throw Interrupted(signal: signal) }
                if index == plan.count && !options.fixedRepetitions {
                    let more = followUp(experiment: experiment, runs: try store.runs(of: id), plan: plan, generator: &generator)
                    if !more.isEmpty {
                        plan += more
                        try store.updatePlan(id, plan: plan)
                        logger.info("adaptive repetitions", metadata: ["runs.added": "\(more.count)"])
                    }
                }
            }
        } catch {
            let status: ExperimentRunRecord.Status = cancellation.isRequested ? .interrupted : .failed
            vmPlatform?.teardownAll()
            ChildRegistry.shared.killAll()
            let restoreError = Result { try platform.restoreAll() }
            try? store.finish(id, status: status)
            if let signal = cancellation.signal {
                if case .failure(let e) = restoreError { throw OrchestratorError("interrupted by signal \(signal); \(e)") }
                throw Interrupted(signal: signal)
            }
            throw error
        }
        vmPlatform?.teardownAll()
        try platform.restoreAll()
        // An experiment none of whose runs could run has no data: not `completed`.
        let runs = try store.runs(of: id)
        let ranAny = runs.contains { $0.status == .ok || $0.status == .failed }
        try store.finish(id, status: ranAny ? .completed : .nothingRan)
        return id
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

    /// One planned run: configure, run the workload with collectors, store the record.
    func execute(
        _ planned: PlannedRun, experiment: Experiment, experimentRunID: String, options: RunOptions,
        collectors: [any RunCollector]
    ) async throws -> RunRecord {
        let started = Date()
        var provenance: [String: String] = [:]
        guard let configuration = experiment.configuration(named: planned.configuration),
            let workload = experiment.workload(labeled: planned.workload),
            let condition = experiment.condition(named: planned.condition)
        else { throw OrchestratorError("the plan names a cell the experiment does not have: \(planned)") }

        func store(_ result: WorkloadResult, samples: [TimelineSample] = []) throws -> RunRecord {
            let record = RunRecord(
                experimentRunID: experimentRunID, planned: planned, status: result.status, reason: result.reason,
                startedAt: started, endedAt: Date(), invocations: result.invocations, exitStatus: result.exitStatus,
                signal: result.signal, metrics: result.metrics, provenance: provenance, outputTail: result.outputTail)
            try self.store.record(record, samples: samples.map { ($0.tMillis, $0.name, $0.value) })
            return record
        }

        let readBack = try platform.activate(onThisMachine(configuration))
        for (path, value) in readBack { provenance["knob:\(path)"] = value }
        provenance["platform"] = configuration.platform.rawValue
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
        if workload.colocated != nil && configuration.platform != .qemu {
            return try store(
                WorkloadResult(
                    status: .unavailable,
                    reason:
                        "\(workload.label): colocated workloads run in separate guests of a stack; configuration \(configuration.name) is not a qemu configuration"
                ))
        }
        let adapter = members[0].1
        let directory =
            "\(options.resultsDirectory)/artifacts/\(experimentRunID)/"
            + "\(planned.sequence)-\(planned.configuration)-\(planned.workload)-\(planned.condition)-r\(planned.repetition)"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw OrchestratorError("\(directory): cannot create the run directory (\(error))")
        }
        provenance["run_directory"] = directory

        if configuration.platform == .qemu {
            return try await executeInStack(
                planned, configuration: configuration, members: members, colocated: workload.colocated != nil,
                condition: condition, experimentRunID: experimentRunID, options: options, provenance: provenance,
                started: started, perf: (experiment.collectors ?? CollectorSettings()).perf)
        }
        if let layer = condition.fragmentation?.layer, layer != "host" {
            return try store(
                WorkloadResult(
                    status: .unavailable,
                    reason:
                        "condition \(condition.name): fragmentation.layer \(layer) names a VM layer; configuration \(configuration.name) runs on this machine (platform local)"
                ))
        }
        // The condition: a compacted start, then fragmentation injected after the configuration,
        // held during the workload.
        let prepared: PreparedCondition
        do {
            prepared = try await prepareOnThisMachine(condition, configuration: configuration, directory: directory)
        } catch {
            return try store(WorkloadResult(status: .failed, reason: "condition \(condition.name): \(error)"))
        }
        provenance.merge(prepared.provenance) { $1 }

        let samplesBox = SampleBox()
        let context = WorkloadContext(
            runDirectory: directory, logger: logger,
            launchMeasured: { spec throws(ProcessError) in
                let child = try ProcessRunner.start(spec)
                let sessions = collectors.map { $0.attach(pid: child.pid) }
                do throws(ProcessError) {
                    try child.release()
                } catch {
                    _ = child.waitBlocking()
                    throw error
                }
                sessions.forEach { $0.started() }
                let outcome = await child.wait()
                var metrics: [Metric] = []
                for session in sessions {
                    let (m, s) = session.finish(outcome)
                    metrics += m
                    samplesBox.append(s)
                }
                return MeasuredOutcome(outcome: outcome, metrics: metrics)
            },
            startHelper: { spec throws(ProcessError) in
                let child = try ProcessRunner.start(spec)
                try child.release()
                return child
            })
        var result = await adapter.run(workload, context: context)
        result.metrics += prepared.metrics
        if let fragmentation = prepared.fragmentation {
            let (metrics, samples, extra) = await fragmentation.finish()
            result.metrics += metrics
            samplesBox.append(samples)
            provenance.merge(extra) { $1 }
        }
        return try store(result, samples: samplesBox.samples)
    }
}

extension Orchestrator {
    /// A run in the innermost guest(s) of a configuration's stack (booted on first use and kept
    /// for the following runs of the configuration). A stack that fails to boot or dies is a
    /// failed run with the reason; the experiment goes on and the next run boots it afresh.
    func executeInStack(
        _ planned: PlannedRun, configuration requested: Configuration, members: [(WorkloadSpec, any WorkloadAdapter)],
        colocated: Bool, condition: Condition, experimentRunID: String, options: RunOptions,
        provenance initial: [String: String], started: Date, perf: PerfSettings
    ) async throws -> RunRecord {
        var provenance = initial
        let artifacts = "\(options.resultsDirectory)/artifacts/\(experimentRunID)"
        var samples: [TimelineSample] = []
        func store(_ result: WorkloadResult) throws -> RunRecord {
            let record = RunRecord(
                experimentRunID: experimentRunID, planned: planned, status: result.status, reason: result.reason,
                startedAt: started, endedAt: Date(), invocations: result.invocations, exitStatus: result.exitStatus,
                signal: result.signal, metrics: result.metrics, provenance: provenance, outputTail: result.outputTail)
            try self.store.record(record, samples: samples.map { ($0.tMillis, $0.name, $0.value) })
            return record
        }
        guard let vmPlatform else { throw OrchestratorError("the qemu platform is not set up") }
        // A colocated group runs in a stack whose innermost layer is one guest per member.
        guard let configuration = colocated ? requested.colocating(members.count) : requested else {
            return try store(
                WorkloadResult(
                    status: .unavailable,
                    reason:
                        "\(planned.workload): configuration \(requested.name)'s innermost layer has instances: \(requested.layers.last?.instances ?? 0); \(members.count) colocated workloads need 1 (split evenly) or \(members.count)"
                ))
        }
        if colocated { provenance["colocation"] = "\(members.count) guests: " + members.map(\.0.label).joined(separator: ", ") }
        if case .emulated(let reason) = vmPlatform.virtualization {
            provenance["virtualization"] = "emulated host (\(reason)): functional only"
        }
        let stack: QemuStack
        do {
            stack = try await vmPlatform.stack(for: configuration, artifacts: absolute(artifacts))
        } catch {
            provenance["stack_directory"] = absolute(artifacts) + "/vm"
            logger.error("stack failed to boot", metadata: ["configuration": "\(configuration.name)", "error": "\(error)"])
            return try store(WorkloadResult(status: .failed, reason: "VM boot failed: \(error.description)"))
        }
        provenance["stack_directory"] = stack.directory
        var invocations: [Invocation] = []
        for layer in stack.layers {
            provenance["\(layer.name).console"] = layer.consoleLog
            provenance["\(layer.name).kernel"] = layer.kernelRelease
            for (vcpu, cpus) in layer.pinning { provenance["\(layer.name).vcpu\(vcpu).cpus"] = CPUList.format(cpus) }
            for (path, value) in layer.knobs { provenance["\(layer.name).knob:\(path)"] = value }
            invocations.append(
                Invocation(
                    argv: layer.argv, environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"],
                    workingDirectory: layer.parent.map { stack.layers[$0].name } ?? "host", cpus: []))
        }
        let targets = stack.workloadLayers.map { stack.layers[$0] }
        // Member i runs in guest i: checked before anything indexes members by guest.
        if colocated && targets.count != members.count {
            return try store(
                WorkloadResult(
                    status: .failed,
                    reason: "\(members.count) colocated workloads but \(targets.count) innermost guests in the stack"))
        }
        // The condition, in the layer it names (default: where the workload runs); with several
        // innermost guests, in each, its metrics under the guest's member label (or layer name).
        let prepared: [(prefix: String, condition: PreparedCondition)]
        do {
            prepared = try await prepareInStack(
                condition, stack: stack,
                workloadLayers: targets.enumerated().map { i, t in (t.name, colocated ? members[i].0.label : t.name) },
                configuration: configuration,
                runTag: "\(planned.sequence)-\(planned.workload)-\(planned.condition)-r\(planned.repetition)",
                artifacts: absolute(artifacts))
        } catch {
            if !stack.alive { vmPlatform.discard(configuration.name) }
            return try store(WorkloadResult(status: .failed, reason: "condition \(condition.name): \(error)"))
        }
        for (prefix, p) in prepared {
            for (key, value) in p.provenance { provenance[PreparedCondition.prefixed(key, prefix)] = value }
        }
        let counters = GuestCounters(stack: stack, settings: perf)
        let results = await withTaskGroup(of: (Int, WorkloadResult).self) { group in
            for (i, layer) in targets.enumerated() {
                group.addTask {
                    let directory =
                        "\(layer.agent.spool)/runs/\(planned.sequence)-\(planned.workload)-\(planned.condition)-r\(planned.repetition)"
                    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                    let context = WorkloadContext(
                        runDirectory: directory, logger: self.logger,
                        launchMeasured: { spec throws(ProcessError) in
                            let (outcome, metrics) = try await QemuPlatform.launch(spec, in: layer, stack: stack)
                            return MeasuredOutcome(outcome: outcome, metrics: metrics)
                        },
                        startHelper: { spec throws(ProcessError) in
                            throw ProcessError(
                                program: spec.program, message: "helper processes in guests are not supported yet", errno: nil)
                        })
                    let (workload, adapter) = colocated ? members[i] : members[0]
                    return (i, await adapter.run(workload, context: context))
                }
            }
            var all: [(Int, WorkloadResult)] = []
            for await r in group { all.append(r) }
            return all.sorted { $0.0 < $1.0 }.map(\.1)
        }
        for (i, layer) in targets.enumerated() {
            provenance["run_directory" + (i == 0 ? "" : ".\(layer.name)")] =
                "\(layer.agent.spool)/runs/\(planned.sequence)-\(planned.workload)-\(planned.condition)-r\(planned.repetition)"
        }
        // Counters stop, the fragmenter releases its memory and the condition's knobs go back,
        // whatever the workload's outcome.
        var conditionMetrics = counters.finish()
        var restoreFailures: [String] = []
        for (prefix, p) in prepared {
            var metrics = p.metrics
            if let fragmentation = p.fragmentation {
                let (fragmentMetrics, fragmentSamples, extra) = await fragmentation.finish()
                metrics += fragmentMetrics
                samples += fragmentSamples.map { s in
                    var s = s
                    s.name = PreparedCondition.prefixed(s.name, prefix)
                    return s
                }
                for (key, value) in extra { provenance[PreparedCondition.prefixed(key, prefix)] = value }
            }
            conditionMetrics += metrics.map { m in
                var m = m
                m.name = PreparedCondition.prefixed(m.name, prefix)
                return m
            }
            if stack.alive, let failures = await p.restore() { restoreFailures += failures }
        }
        if !restoreFailures.isEmpty {
            // The stack keeps a knob the next run does not expect: boot it afresh next time.
            logger.warning("condition knobs not restored in the stack", metadata: ["failures": "\(restoreFailures)"])
            provenance["condition.restore"] = restoreFailures.joined(separator: "; ")
            vmPlatform.discard(configuration.name)
        }
        guard var result = results.first else {
            return try store(WorkloadResult(status: .failed, reason: "the stack has no guest to run the workload in"))
        }
        // Colocated group: every member's metrics under its label. Copies of one workload
        // (`instances:`): the first as it is, the others under their layer's name. Any failure
        // fails the run.
        if colocated {
            result.metrics = []
            result.status = .ok
            result.reason = nil
        }
        for (i, other) in results.enumerated() where colocated || i > 0 {
            let name = colocated ? members[i].0.label : targets[i].name
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
        result.invocations = invocations + result.invocations
        if !stack.alive {
            vmPlatform.discard(configuration.name)
            if result.status == .ok { result.status = .failed }
            result.reason = (result.reason.map { $0 + "; " } ?? "") + "the stack died during the run"
            return try store(result)
        }
        result.metrics += conditionMetrics
        let (layerMetrics, layerProvenance) = await QemuPlatform.layerState(stack)
        result.metrics += layerMetrics
        provenance.merge(layerProvenance) { $1 }
        if result.status != .ok && result.reason?.contains("did not answer") == true {
            vmPlatform.discard(configuration.name)
        }
        return try store(result)
    }

    func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
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
