import Foundation
import NestBenchModel
import NestBenchStats

/// A testbed the runs of a report were measured on.
public struct TestbedEntry: Codable, Sendable, Hashable {
    /// Host name and fingerprint (CPU model | kernel | memory), or "unrecorded" for runs stored
    /// before testbeds were recorded.
    public var testbed: String
    public var runs: Int
    /// The experiment runs (shards) measured on it.
    public var experimentRuns: [String]

    enum CodingKeys: String, CodingKey {
        case testbed, runs
        case experimentRuns = "experiment_runs"
    }
}

/// One primary-metric comparison over several testbeds: each testbed's ratio, the combined one,
/// and which testbeds disagree.
public struct TestbedComparison: Codable, Sendable, Hashable {
    public struct PerTestbed: Codable, Sendable, Hashable {
        public var testbed: String
        public var ratio: Double?
        public var ratioCI: [Double]?
        /// Its CI does not overlap the CI of the other testbeds' combined ratio.
        public var disagrees: Bool

        enum CodingKeys: String, CodingKey {
            case testbed, ratio, disagrees
            case ratioCI = "ratio_ci"
        }
    }
    public var workload: String
    public var condition: String
    public var configuration: String
    public var metric: String
    public var perTestbed: [PerTestbed]
    /// Geometric mean of the per-testbed ratios.
    public var ratio: Double?
    public var ratioCI: [Double]?
    public var method: String

    enum CodingKeys: String, CodingKey {
        case workload, condition, configuration, metric, ratio, method
        case perTestbed = "per_testbed"
        case ratioCI = "ratio_ci"
    }
}

/// Analysis over several testbeds: ratios per testbed, then combined, the testbed the top level
/// of the hierarchical bootstrap (`Statistics.testbedBootstrapRatio`).
public enum TestbedAnalysis {
    public static let unrecorded = "unrecorded"

    /// The testbeds of the runs, in first-seen order. An interrupted run with no testbed (the
    /// run in flight at a crash, stored by a resume of an older nestbench) measured nothing on
    /// a machine anyone knows: it is counted under none, never as a testbed of its own.
    public static func testbeds(_ runs: [RunRecord]) -> [TestbedEntry] {
        var order: [String] = []
        var entries: [String: TestbedEntry] = [:]
        for run in runs where run.testbed != nil || run.status != .interrupted {
            let t = run.testbed ?? unrecorded
            if entries[t] == nil {
                order.append(t)
                entries[t] = TestbedEntry(testbed: t, runs: 0, experimentRuns: [])
            }
            entries[t]!.runs += 1
            if !entries[t]!.experimentRuns.contains(run.experimentRunID) {
                entries[t]!.experimentRuns.append(run.experimentRunID)
            }
        }
        return order.map { entries[$0]! }
    }

    /// Every primary-metric comparison judged per testbed and combined; empty with fewer than
    /// two testbeds (the ordinary comparison is then the whole story).
    public static func comparisons(
        experiment: Experiment, runs: [RunRecord], comparisons: [Comparison], resamples: Int = 1000
    ) -> [TestbedComparison] {
        guard testbeds(runs).count >= 2 else { return [] }
        let confidence = 1 - experiment.analysis.alpha
        var result: [TestbedComparison] = []
        for (cell, base, c) in AdaptiveRepetitions.primaryPairs(experiment: experiment, comparisons: comparisons) {
            func values(_ cell: Cell) -> [TestbedValue] {
                runs.filter { $0.status == .ok && $0.planned.cell == cell }.compactMap { run in
                    guard let v = run.metric(c.metric)?.value, v.isFinite else { return nil }
                    return TestbedValue(value: v, group: run.bootstrapGroup, testbed: run.testbed ?? unrecorded)
                }
            }
            let declaration = experiment.declaration(of: c.metric, workload: cell.workload)
            let statistic = CenterStatistic(declaration?.center ?? .amean)
            let r = Statistics.testbedBootstrapRatio(
                values(cell), values(base), statistic: statistic, confidence: confidence, resamples: resamples)
            func bounds(_ e: RatioEstimate) -> [Double]? { e.lower.flatMap { lo in e.upper.map { [lo, $0] } } }
            result.append(
                TestbedComparison(
                    workload: cell.workload, condition: cell.condition, configuration: cell.configuration, metric: c.metric,
                    perTestbed: r.perTestbed.map {
                        TestbedComparison.PerTestbed(
                            testbed: $0.testbed, ratio: $0.estimate.ratio.isFinite ? $0.estimate.ratio : nil,
                            ratioCI: bounds($0.estimate), disagrees: r.disagreeing.contains($0.testbed))
                    },
                    ratio: r.combined.ratio.isFinite ? r.combined.ratio : nil, ratioCI: bounds(r.combined),
                    method: r.combined.method))
        }
        return result
    }
}

