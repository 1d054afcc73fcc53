import Foundation
import NestBenchAnalysis
import NestBenchModel
import NestBenchStore

extension CompareCommand {
    /// `compare --by TAG [EXPERIMENT]`: per configuration, the runs of the experiment with one value
    /// of the tag (baseline: `--a`, default the second most recent value) against those with
    /// another (`--b`, default the most recent), every repetition of those runs pooled.
    func compareByTag(_ tag: String, thresholds: ThresholdSet, access: StoreAccess, store: Store) throws {
        let name = try runs.first ?? access.record("latest", in: store).experiment.name
        var members: [TagSides.Member] = []
        var records: [String: ExperimentRunRecord] = [:]
        for summary in try store.list() where summary.experiment == name {
            guard let record = try store.experimentRun(summary.id) else { continue }
            records[record.id] = record
            for c in record.experiment.configurations {
                members.append(
                    TagSides.Member(
                        runID: record.id, startedAt: record.startedAt, configuration: c.name,
                        value: RunTags.resolve(record.tags, configuration: c.name)[tag]))
            }
        }
        guard !records.isEmpty else {
            throw CommandFailure(code: ExitCodes.baselineNotFound, message: "no stored runs of experiment \"\(name)\"")
        }
        let sides = TagSides.pick(members, a: valueA, b: valueB)
        guard !sides.isEmpty else {
            let seen = Set(members.compactMap(\.value)).sorted()
            throw CommandFailure(
                code: ExitCodes.baselineNotFound,
                message:
                    "experiment \"\(name)\" has no configuration with runs of two values of tag \(tag)"
                    + (valueA != nil || valueB != nil ? " \(valueA ?? "(most recent)") and \(valueB ?? "(most recent)")" : "")
                    + " (values seen: \(seen.isEmpty ? "none" : seen.joined(separator: ", ")))")
        }
        var results: [ABComparison] = []
        for side in sides {
            var primary: Set<String> = []
            var base: [RunRecord] = []
            var cand: [RunRecord] = []
            for id in side.baselineRuns + side.candidateRuns {
                guard let record = records[id] else { continue }
                for w in record.experiment.workloads {
                    if let m = HistoryPage.primaryMetric(of: w, in: record.experiment) { primary.insert(m) }
                }
                let runs = try store.runs(of: id).filter { $0.planned.configuration == side.configuration }
                if side.baselineRuns.contains(id) { base += runs } else { cand += runs }
            }
            let alpha = side.candidateRuns.last.flatMap { records[$0]?.experiment.analysis.alpha } ?? 0.05
            var result = ABComparator.compare(
                baseline: base, candidate: cand,
                baselineLabel: "\(side.configuration) with \(tag)=\(side.a) (\(side.baselineRuns.joined(separator: ", ")))",
                candidateLabel: "\(side.configuration) with \(tag)=\(side.b) (\(side.candidateRuns.joined(separator: ", ")))",
                thresholds: thresholds, primary: primary, alpha: alpha)
            if !base.contains(where: { $0.status == .ok }) {
                result.notes.append("no successful baseline runs of \(side.configuration) with \(tag)=\(side.a)")
            }
            results.append(result)
        }
        if format == .json {
            Console.out(try Self.json(results))
        } else {
            Console.out(results.map(Self.table).joined(separator: "\n"))
        }
        let outcome = GateOutcome.of(results.flatMap { $0.verdicts.map(\.verdict) })
        let code = outcome.exitCode(failOnImprovement: thresholdOptions.failOnImprovement)
        if code != ExitCodes.ok { throw CommandFailure(code: code, message: "") }
    }
}
