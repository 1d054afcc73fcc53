import ArgumentParser
import Foundation
import NestBenchAnalysis
import NestBenchModel
import NestBenchStats
import NestBenchStore

struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Stored results over time per (workload, configuration, condition, metric), with each run's tags.",
        discussion: """
            --html FILE writes one self-contained page (inline SVG, no scripts): per workload × configuration \
            × condition, the primary metric's time series with each run's CI, the change points nightly finds, \
            the last stable segment's band and the latest run's verdict, regressions first.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var resultsOptions: ResultsOptions
    @OptionGroup var incomplete: IncompleteOption

    @Argument(help: "Experiment name (default: the latest run's).")
    var experiment: String?

    @Option(help: "Only this workload.") var workload: String?
    @Option(help: "Only this configuration.") var configuration: String?
    @Option(help: "Only this condition.") var condition: String?
    @Option(help: "Only this metric.") var metric: String?
    @Option(name: .customLong("tag"), help: "Only runs with this tag, key=value (automatic or --tag'ed); repeatable.")
    var tags: [String] = []
    @Option(help: "One series per value of this tag (e.g. kernel, L2.kernel, testbed).") var by: String?

    @Option(help: "table, json or csv.")
    var format: TableJSONOrCSV = .table
    @Option(help: "Write the history page (HTML) to this file.") var html: String?

    @Option(help: "Page: E-divisive window length, as nightly.") var window: Int = 50
    @Option(help: "Page: maximum p-value of a change point and of the gate, as nightly.") var p: Double = 0.001
    @Option(help: "Page: minimum relative change of a change point and the gate's threshold, as nightly.")
    var minChange: String = "5%"
    @Option(help: "Page: fewest points of the last stable segment the gate needs, as nightly.") var minHistory: Int = 3

    @Option(help: "Only the experiment runs (shards) of this campaign.") var campaign: String?

    func validate() throws {
        if let bad = RunTags.parseFilters(tags).bad { throw ValidationError("--tag takes key=value, found \"\(bad)\"") }
        guard window >= 4 else { throw ValidationError("--window must be at least 4") }
        guard p > 0 && p < 1 else { throw ValidationError("--p must be in (0, 1)") }
    }

    func run() async throws {
        _ = global.makeLogger()
        let access = StoreAccess(options: resultsOptions, includeIncomplete: incomplete.includeIncomplete)
        let store = try access.store()
        // The latest run's declarations, whatever its status; the history is filtered below.
        let latest = try StoreAccess(options: resultsOptions, includeIncomplete: true).record("latest", in: store)
        let name = experiment ?? latest.experiment.name
        access.sayLeftOut(experiment: name, in: store)
        // The centers of the latest run of this experiment (its declarations).
        let declaring = latest.experiment.name == name ? latest.experiment : nil
        let filters = RunTags.parseFilters(tags).filters
        let inCampaign = try campaign.map { Set(try store.campaign($0)) }
        if let campaign, inCampaign?.isEmpty == true {
            throw CommandFailure(
                code: ExitCodes.baselineNotFound,
                message: "no experiment run of campaign \"\(campaign)\" in \(resultsOptions.databasePath)")
        }
        let rows = try store.history(experiment: name, includeIncomplete: incomplete.includeIncomplete).filter { r in
            (inCampaign?.contains(r.experimentRunID) ?? true) && RunTags.matches(r.tags, filters)
                && (workload == nil || r.cell.workload == workload)
                && (configuration == nil || r.cell.configuration == configuration)
                && (condition == nil || r.cell.condition == condition) && (metric == nil || r.metric == metric)
        }
        guard !rows.isEmpty else {
            throw CommandFailure(code: ExitCodes.baselineNotFound, message: "no stored results for experiment \"\(name)\" match")
        }
        if let html {
            let minimum: Double
            do {
                minimum = try ThresholdSet.parse(minChange, source: "--min-change").1.relative
            } catch {
                throw CommandFailure(code: ExitCodes.error, message: error.description)
            }
            let settings = NightlySettings(
                detector: ChangePointDetector(windowLength: window, maxPValue: p, minMagnitude: minimum),
                thresholds: ThresholdSet(defaultRelative: minimum), gatePValue: p, minSegment: minHistory)
            let primary = try Self.primaryMetrics(experiment: name, workloads: Set(rows.map(\.cell.workload)), store: store)
            let panels = HistoryPage.panels(rows, primary: primary, settings: settings, groupBy: by, experiment: declaring)
            let page = HistoryPage.render(panels, experiment: name, filters: filters, groupBy: by, settings: settings)
            guard FileManager.default.createFile(atPath: html, contents: Data(page.utf8)) else {
                throw CommandFailure(code: ExitCodes.error, message: "\(html): cannot write the history page")
            }
            Console.error("nestbench: history page of \(name) (\(panels.count) series) written to \(html)")
            return
        }
        let groups = HistoryPage.grouped(rows, by: by).map { ($0.group, Nightly.series($0.rows, experiment: declaring)) }
        let f = ISO8601DateFormatter()
        switch format {
        case .json:
            if by == nil {
                Console.out(try CompareCommand.json(groups[0].1))
            } else {
                struct Group: Encodable {
                    var group: String
                    var series: [HistorySeries]
                }
                Console.out(try CompareCommand.json(groups.map { Group(group: $0.0 ?? "", series: $0.1) }))
            }
        case .csv:
            let header =
                (by == nil ? [] : ["group"]) + [
                    "workload", "condition", "configuration", "metric", "unit", "center", "run_id", "started_at", "tags",
                    "value", "n",
                ]
            let lines = groups.flatMap { group, series in
                series.flatMap { s in
                    s.points.map { p in
                        (group.map { [$0] } ?? []) + [
                            s.key.workload, s.key.condition, s.key.configuration, s.key.metric, s.unit, s.center, p.runID,
                            f.string(from: p.startedAt), RunTags.describe(p.tags), String(p.value), String(p.n),
                        ]
                    }
                }
            }
            Console.out(CSVText.render(header: header, rows: lines))
        case .table:
            var out = ""
            for (group, series) in groups {
                for s in series {
                    out +=
                        "\(s.key.workload) / \(s.key.condition) / \(s.key.configuration) / \(s.key.metric) [\(s.unit), \(s.center) of runs]"
                        + (group.map { " [\($0)]" } ?? "") + "\n"
                    for p in s.points {
                        out +=
                            "  \(f.string(from: p.startedAt))  \(p.runID)  \(String(format: "%.6g", p.value))  n=\(p.n)  "
                            + "\(RunTags.describe(p.tags.filter { !RunTags.isVerbose($0.key) }))\n"
                    }
                }
            }
            Console.out(out)
        }
    }

    /// Workload label → its primary metric, from the newest stored definition of the experiment
    /// that has the workload (workloads that declare none are not drawn).
    static func primaryMetrics(experiment: String, workloads: Set<String>, store: Store) throws -> [String: String] {
        var result: [String: String] = [:]
        var seen: Set<String> = []
        for summary in try store.list() where summary.experiment == experiment {
            guard let record = try store.experimentRun(summary.id) else { continue }
            for w in record.experiment.workloads where workloads.contains(w.label) && !seen.contains(w.label) {
                seen.insert(w.label)
                result[w.label] = HistoryPage.primaryMetric(of: w, in: record.experiment)
            }
            if seen.count == workloads.count { break }
        }
        return result
    }
}

struct NightlyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nightly",
        abstract: "Check a run against the stored history of its experiment: change points and a gate.",
        discussion: """
            Per (workload, configuration, condition, metric): E-divisive means change points with a t-test \
            (Hunter's method) over the history, and a gate of the new value against the last stable segment \
            (outside its prediction interval at --p and beyond the threshold). Writes JUnit XML with --junit. \
            Exit codes: 0 no regression, 2 regression, 4 improvements only (with --fail-on-improvement), \
            1 error, 5 run or history not found.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var resultsOptions: ResultsOptions
    @OptionGroup var incomplete: IncompleteOption
    @OptionGroup var thresholdOptions: ThresholdOptions

    @Argument(help: "The new run (id, prefix or 'latest').")
    var run: String = "latest"

    @Option(help: "E-divisive window length (Hunter: 50).") var window: Int = 50
    @Option(help: "Maximum p-value of a change point and of the gate (Hunter: 0.001).") var p: Double = 0.001
    @Option(help: "Minimum relative change of a change point and default gate threshold (Hunter: 5%).")
    var minChange: String = "5%"
    @Option(help: "Fewest points of the last stable segment the gate needs.") var minHistory: Int = 3
    @Option(help: "Write a JUnit XML file (one testcase per cell, failures for regressions).") var junit: String?
    @Option(help: "table or json.") var format: TableOrJSON = .table

    func validate() throws {
        guard window >= 4 else { throw ValidationError("--window must be at least 4") }
        guard p > 0 && p < 1 else { throw ValidationError("--p must be in (0, 1)") }
    }

    func run() async throws {
        _ = global.makeLogger()
        let minimum: Double
        do {
            minimum = try ThresholdSet.parse(minChange, source: "--min-change").1.relative
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
        let thresholds = try thresholdOptions.thresholdSet(defaultRelative: minimum)
        let access = StoreAccess(options: resultsOptions, includeIncomplete: incomplete.includeIncomplete)
        let store = try access.store()
        let record = try access.record(run, in: store)
        let settings = NightlySettings(
            detector: ChangePointDetector(windowLength: window, maxPValue: p, minMagnitude: minimum),
            thresholds: thresholds, gatePValue: p, minSegment: minHistory)
        access.sayLeftOut(experiment: record.experiment.name, in: store)
        let checks = try Self.check(
            record: record, store: store, settings: settings, includeIncomplete: incomplete.includeIncomplete)
        guard checks.contains(where: { $0.segmentN > 0 }) else {
            throw CommandFailure(
                code: ExitCodes.baselineNotFound,
                message: "no earlier stored runs of experiment \"\(record.experiment.name)\" to compare \(record.id) with")
        }
        if let junit {
            let xml = Nightly.junit(checks, experiment: record.experiment.name, runID: record.id)
            guard FileManager.default.createFile(atPath: junit, contents: Data(xml.utf8)) else {
                throw CommandFailure(code: ExitCodes.error, message: "\(junit): cannot write the JUnit file")
            }
        }
        if format == .json {
            Console.out(try CompareCommand.json(checks))
        } else {
            var out = "nightly check of \(record.id) (\(record.experiment.name)) against its history\n"
            for c in checks where c.verdict != "reported" || global.verbose > 0 {
                out += "\(c.key.workload) / \(c.key.condition) / \(c.key.configuration): \(Nightly.line(c))\n"
            }
            Console.out(out)
        }
        let outcome = GateOutcome.of(checks.map(\.verdict))
        let code = outcome.exitCode(failOnImprovement: thresholdOptions.failOnImprovement)
        if code != ExitCodes.ok { throw CommandFailure(code: code, message: "") }
    }

    /// The checks of one run: the history of its experiment up to it.
    static func check(
        record: ExperimentRunRecord, store: Store, settings: NightlySettings, includeIncomplete: Bool = false
    ) throws -> [NightlyCheck] {
        let series = Nightly.series(
            try store.history(experiment: record.experiment.name, includeIncomplete: includeIncomplete),
            experiment: record.experiment)
        let primary = Set(record.experiment.workloads.compactMap { Comparator.primaryMetric(for: $0, in: record.experiment) })
        return Nightly.check(series, runID: record.id, primary: primary, settings: settings)
    }
}
