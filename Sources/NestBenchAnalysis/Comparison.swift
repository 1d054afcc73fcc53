import Foundation
import NestBenchModel
import NestBenchStats

/// One metric of one (workload, condition, configuration) against the baseline configuration.
public struct Comparison: Codable, Sendable, Hashable {
    public var workload: String
    public var condition: String
    public var configuration: String
    public var metric: String
    public var unit: String
    public var polarity: Polarity
    public var mean: Double
    public var baselineMean: Double
    public var sd: Double
    public var baselineSD: Double
    /// mean / baselineMean; nil when the baseline mean is 0.
    public var ratio: Double?
    /// 95% CI of the ratio; nil when unbounded or not computable (n < 2, baseline 0).
    public var ratioCI: [Double]?
    /// Welch's two-sided p-value; nil when n < 2 on either side.
    public var pValue: Double?
    public var n: Int
    public var nBaseline: Int
    /// better | worse | same (polarity applied); `changed` for neutral metrics that differ.
    public var verdict: String
    /// How the CI and p were computed.
    public var method: String
    /// The reference cell ("configuration/condition") when it is not the baseline configuration
    /// under the same condition (condition comparisons); nil otherwise.
    public var versus: String? = nil

    enum CodingKeys: String, CodingKey {
        case workload, condition, configuration, metric, unit, polarity, mean
        case baselineMean = "baseline_mean"
        case sd
        case baselineSD = "baseline_sd"
        case ratio
        case ratioCI = "ratio_ci"
        case pValue = "p_value"
        case n
        case nBaseline = "n_baseline"
        case verdict, method, versus
    }

    /// Every key is written, with null where a value does not exist, so consumers see one shape.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(workload, forKey: .workload)
        try c.encode(condition, forKey: .condition)
        try c.encode(configuration, forKey: .configuration)
        try c.encode(metric, forKey: .metric)
        try c.encode(unit, forKey: .unit)
        try c.encode(polarity, forKey: .polarity)
        try c.encode(mean, forKey: .mean)
        try c.encode(baselineMean, forKey: .baselineMean)
        try c.encode(sd, forKey: .sd)
        try c.encode(baselineSD, forKey: .baselineSD)
        try c.encode(ratio, forKey: .ratio)
        try c.encode(ratioCI, forKey: .ratioCI)
        try c.encode(pValue, forKey: .pValue)
        try c.encode(n, forKey: .n)
        try c.encode(nBaseline, forKey: .nBaseline)
        try c.encode(verdict, forKey: .verdict)
        try c.encode(method, forKey: .method)
        try c.encode(versus, forKey: .versus)
    }
}

/// A metric that could not be measured, with why.
public struct UnavailableMetric: Codable, Sendable, Hashable {
    public var workload: String
    public var condition: String
    public var configuration: String
    public var metric: String
    public var reason: String
}

/// Geometric mean of one metric's ratios across workloads.
public struct GeomeanSummary: Codable, Sendable, Hashable {
    public var condition: String
    public var configuration: String
    public var metric: String
    public var geomean: Double
    public var ci: [Double]?
    public var workloads: [String: Double]
    public var method: String
}

/// Turns stored runs into comparisons against the baseline.
public enum Comparator {
    /// Values of each metric per cell, from runs that succeeded.
    static func values(_ runs: [RunRecord]) -> [Cell: [String: (values: [Double], sample: Metric)]] {
        var result: [Cell: [String: (values: [Double], sample: Metric)]] = [:]
        for run in runs where run.status == .ok {
            for metric in run.metrics {
                guard let v = metric.value, v.isFinite else { continue }
                result[run.planned.cell, default: [:]][metric.name, default: ([], metric)].values.append(v)
            }
        }
        return result
    }

    /// Judges one comparison. Significant means p < alpha, the CI (when bounded) excludes 1, and the
    /// relative change is at least `minEffect`.
    public static func compare(
        candidate: [Double], baseline: [Double], polarity: Polarity, settings: AnalysisSettings
    ) -> (ratio: Double?, ci: [Double]?, p: Double?, verdict: String, method: String) {
        let meanC = Statistics.mean(candidate)
        let meanB = Statistics.mean(baseline)
        guard candidate.count >= 2, baseline.count >= 2 else {
            return (
                meanB != 0 ? meanC / meanB : nil, nil, nil, "same",
                "too few runs for a test (need 2 per side): reported as same"
            )
        }
        let welch = Statistics.welch(candidate, baseline)
        let confidence = 1 - settings.alpha
        var ratio: Double?
        var ci: [Double]?
        var method = "Welch t-test; ratio CI: Fieller \(Int((confidence * 100).rounded()))%"
        if meanB != 0 {
            let estimate = Statistics.fiellerRatio(candidate, baseline, confidence: confidence)
            ratio = estimate.ratio
            if let lo = estimate.lower, let hi = estimate.upper { ci = [lo, hi] } else { method += " (unbounded)" }
        } else {
            method += " (baseline mean is 0: no ratio)"
        }
        var significant = welch.pValue < settings.alpha
        if let ci, ci[0] <= 1, ci[1] >= 1 { significant = false }
        if let ratio, abs(ratio - 1) < settings.minEffect { significant = false }
        let verdict: String
        if !significant {
            verdict = "same"
        } else {
            switch polarity {
            case .neutral: verdict = "changed"
            case .higherIsBetter: verdict = meanC > meanB ? "better" : "worse"
            case .lowerIsBetter: verdict = meanC < meanB ? "better" : "worse"
            }
        }
        return (ratio, ci, welch.pValue, verdict, method)
    }

