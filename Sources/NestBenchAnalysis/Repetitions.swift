import Foundation
import NestBenchModel

/// Why a cell has the number of repetitions it has, derived from the stored plan and runs.
public struct RepetitionStatus: Codable, Sendable, Hashable {
    public enum Reason: String, Codable, Sendable, Hashable {
        /// The primary metric's ratio CI half-width, relative to the ratio, is at or below the target.
        case ciTargetMet = "ci-target-met"
        /// The cell (or its baseline cell) reached `repetitions.max` with the CI still wider.
        case maxReached = "max-reached"
        /// Fewer than 2 successful runs with the primary metric on a side: no CI at all.
        case tooFewRuns = "too-few-runs"
        /// The experiment ended (interrupted, failed) before the cell reached its target or maximum.
        case stoppedEarly = "stopped-early"
        /// Completed with a wide CI below the maximum: adaptive repetitions were off (--fixed-repetitions).
        case adaptiveOff = "adaptive-off"
    }

    public var workload: String
    public var condition: String
    public var configuration: String
    public var metric: String
    /// Repetitions planned for the cell and for its baseline cell.
    public var repetitions: Int
    public var baselineRepetitions: Int
    /// Successful runs that measured the metric, on each side.
    public var n: Int
    public var nBaseline: Int
    /// (upper − lower) / 2 / ratio of the ratio CI; nil when there is no bounded CI.
    public var relativeHalfWidth: Double?
    public var target: Double
    public var min: Int
    public var max: Int
    public var reason: Reason
    public var explanation: String

    enum CodingKeys: String, CodingKey {
        case workload, condition, configuration, metric, repetitions
        case baselineRepetitions = "baseline_repetitions"
        case n
        case nBaseline = "n_baseline"
        case relativeHalfWidth = "relative_half_width"
        case target, min, max, reason, explanation
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(workload, forKey: .workload)
        try c.encode(condition, forKey: .condition)
        try c.encode(configuration, forKey: .configuration)
        try c.encode(metric, forKey: .metric)
        try c.encode(repetitions, forKey: .repetitions)
        try c.encode(baselineRepetitions, forKey: .baselineRepetitions)
        try c.encode(n, forKey: .n)
        try c.encode(nBaseline, forKey: .nBaseline)
        try c.encode(relativeHalfWidth, forKey: .relativeHalfWidth)
        try c.encode(target, forKey: .target)
        try c.encode(min, forKey: .min)
        try c.encode(max, forKey: .max)
        try c.encode(reason, forKey: .reason)
        try c.encode(explanation, forKey: .explanation)
    }
}

/// The adaptive-repetition rule, shared by the orchestrator (what to run next) and reports (why
/// each cell stopped): after `repetitions.min`, a cell whose primary-metric ratio CI half-width
/// relative to the ratio exceeds `repetitions.target_ci` gets another interleaved block with its
/// baseline cell, until `repetitions.max`.
public enum AdaptiveRepetitions {
    /// (upper − lower) / 2 / |ratio|, nil without a bounded CI.
    public static func relativeHalfWidth(_ c: Comparison) -> Double? {
        guard let ci = c.ratioCI, let r = c.ratio, r != 0 else { return nil }
        return (ci[1] - ci[0]) / 2 / abs(r)
    }

    /// Highest planned repetition per cell.
    public static func plannedRepetitions(_ plan: [PlannedRun]) -> [Cell: Int] {
        var done: [Cell: Int] = [:]
        for p in plan { done[p.cell] = Swift.max(done[p.cell] ?? 0, p.repetition) }
        return done
    }

    /// Every primary-metric comparison with the cell it judges and the cell it is judged
    /// against: the baseline configuration's under the same condition, or — for a condition
    /// comparison (`versus`) — the same configuration under the baseline condition.
    static func primaryPairs(experiment: Experiment, comparisons: [Comparison]) -> [(cell: Cell, base: Cell, c: Comparison)] {
        var result: [(cell: Cell, base: Cell, c: Comparison)] = []
        for workload in experiment.workloads {
            guard let metric = experiment.primaryMetric(of: workload) else { continue }
            for c in comparisons where c.workload == workload.label && c.metric == metric {
                let cell = Cell(configuration: c.configuration, workload: c.workload, condition: c.condition)
                var base = Cell(configuration: experiment.baseline, workload: c.workload, condition: c.condition)
                if c.versus != nil, let condition = experiment.analysis.baselineCondition {
                    base = Cell(configuration: c.configuration, workload: c.workload, condition: condition)
                }
                result.append((cell, base, c))
            }
        }
        return result
    }

