import Foundation
import Logging
import NestBenchAnalysis
import NestBenchCollectors
import NestBenchConfig
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess
import NestBenchStats
import NestBenchStore
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
    public let collectors: [any RunCollector]
    let logger: Logger

    public init(
        registry: WorkloadRegistry, platform: LocalPlatform, store: Store,
        collectors: [any RunCollector] = Orchestrator.defaultCollectors, logger: Logger
    ) {
        self.registry = registry
        self.platform = platform
        self.store = store
        self.collectors = collectors
        self.logger = logger
    }

    public static let defaultCollectors: [any RunCollector] = [UsageCollector(), VmstatCollector(), SmapsSampler()]

    /// "20261121-235901-3fa2": sortable, unique enough, easy to type a prefix of.
    public static func newRunID(_ date: Date = Date()) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd-HHmmss"
        return f.string(from: date) + "-" + String(format: "%04x", UInt16.random(in: 0...UInt16.max))
    }

    /// Checks that the experiment can run here without changing anything.
    public func preflight(_ experiment: Experiment) throws(OrchestratorError) {
        let problems = LocalPlatform.preflight(experiment.configurations)
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
        let seed = options.seed ?? experiment.seed ?? UInt64.random(in: 1...UInt64.max)
        var generator = SeededGenerator(seed: seed)
        var plan = Planner.initialPlan(for: experiment, generator: &generator)
        let id = Self.newRunID()
        let record = ExperimentRunRecord(
            id: id, experiment: experiment, filePath: loaded.path, contentHash: loaded.contentHash,
            content: loaded.content, seed: seed, plan: plan, startedAt: Date(), machine: MachineProbe.describe(),
            tags: options.tags)
        try store.begin(record)
        logger.notice("experiment run started", metadata: ["run.id": "\(id)", "run.seed": "\(seed)", "runs": "\(plan.count)"])

        let store = self.store
        let platform = self.platform
        let cleanup = CleanupRegistry.shared.register {
            try? platform.restoreAll()
            try? store.finish(id, status: .interrupted)
        }
        defer { CleanupRegistry.shared.unregister(cleanup) }

        let start = ContinuousClock.now
        var durations: [Double] = []
        var index = 0
        var finalStatus: ExperimentRunRecord.Status = .completed
        do {
            while index < plan.count {
                let planned = plan[index]
                let elapsed = (ContinuousClock.now - start).seconds
                let eta = durations.isEmpty ? nil : Statistics.mean(durations) * Double(plan.count - index)
                progress(Progress(index: index, total: plan.count, planned: planned, elapsedSeconds: elapsed, etaSeconds: eta))
                let runStart = ContinuousClock.now
                let run = try await execute(planned, experiment: experiment, experimentRunID: id, options: options)
                durations.append((ContinuousClock.now - runStart).seconds)
                progress(
                    Progress(
                        index: index, total: plan.count, planned: planned,
                        elapsedSeconds: (ContinuousClock.now - start).seconds, etaSeconds: nil, finished: run))
                index += 1
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
            finalStatus = .failed
            try? platform.restoreAll()
            try? store.finish(id, status: finalStatus)
            throw error
        }
        try platform.restoreAll()
        try store.finish(id, status: finalStatus)
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
    func execute(_ planned: PlannedRun, experiment: Experiment, experimentRunID: String, options: RunOptions)
        async throws -> RunRecord
    {
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

        let readBack = try platform.activate(configuration)
        for (path, value) in readBack { provenance["knob:\(path)"] = value }
        provenance["platform"] = configuration.platform.rawValue
        if !workload.cpus.isEmpty { provenance["pinning"] = CPUList.format(workload.cpus) }

        if condition.fragmentation != nil {
            return try store(
                WorkloadResult(
                    status: .unavailable,
                    reason:
                        "condition \(condition.name): fragmentation injection is not supported by this version of nestbench yet"))
        }
        guard let adapter = registry.adapter(for: workload.suite) else {
            return try store(WorkloadResult(status: .unavailable, reason: "no adapter for suite \(workload.suite)"))
        }
        if let reason = adapter.unavailableReason(for: workload) {
            return try store(WorkloadResult(status: .unavailable, reason: reason))
        }
        let directory =
            "\(options.resultsDirectory)/artifacts/\(experimentRunID)/"
            + "\(planned.sequence)-\(planned.configuration)-\(planned.workload)-\(planned.condition)-r\(planned.repetition)"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw OrchestratorError("\(directory): cannot create the run directory (\(error))")
        }
        provenance["run_directory"] = directory

        let collectors = self.collectors
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
        let result = await adapter.run(workload, context: context)
        return try store(result, samples: samplesBox.samples)
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
