import ArgumentParser
import Foundation
import NestBenchAnalysis
import NestBenchModel
import NestBenchStore

/// Thresholds shared by `compare` and `nightly`.
struct ThresholdOptions: ParsableArguments {
    @Option(
        name: .customLong("threshold"),
        help: "Relative threshold: 5% (default for judged metrics) or METRIC=PCT[:higher|lower], e.g. ops_per_sec=3%; repeatable."
    )
    var thresholds: [String] = []

    @Option(name: .customLong("thresholds"), help: "A file of 'metric: 5% [higher|lower]' lines ('default: 3%').")
    var thresholdsFile: String?

    @Flag(help: "Judge every metric with a polarity (default: the primary metric and the metrics given thresholds).")
    var allMetrics = false

    @Option(name: .customLong("metric"), help: "Judge only this metric (repeatable); the others are reported.")
    var metrics: [String] = []

    @Flag(help: "Exit 4 when there are improvements and no regression.")
    var failOnImprovement = false

    func thresholdSet(defaultRelative: Double? = nil) throws -> ThresholdSet {
        var set = ThresholdSet(allMetrics: allMetrics, only: metrics.isEmpty ? nil : Set(metrics))
        if let d = defaultRelative { set.defaultRelative = d }
        do {
            if let path = thresholdsFile {
                let text: String
                do {
                    text = try InputFile.text(path, limit: 16 << 20)
                } catch {
                    throw CommandFailure(code: ExitCodes.error, message: "\(error.description) (the thresholds file)")
                }
                let fromFile = try ThresholdSet.parseFile(text, path: path)
                set.perMetric = fromFile.perMetric
                if fromFile.fileSetsDefault { set.defaultRelative = fromFile.defaultRelative }
            }
            for t in thresholds {
                let (metric, threshold) = try ThresholdSet.parse(t, source: "--threshold")
                if let metric { set.perMetric[metric] = threshold } else { set.defaultRelative = threshold.relative }
            }
        } catch let e as ThresholdError {
            throw CommandFailure(code: ExitCodes.error, message: e.description)
        }
        return set
    }
}

/// Opens the store and resolves run references, mapping "not there" to exit 5.
struct StoreAccess {
    var options: ResultsOptions
    /// Also use experiment runs that are not `completed` (interrupted, killed, failed, …).
    var includeIncomplete = false

    func store() throws -> Store {
        guard FileManager.default.fileExists(atPath: options.databasePath) else {
            throw CommandFailure(
                code: ExitCodes.baselineNotFound,
                message: "\(options.databasePath): no result store here (run an experiment first, or pass --results DIR)")
        }
        return try options.openStore()
    }

    func record(_ reference: String, in store: Store) throws -> ExperimentRunRecord {
        guard let id = try store.resolve(reference), let record = try store.experimentRun(id) else {
            throw CommandFailure(
                code: ExitCodes.baselineNotFound,
                message: "no run \"\(reference)\" in \(options.databasePath) (nestbench list shows the stored runs)")
        }
        guard record.status.isComplete || includeIncomplete else {
            throw CommandFailure(
                code: ExitCodes.error,
                message:
                    "experiment run \(record.id) is \(record.status.rawValue), not completed: its data is incomplete; pass --include-incomplete to use it anyway"
            )
        }
        return record.declared()
    }

    /// The experiment runs of campaign `id` pooled (`--campaign`): completed ones unless
    /// `--include-incomplete` (the others named on stderr); exit 5 when it has none.
    func campaign(_ id: String, in store: Store) throws -> Campaign {
        let ids = try store.campaign(id)
        var records: [ExperimentRunRecord] = []
        var left: [String] = []
        for runID in ids {
            guard let record = try store.experimentRun(runID) else { continue }
            if record.status.isComplete || includeIncomplete {
                records.append(record.declared())
            } else {
                left.append("\(record.id) (\(record.status.rawValue))")
            }
        }
        if !left.isEmpty {
            Console.error(
                "nestbench: left out \(left.count) experiment run\(left.count == 1 ? "" : "s") of campaign \(id) that did not complete: \(left.joined(separator: ", ")); --include-incomplete uses them"
            )
        }
        guard !records.isEmpty else {
            throw CommandFailure(
                code: ExitCodes.baselineNotFound,
                message:
                    "no \(ids.isEmpty ? "" : "completed ")experiment run of campaign \"\(id)\" in \(options.databasePath) (nestbench list shows campaigns)"
            )
        }
        if let problem = Campaign.problem(records) {
            throw CommandFailure(code: ExitCodes.error, message: "campaign \(id): \(problem)")
        }
        var runs: [String: [RunRecord]] = [:]
        for record in records { runs[record.id] = try store.runs(of: record.id) }
        return Campaign(id: id, records: records, runs: runs)
    }