    /// Each configuration against the baseline configuration under the same condition; then, when
    /// `analysis.baselineCondition` is set, each condition against it within the same configuration
    /// (those rows have `versus` set to the baseline cell).
    public static func comparisons(experiment: Experiment, runs: [RunRecord]) -> [Comparison] {
        let byCell = values(runs)
        var pairs: [(candidate: Cell, baseline: Cell)] = []
        for workload in experiment.workloads {
            for condition in experiment.conditions {
                for configuration in experiment.configurations where configuration.name != experiment.baseline {
                    pairs.append(
                        (
                            Cell(configuration: configuration.name, workload: workload.label, condition: condition.name),
                            Cell(configuration: experiment.baseline, workload: workload.label, condition: condition.name)
                        ))
                }
            }
            if let baseCondition = experiment.analysis.baselineCondition {
                for configuration in experiment.configurations {
                    for condition in experiment.conditions where condition.name != baseCondition {
                        pairs.append(
                            (
                                Cell(configuration: configuration.name, workload: workload.label, condition: condition.name),
                                Cell(configuration: configuration.name, workload: workload.label, condition: baseCondition)
                            ))
                    }
                }
            }
        }
        var result: [Comparison] = []
        for (cell, baseCell) in pairs {
            guard let base = byCell[baseCell], let candidate = byCell[cell] else { continue }
            let versus = baseCell.condition != cell.condition ? "\(baseCell.configuration)/\(baseCell.condition)" : nil
            for name in candidate.keys.sorted() {
                guard let c = candidate[name], let b = base[name] else { continue }
                let judged = compare(
                    candidate: c.values, baseline: b.values, polarity: c.sample.polarity, settings: experiment.analysis)
                var comparison = Comparison(
                    workload: cell.workload, condition: cell.condition, configuration: cell.configuration,
                    metric: name, unit: c.sample.unit, polarity: c.sample.polarity,
                    mean: Statistics.mean(c.values), baselineMean: Statistics.mean(b.values),
                    sd: Statistics.standardDeviation(c.values), baselineSD: Statistics.standardDeviation(b.values),
                    ratio: judged.ratio, ratioCI: judged.ci, pValue: judged.p, n: c.values.count,
                    nBaseline: b.values.count, verdict: judged.verdict, method: judged.method)
                comparison.versus = versus
                result.append(comparison)
            }
        }
        return result
    }

    /// Metrics that some run reported as unavailable, one entry per (cell, metric, reason).
    public static func unavailable(_ runs: [RunRecord]) -> [UnavailableMetric] {
        var seen: Set<UnavailableMetric> = []
        var result: [UnavailableMetric] = []
        for run in runs {
            for m in run.metrics where m.value == nil {
                let entry = UnavailableMetric(
                    workload: run.planned.workload, condition: run.planned.condition,
                    configuration: run.planned.configuration, metric: m.name, reason: m.unavailable ?? "unavailable")
                if seen.insert(entry).inserted { result.append(entry) }
            }
        }
        return result
    }

    /// The metric headlines use for a workload: the experiment's choice, else the suite's.
    public static func primaryMetric(for workload: WorkloadSpec, settings: AnalysisSettings) -> String {
        if let m = settings.primaryMetric { return m }
        switch workload.suite {
        case "tailbench": return "sojourn_p99_ms"
        case "parsec": return "roi_throughput"
        default: return "ops_per_sec"
        }
    }

    /// Geometric mean of the primary metric's ratios across workloads, per (condition, configuration).
    public static func geomeans(experiment: Experiment, comparisons: [Comparison]) -> [GeomeanSummary] {
        var result: [GeomeanSummary] = []
        for condition in experiment.conditions {
            for configuration in experiment.configurations where configuration.name != experiment.baseline {
                var ratios: [String: Double] = [:]
                var metricNames: Set<String> = []
                for workload in experiment.workloads {
                    let metric = primaryMetric(for: workload, settings: experiment.analysis)
                    if let c = comparisons.first(where: {
                        $0.workload == workload.label && $0.condition == condition.name
                            && $0.configuration == configuration.name && $0.metric == metric
                    }), let r = c.ratio, r > 0 {
                        ratios[workload.label] = r
                        metricNames.insert(metric)
                    }
                }
                guard !ratios.isEmpty else { continue }
                let estimate = Statistics.geometricMeanRatio(Array(ratios.values))
                result.append(
                    GeomeanSummary(
                        condition: condition.name, configuration: configuration.name,
                        metric: metricNames.sorted().joined(separator: "+"), geomean: estimate.ratio,
                        ci: estimate.lower.flatMap { lo in estimate.upper.map { [lo, $0] } }, workloads: ratios,
                        method: estimate.method))
            }
        }
        return result
    }
}