    /// The primary-metric comparison of each non-baseline cell that has one: against the
    /// baseline configuration where there is one, else its condition comparison.
    static func primaryComparisons(experiment: Experiment, comparisons: [Comparison]) -> [Cell: Comparison] {
        var result: [Cell: Comparison] = [:]
        for (cell, _, c) in primaryPairs(experiment: experiment, comparisons: comparisons)
        where result[cell] == nil || result[cell]?.versus != nil {
            result[cell] = c
        }
        return result
    }

    /// Cells (with the cells they are judged against) that get one more block.
    public static func cellsNeedingMore(experiment: Experiment, plan: [PlannedRun], comparisons: [Comparison]) -> Set<Cell> {
        let done = plannedRepetitions(plan)
        var cells: Set<Cell> = []
        for (cell, base, c) in primaryPairs(experiment: experiment, comparisons: comparisons) {
            guard (done[cell] ?? 0) < experiment.repetitions.max, (done[base] ?? 0) < experiment.repetitions.max else {
                continue
            }
            let wide = relativeHalfWidth(c).map { $0 > experiment.repetitions.targetRelativeCI } ?? true
            if wide {
                cells.insert(cell)
                cells.insert(base)
            }
        }
        return cells
    }

    /// Why every non-baseline cell stopped where it did.
    public static func status(
        experiment: Experiment, plan: [PlannedRun], comparisons: [Comparison], experimentStatus: ExperimentRunRecord.Status
    ) -> [RepetitionStatus] {
        let done = plannedRepetitions(plan)
        let primary = primaryComparisons(experiment: experiment, comparisons: comparisons)
        let policy = experiment.repetitions
        var result: [RepetitionStatus] = []
        for cell in Planner.cells(of: experiment) where cell.configuration != experiment.baseline {
            guard let workload = experiment.workload(labeled: cell.workload) else { continue }
            let metric = experiment.primaryMetric(of: workload) ?? "(no primary metric declared)"
            let base = Cell(configuration: experiment.baseline, workload: cell.workload, condition: cell.condition)
            let reps = done[cell] ?? 0
            let baseReps = done[base] ?? 0
            let c = primary[cell]
            let n = c?.n ?? 0
            let nb = c?.nBaseline ?? 0
            let half = c.flatMap(relativeHalfWidth)
            let atMax = reps >= policy.max || baseReps >= policy.max
            let reason: RepetitionStatus.Reason
            let explanation: String
            let percent = { (x: Double) in String(format: "%.2f%%", x * 100) }
            if n < 2 || nb < 2 {
                reason = .tooFewRuns
                explanation =
                    "\(n) vs \(nb) successful runs with \(metric) (need 2 per side for a CI) after \(reps)/\(baseReps) repetitions"
            } else if let half, half <= policy.targetRelativeCI {
                reason = .ciTargetMet
                explanation =
                    "CI half-width ±\(percent(half)) ≤ target ±\(percent(policy.targetRelativeCI)) after \(reps) repetitions"
            } else if atMax {
                reason = .maxReached
                explanation =
                    "maximum of \(policy.max) repetitions reached with the CI "
                    + (half.map { "at ±\(percent($0)) > target ±\(percent(policy.targetRelativeCI))" } ?? "unbounded")
            } else if experimentStatus != .completed {
                reason = .stoppedEarly
                explanation =
                    "the experiment run is \(experimentStatus.rawValue): stopped after \(reps) of at most \(policy.max) repetitions"
            } else {
                reason = .adaptiveOff
                explanation =
                    "CI "
                    + (half.map { "±\(percent($0))" } ?? "unbounded")
                    + " wider than the target after \(reps) < \(policy.max) repetitions: adaptive repetitions were off (--fixed-repetitions)"
            }
            result.append(
                RepetitionStatus(
                    workload: cell.workload, condition: cell.condition, configuration: cell.configuration, metric: metric,
                    repetitions: reps, baselineRepetitions: baseReps, n: n, nBaseline: nb, relativeHalfWidth: half,
                    target: policy.targetRelativeCI, min: policy.min, max: policy.max, reason: reason,
                    explanation: explanation))
        }
        return result
    }
}