    /// "left out 2 incomplete experiment runs of micro: 2026… (interrupted), …" on stderr.
    func sayLeftOut(experiment: String, in store: Store) {
        guard !includeIncomplete, let left = try? store.incomplete(experiment: experiment), !left.isEmpty else { return }
        let list = left.prefix(5).map { "\($0.id) (\($0.status))" }.joined(separator: ", ") + (left.count > 5 ? ", …" : "")
        Console.error(
            "nestbench: left out \(left.count) experiment run\(left.count == 1 ? "" : "s") of \(experiment) that did not complete: \(list); --include-incomplete uses them"
        )
    }
}

/// `--include-incomplete` for the commands that read stored results.
struct IncompleteOption: ParsableArguments {
    @Flag(
        help:
            "Also use experiment runs that did not complete (interrupted, killed, failed, nothing ran) and the runs they finished; by default they are left out and named on stderr."
    )
    var includeIncomplete = false
}

struct CompareCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare two configurations of one run, or one configuration across two runs (kernel A vs B).",
        discussion: """
            Per (workload, condition, metric): the candidate's ratio to the baseline with its CI and p-value. \
            A judged metric is a regression (improvement) when the change is significant and at least its \
            threshold in the bad (good) direction of its polarity. Exit codes: 0 no significant change, \
            2 regression, 4 improvements only (with --fail-on-improvement), 1 error, 5 baseline not found.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var resultsOptions: ResultsOptions
    @OptionGroup var thresholdOptions: ThresholdOptions
    @OptionGroup var incomplete: IncompleteOption

    @Argument(
        help:
            "One run (compare two of its configurations) or two runs: BASELINE_RUN CANDIDATE_RUN; with --by, the experiment (default: the latest run's)."
    )
    var runs: [String] = []

    @Option(help: "Compare the runs of two values of this tag per configuration (kernel, L2.kernel, commit, …).")
    var by: String?

    @Option(name: .customLong("a"), help: "With --by: the baseline value (default: the second most recent).")
    var valueA: String?

    @Option(name: .customLong("b"), help: "With --by: the candidate value (default: the most recent).")
    var valueB: String?

    @Option(help: "Baseline configuration (default: the experiment's baseline).")
    var baseline: String?

    @Option(help: "Candidate configuration (default: with one run, the only other configuration; with two, the baseline's).")
    var candidate: String?

    @Option(help: "table or json.")
    var format: TableOrJSON = .table

    @Option(help: "Compare two configurations over every experiment run (shard) of this campaign, pooled.")
    var campaign: String?

    func validate() throws {
        if campaign != nil {
            guard runs.isEmpty && by == nil else { throw ValidationError("--campaign replaces the run ids and --by") }
            guard valueA == nil && valueB == nil else { throw ValidationError("--a and --b go with --by TAG") }
        } else if by != nil {
            guard runs.count <= 1 else { throw ValidationError("with --by, give at most the experiment's name") }
            guard baseline == nil && candidate == nil else {
                throw ValidationError("--by compares each configuration with itself: drop --baseline/--candidate")
            }
        } else {
            guard (1...2).contains(runs.count) else { throw ValidationError("give one run id or two") }
            guard valueA == nil && valueB == nil else { throw ValidationError("--a and --b go with --by TAG") }
        }
    }

    func run() async throws {
        _ = global.makeLogger()
        let thresholds = try thresholdOptions.thresholdSet()
        let access = StoreAccess(options: resultsOptions, includeIncomplete: incomplete.includeIncomplete)
        let store = try access.store()
        if let by {
            try compareByTag(by, thresholds: thresholds, access: access, store: store)
            return
        }
        let pooled = try campaign.map { try access.campaign($0, in: store) }
        let baseRecord = try pooled?.record ?? access.record(runs[0], in: store)
        let candRecord = runs.count == 2 ? try access.record(runs[1], in: store) : baseRecord
        let runsOf = { (id: String) throws -> [RunRecord] in try pooled?.runs ?? store.runs(of: id) }
        let baseConfig = baseline ?? baseRecord.experiment.baseline
        if baseRecord.experiment.configuration(named: baseConfig) == nil {
            throw CommandFailure(
                code: ExitCodes.baselineNotFound,
                message:
                    "run \(baseRecord.id) has no configuration \"\(baseConfig)\" (it has: \(baseRecord.experiment.configurations.map(\.name).joined(separator: ", ")))"
            )
        }
        let candConfig: String
        if let candidate {
            candConfig = candidate
        } else if runs.count == 2 {
            candConfig = baseConfig
        } else {
            let others = baseRecord.experiment.configurations.map(\.name).filter { $0 != baseConfig }
            guard others.count == 1 else {
                throw CommandFailure(
                    code: ExitCodes.error,
                    message:
                        "run \(baseRecord.id) has configurations \(others.joined(separator: ", ")) besides \(baseConfig): name one with --candidate"
                )
            }
            candConfig = others[0]
        }
        for (record, config) in [(baseRecord, baseConfig), (candRecord, candConfig)]
        where record.experiment.configuration(named: config) == nil {
            throw CommandFailure(
                code: ExitCodes.baselineNotFound,
                message:
                    "run \(record.id) has no configuration \"\(config)\" (it has: \(record.experiment.configurations.map(\.name).joined(separator: ", ")))"
            )
        }
        let baseRuns = try runsOf(baseRecord.id).filter { $0.planned.configuration == baseConfig }
        let candRuns = try runsOf(candRecord.id).filter { $0.planned.configuration == candConfig }
        guard baseRuns.contains(where: { $0.status == .ok }) else {
            throw CommandFailure(
                code: ExitCodes.baselineNotFound, message: "run \(baseRecord.id) has no successful runs of \(baseConfig)")
        }
        var primary: Set<String> = []
        for w in baseRecord.experiment.workloads + candRecord.experiment.workloads {
            if let m = Comparator.primaryMetric(for: w, in: candRecord.experiment) { primary.insert(m) }
        }
        let result = ABComparator.compare(
            baseline: baseRuns, candidate: candRuns, baselineLabel: "\(baseRecord.id):\(baseConfig)",
            candidateLabel: "\(candRecord.id):\(candConfig)", thresholds: thresholds, primary: primary,
            alpha: candRecord.experiment.analysis.alpha, experiment: candRecord.experiment)
        Console.out(format == .json ? try Self.json(result) : Self.table(result))
        let code = result.outcome.exitCode(failOnImprovement: thresholdOptions.failOnImprovement)
        if code != ExitCodes.ok {
            throw CommandFailure(code: code, message: "")
        }
    }

    /// Pretty JSON; an encoding failure is an error (exit 1), never an empty object.
    static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        do {
            return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: "could not encode the result as JSON: \(error)")
        }
    }

    static func table(_ r: ABComparison) -> String {
        var out = "baseline \(r.baseline) vs candidate \(r.candidate)\n"
        for v in r.verdicts {
            let ratio = v.ratio.map { String(format: "%.3f", $0) } ?? "n/a"
            let ci = v.ratioCI.map { String(format: " [%.3f, %.3f]", $0[0], $0[1]) } ?? ""
            let p = v.pValue.map { String(format: " p=%.4g", $0) } ?? ""
            let t = v.threshold.map { String(format: " (threshold %.3g%%)", $0 * 100) } ?? ""
            out +=
                "\(v.verdict.padding(toLength: 11, withPad: " ", startingAt: 0)) \(v.workload) / \(v.condition) / \(v.metric): "
                + "ratio \(ratio)\(ci)\(p) n=\(v.n)/\(v.nBaseline)\(t)\n"
        }
        for n in r.notes { out += "note: \(n)\n" }
        out += "outcome: \(r.outcome.rawValue)\n"
        return out
    }
}