/// The experiment runs of one campaign (the shards of one experiment, each its own experiment
/// run, possibly imported from several testbeds) as one record and one set of runs to analyse.
public struct Campaign: Sendable {
    public var record: ExperimentRunRecord
    public var runs: [RunRecord]

    /// Why the experiment runs cannot be analysed together, or nil.
    public static func problem(_ records: [ExperimentRunRecord]) -> String? {
        guard let first = records.first else { return "no experiment runs" }
        for r in records.dropFirst() {
            if r.experiment.name != first.experiment.name {
                return "experiment run \(r.id) is of experiment \(r.experiment.name), \(first.id) of \(first.experiment.name)"
            }
            if r.experiment != first.experiment {
                return "experiment runs \(first.id) and \(r.id) ran different experiments (the file or an included one changed)"
            }
        }
        return nil
    }

    /// Pools the experiment runs: runs keep their experiment run (so VM boots and runs stay
    /// distinct bootstrap groups) and their testbed; repetitions are numbered on across shards
    /// (shard 0's 1…k, then shard 1's k+1…), so the pooled plan counts every repetition once.
    /// Status: `completed` only when every experiment run completed.
    public init(id: String, records: [ExperimentRunRecord], runs: [String: [RunRecord]]) {
        let ordered = records.sorted { ($0.shard?.index ?? 0, $0.startedAt) < ($1.shard?.index ?? 0, $1.startedAt) }
        var offset: [Cell: Int] = [:]
        var plan: [PlannedRun] = []
        var pooled: [RunRecord] = []
        for record in ordered {
            let done = AdaptiveRepetitions.plannedRepetitions(record.plan)
            func shifted(_ p: PlannedRun) -> PlannedRun {
                var p = p
                p.repetition += offset[p.cell] ?? 0
                return p
            }
            plan += record.plan.map(shifted)
            pooled += (runs[record.id] ?? []).map { run in
                var run = run
                run.planned = shifted(run.planned)
                return run
            }
            for (cell, n) in done { offset[cell, default: 0] += n }
        }
        var merged = ordered[0]
        merged.id = "campaign \(id)"
        merged.plan = plan
        merged.campaign = id
        merged.shard = nil
        merged.startedAt = ordered.map(\.startedAt).min() ?? merged.startedAt
        merged.finishedAt = ordered.allSatisfy { $0.finishedAt != nil } ? ordered.compactMap(\.finishedAt).max() : nil
        merged.status =
            ordered.allSatisfy { $0.status == .completed }
            ? .completed : (ordered.first { $0.status != .completed }?.status ?? .failed)
        // Tags all experiment runs share.
        merged.tags = ordered.dropFirst().reduce(ordered[0].tags) { common, r in common.filter { r.tags[$0.key] == $0.value } }
        merged.fixedRepetitions = ordered.allSatisfy { $0.fixedRepetitions == true } ? true : ordered[0].fixedRepetitions
        record = merged
        self.runs = pooled
    }
}
