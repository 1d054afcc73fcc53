import ArgumentParser
import Foundation
import NestBenchAnalysis
import NestBenchModel
import NestBenchStore

struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Report a stored experiment run.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var resultsOptions: ResultsOptions

    @OptionGroup var incomplete: IncompleteOption

    @Argument(help: "Run id, a unique prefix of one, or 'latest'.")
    var run: String = "latest"

    @Option(help: "table, markdown, json or csv.")
    var format: ReportFormat = .table

    @Flag(help: "Show every metric's comparison in the table/markdown report (JSON, CSV and HTML always have them).")
    var allMetrics = false

    @Option(help: "Also write a self-contained HTML report (Figs. 11–16 as inline SVG, tables, provenance) to this file.")
    var html: String?

    @Option(
        name: .customLong("timeline"),
        help: ArgumentHelp(
            "A stored timeline to draw in the HTML report: a sample name, or a prefix ending in '.' (repeatable).",
            discussion: "Default: \(TimelineFigure.defaultSelectors.joined(separator: ", "))."))
    var timelineSelectors: [String] = []

    @Option(
        help:
            "Analyse every experiment run (shard) of this campaign together: ratios per testbed, then combined (instead of a run id)."
    )
    var campaign: String?

    func run() async throws {
        _ = global.makeLogger()
        guard FileManager.default.fileExists(atPath: resultsOptions.databasePath) else {
            throw CommandFailure(
                code: ExitCodes.baselineNotFound,
                message: "\(resultsOptions.databasePath): no result store here (run an experiment first, or pass --results DIR)")
        }
        let store = try resultsOptions.openStore()
        let access = StoreAccess(options: resultsOptions, includeIncomplete: incomplete.includeIncomplete)
        var report: Report
        // The runs analysed (a campaign's pooled ones), for their timelines below.
        var runs: [RunRecord]
        if let campaign {
            guard run == "latest" else {
                throw CommandFailure(code: ExitCodes.usage, message: "--campaign replaces the run id: give one or the other")
            }
            let pooled = try access.campaign(campaign, in: store)
            runs = pooled.runs
            report = Report(record: pooled.record, runs: runs)
            let shards = Set(try store.campaign(campaign).compactMap { try store.experimentRun($0)?.shard?.count })
            if let n = shards.first, pooled.record.fixedRepetitions != true {
                report.adaptiveRepetitions =
                    "per shard: each of the \(n) shards repeated its own cells up to its share of repetitions.max"
                report.notes = report.notes.map {
                    $0.hasPrefix("adaptive repetitions: ") ? "adaptive repetitions: \(report.adaptiveRepetitions!)" : $0
                }
            }
        } else {
            let record = try access.record(run, in: store)
            runs = try store.runs(of: record.id)
            report = Report(record: record.declared(), runs: runs)
        }
        if let html {
            let selectors = timelineSelectors.isEmpty ? TimelineFigure.defaultSelectors : timelineSelectors
            // The timelines of the runs analysed, by experiment run and sequence.
            var samples: [String: [Int: [RunExport.Sample]]] = [:]
            for id in Set(runs.map(\.experimentRunID)) { samples[id] = try store.samples(of: id) }
            let stored = runs.map { run in
                (
                    record: run,
                    samples: (samples[run.experimentRunID]?[run.planned.sequence] ?? []).map { ($0.tMillis, $0.name, $0.value) }
                )
            }
            let page = HTMLReport.render(
                report, timelines: TimelineFigure.timelines(stored, selectors: selectors), timelineSelectors: selectors)
            guard FileManager.default.createFile(atPath: html, contents: Data(page.utf8)) else {
                throw CommandFailure(code: ExitCodes.error, message: "\(html): cannot write the HTML report")
            }
            Console.error("nestbench: wrote \(html)")
        }
        do {
            Console.out(try ReportRenderer.render(report, as: format, allMetrics: allMetrics))
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
    }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List stored experiment runs, newest first.")

    /// A shell word for a copy-pasted command line.
    static func quoted(_ word: String) -> String {
        word.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:@+,".contains($0) }
            ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    @OptionGroup var global: GlobalOptions
    @OptionGroup var resultsOptions: ResultsOptions

    func run() async throws {
        _ = global.makeLogger()
        guard FileManager.default.fileExists(atPath: resultsOptions.databasePath) else {
            Console.error("nestbench: \(resultsOptions.databasePath): no runs stored yet")
            return
        }
        let f = ISO8601DateFormatter()
        for s in try resultsOptions.openStore().list() {
            let tags = RunTags.describe(s.tags.filter { !RunTags.isVerbose($0.key) })
            let where_ = [s.campaign.map { "campaign \($0)" }, s.shard.map { "shard \($0)" }].compactMap { $0 }
            Console.out(
                "\(s.id)\t\(s.experiment)\t\(f.string(from: s.startedAt))\t\(s.status)\t\(s.runs) runs\t\(tags)"
                    + (where_.isEmpty ? "" : "\t" + where_.joined(separator: ", ")) + "\n")
            // A stopped experiment run says how to continue it.
            if ["interrupted", "killed", "failed"].contains(s.status), let file = s.filePath {
                var argv = ["nestbench", "run", file, "--resume", s.id]
                if resultsOptions.results != "Results" { argv += ["--results", resultsOptions.results] }
                if let shard = s.shard { argv += ["--shard", shard] }
                Console.out("\t↳ resume: \(argv.map(Self.quoted).joined(separator: " "))\n")
            }
        }
    }
}
