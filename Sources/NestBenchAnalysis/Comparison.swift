import Foundation
import NestBenchModel
import NestBenchStats
import OrderedCollections

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
    /// What `mean` holds: `amean` (times, counts), `hmean` (rates) or `median` (of per-run
    /// percentiles: the run is the unit, percentiles are never averaged).
    public var center: String = "amean"
    /// The ratio's CI by the log-t method (nil when not computable).
    public var ratioCILogT: [Double]?
    /// The ratio's CI by the bootstrap over runs (over VM boots when runs carry one).
    public var ratioCIBootstrap: [Double]?
    public var bootstrapMethod: String?
    /// Two-sided Mann–Whitney U p-value, and the smallest p these sample sizes can give.
    public var mannWhitneyP: Double?
    public var mannWhitneyFloor: Double?
    /// The metric's declared role (`primary`, `secondary`, `diagnostic`).
    public var role: MetricRole = .diagnostic

    enum CodingKeys: String, CodingKey {
        case workload, condition, configuration, metric, unit, polarity, mean, role
        case baselineMean = "baseline_mean"
        case sd
        case baselineSD = "baseline_sd"
        case ratio
        case ratioCI = "ratio_ci"
        case pValue = "p_value"
        case n
        case nBaseline = "n_baseline"
        case verdict, method, versus, center
        case ratioCILogT = "ratio_ci_log_t"
        case ratioCIBootstrap = "ratio_ci_bootstrap"
        case bootstrapMethod = "bootstrap_method"
        case mannWhitneyP = "mann_whitney_p"
        case mannWhitneyFloor = "mann_whitney_floor"
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
        try c.encode(center, forKey: .center)
        try c.encode(ratioCILogT, forKey: .ratioCILogT)
        try c.encode(ratioCIBootstrap, forKey: .ratioCIBootstrap)
        try c.encode(bootstrapMethod, forKey: .bootstrapMethod)
        try c.encode(mannWhitneyP, forKey: .mannWhitneyP)
        try c.encode(mannWhitneyFloor, forKey: .mannWhitneyFloor)
        try c.encode(role, forKey: .role)
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

/// Geometric mean of one metric's ratios across workloads: always ONE metric of ONE polarity
/// (each workload's declared primary metric; workloads with different primaries get separate means).
public struct GeomeanSummary: Codable, Sendable, Hashable {
    public var condition: String
    public var configuration: String
    /// The metric (a colocated group's member prefix removed).
    public var metric: String
    public var polarity: Polarity
    public var geomean: Double
    public var ci: [Double]?
    public var workloads: [String: Double]
    public var method: String
}

/// Values of one metric in one cell: each successful run's value and its bootstrap group.
public struct MetricValues: Sendable {
    public var values: [Double]
    public var groups: [String]
    /// The first run's metric, for its unit when the declaration gives none.
    public var sample: Metric
    /// What the metric is (polarity, center, role, figures); `.undeclared` when nobody declared it.
    public var declaration: MetricDeclaration

    public init(values: [Double], groups: [String], sample: Metric, declaration: MetricDeclaration? = nil) {
        self.values = values
        self.groups = groups
        self.sample = sample
        self.declaration =
            declaration ?? .undeclared(sample.name, unit: sample.unit, polarity: sample.polarity)
    }

    /// The declared unit, else the measured one.
    public var unit: String { declaration.unit ?? sample.unit }

    public var grouped: [GroupedValue] { zip(values, groups).map { GroupedValue(value: $0, group: $1) } }
}

/// The result of judging one candidate sample against one baseline sample.
public struct Judgement: Sendable {
    public var center: CenterStatistic
    public var centerValue: Double
    public var baselineCenterValue: Double
    public var ratio: Double?
    public var ci: [Double]?
    public var ciLogT: [Double]?
    public var ciBootstrap: [Double]?
    public var bootstrapMethod: String?
    public var p: Double?
    public var mannWhitneyP: Double?
    public var mannWhitneyFloor: Double?
    public var verdict: String
    public var method: String
}

/// Turns stored runs into comparisons against the baseline.
public enum Comparator {
    /// Values of each metric per cell, from runs that succeeded, with each metric's declaration
    /// (from `experiment`; undeclared metrics keep their own polarity and the arithmetic mean).
    public static func values(_ runs: [RunRecord], experiment: Experiment? = nil) -> [Cell: [String: MetricValues]] {
        var result: [Cell: [String: MetricValues]] = [:]
        for run in runs where run.status == .ok {
            let group = run.bootstrapGroup
            for metric in run.metrics {
                guard let v = metric.value, v.isFinite else { continue }
                let cell = run.planned.cell
                if result[cell]?[metric.name] == nil {
                    result[cell, default: [:]][metric.name] = MetricValues(
                        values: [], groups: [], sample: metric,
                        declaration: experiment?.declaration(of: metric.name, workload: cell.workload))
                }
                result[cell]![metric.name]!.values.append(v)
                result[cell]![metric.name]!.groups.append(group)
            }
        }
        return result
    }

    /// Judges one comparison (the ratio candidate / baseline of the metric's center statistic).
    ///
    /// - amean: Welch's t-test; ratio CI by Fieller.
    /// - hmean: Welch's t-test and Fieller on the reciprocals (where the harmonic mean is an
    ///   arithmetic mean).
    /// - median of per-run values: Mann–Whitney U; ratio CI by the bootstrap over runs (over VM
    ///   boots when the runs carry one).
    /// Every comparison also gets the log-t and bootstrap CIs and the Mann–Whitney p beside the
    /// primary ones. Significant means p < alpha, the primary CI (when bounded) excludes 1, and the
    /// relative change is at least `minEffect`.
    public static func judge(
        candidate: MetricValues, baseline: MetricValues, polarity: Polarity, settings: AnalysisSettings,
        bootstrapResamples: Int = 1000
    ) -> Judgement {
        let center = CenterStatistic(candidate.declaration.center)
        let c = candidate.values
        let b = baseline.values
        let positive = c.allSatisfy { $0 > 0 } && b.allSatisfy { $0 > 0 }
        // Hmean needs positive values; fall back to the arithmetic mean otherwise.
        let effective: CenterStatistic = center == .harmonicMean && !positive ? .mean : center
        let centerC = effective.of(c)
        let centerB = effective.of(b)
        let confidence = 1 - settings.alpha
        let percent = Int((confidence * 100).rounded())
        var j = Judgement(
            center: effective, centerValue: centerC, baselineCenterValue: centerB,
            ratio: centerB != 0 ? centerC / centerB : nil, verdict: "same", method: "")
        func bounds(_ r: RatioEstimate) -> [Double]? { r.lower.flatMap { lo in r.upper.map { [lo, $0] } } }
        guard c.count >= 2, b.count >= 2 else {
            j.method = "too few runs for a test (need 2 per side): reported as same"
            return j
        }
        let mw = Statistics.mannWhitney(c, b)
        j.mannWhitneyP = mw.pValue
        j.mannWhitneyFloor = mw.floor
        if centerB != 0 {
            let boot = Statistics.bootstrapRatio(
                candidate.grouped, baseline.grouped, statistic: effective, confidence: confidence,
                resamples: bootstrapResamples)
            j.ciBootstrap = bounds(boot)
            j.bootstrapMethod = boot.method
            if positive { j.ciLogT = bounds(Statistics.logTRatio(c, b, confidence: confidence)) }
        }
        switch effective {
        case .mean:
            j.p = Statistics.welch(c, b).pValue
            j.method = "Welch t-test; ratio CI: Fieller \(percent)%"
            if centerB != 0 {
                let f = Statistics.fiellerRatio(c, b, confidence: confidence)
                j.ci = bounds(f)
                if j.ci == nil { j.method += " (unbounded)" }
            } else {
                j.method += " (baseline mean is 0: no ratio)"
            }
        case .harmonicMean:
            j.p = Statistics.welch(c.map { 1 / $0 }, b.map { 1 / $0 }).pValue
            j.method = "harmonic mean (rate); Welch t-test on reciprocals; ratio CI: Fieller on reciprocals \(percent)%"
            j.ci = bounds(Statistics.harmonicMeanRatio(c, b, confidence: confidence))
            if j.ci == nil { j.method += " (unbounded)" }
        case .median:
            j.p = mw.pValue
            j.method = "median of per-run values (run is the unit); Mann–Whitney U; ratio CI: \(j.bootstrapMethod ?? "bootstrap")"
            j.ci = j.ciBootstrap
            if mw.floor >= settings.alpha {
                j.method +=
                    "; with \(c.count) vs \(b.count) runs the smallest possible p is \(String(format: "%.3g", mw.floor)) ≥ α: cannot be significant"
            }
        }
        var significant = (j.p ?? 1) < settings.alpha
        if let ci = j.ci, ci[0] <= 1, ci[1] >= 1 { significant = false }
        if let ratio = j.ratio, abs(ratio - 1) < settings.minEffect { significant = false }
        if significant {
            switch polarity {
            case .neutral: j.verdict = "changed"
            case .higherIsBetter: j.verdict = centerC > centerB ? "better" : "worse"
            case .lowerIsBetter: j.verdict = centerC < centerB ? "better" : "worse"
            }
        }
        return j
    }

    /// Compatibility wrapper: judges plain samples (each value its own run) by their arithmetic mean.
    public static func compare(
        candidate: [Double], baseline: [Double], polarity: Polarity, settings: AnalysisSettings,
        center: MetricCenter = .amean
    ) -> (ratio: Double?, ci: [Double]?, p: Double?, verdict: String, method: String) {
        let metric = Metric(name: "value", value: nil, unit: "", polarity: polarity, source: "")
        let declaration = MetricDeclaration("value", polarity: polarity, center: center)
        let j = judge(
            candidate: MetricValues(
                values: candidate, groups: candidate.indices.map { "c\($0)" }, sample: metric, declaration: declaration),
            baseline: MetricValues(
                values: baseline, groups: baseline.indices.map { "b\($0)" }, sample: metric, declaration: declaration),
            polarity: polarity, settings: settings)
        return (j.ratio, j.ci, j.p, j.verdict, j.method)
    }

    /// One comparison of a candidate sample against a baseline sample.
    public static func comparison(
        workload: String, condition: String, configuration: String, metric name: String, candidate: MetricValues,
        baseline: MetricValues, settings: AnalysisSettings
    ) -> Comparison {
        let polarity = candidate.declaration.polarity
        let j = judge(candidate: candidate, baseline: baseline, polarity: polarity, settings: settings)
        return Comparison(
            workload: workload, condition: condition, configuration: configuration, metric: name,
            unit: candidate.unit, polarity: polarity, mean: j.centerValue,
            baselineMean: j.baselineCenterValue, sd: Statistics.standardDeviation(candidate.values),
            baselineSD: Statistics.standardDeviation(baseline.values), ratio: j.ratio, ratioCI: j.ci, pValue: j.p,
            n: candidate.values.count, nBaseline: baseline.values.count, verdict: j.verdict, method: j.method,
            center: j.center == .mean ? "amean" : j.center.rawValue, ratioCILogT: j.ciLogT,
            ratioCIBootstrap: j.ciBootstrap, bootstrapMethod: j.bootstrapMethod, mannWhitneyP: j.mannWhitneyP,
            mannWhitneyFloor: j.mannWhitneyFloor, role: candidate.declaration.role)
    }

    /// Each configuration against the baseline configuration under the same condition; then, when
    /// `analysis.baselineCondition` is set, each condition against it within the same configuration
    /// (those rows have `versus` set to the baseline cell).
    public static func comparisons(experiment: Experiment, runs: [RunRecord]) -> [Comparison] {
        let byCell = values(runs, experiment: experiment)
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
                var comparison = comparison(
                    workload: cell.workload, condition: cell.condition, configuration: cell.configuration,
                    metric: name, candidate: c, baseline: b, settings: experiment.analysis)
                comparison.versus = versus
                result.append(comparison)
            }
        }
        return result
    }

    /// Metrics that some run reported as unavailable, one entry per (cell, metric, reason).
    public static func unavailable(_ runs: [RunRecord]) -> [UnavailableMetric] {
        var result: OrderedSet<UnavailableMetric> = []
        for run in runs {
            for m in run.metrics where m.value == nil {
                result.append(
                    UnavailableMetric(
                        workload: run.planned.workload, condition: run.planned.condition,
                        configuration: run.planned.configuration, metric: m.name, reason: m.unavailable ?? "unavailable"))
            }
        }
        return Array(result)
    }

    /// The metric headlines use for a workload: the experiment's `analysis.primary_metric`, else
    /// the workload's declared primary; for a colocated group, its first member's, under that
    /// member's label. nil when the workload declares none.
    public static func primaryMetric(for workload: WorkloadSpec, in experiment: Experiment) -> String? {
        experiment.primaryMetric(of: workload)
    }

    /// Geometric means of the primary metric's ratios across workloads, per (condition,
    /// configuration) and per (metric, polarity): a mean is never taken across different metrics
    /// or polarities (PARSEC's roi_throughput and Tailbench's sojourn_p99_ms get one each). A
    /// colocated group counts under its first member's metric without the member prefix.
    public static func geomeans(experiment: Experiment, comparisons: [Comparison]) -> [GeomeanSummary] {
        struct Key: Hashable, Comparable {
            var metric: String
            var polarity: Polarity
            static func < (a: Key, b: Key) -> Bool { (a.metric, a.polarity.rawValue) < (b.metric, b.polarity.rawValue) }
        }
        var result: [GeomeanSummary] = []
        for condition in experiment.conditions {
            for configuration in experiment.configurations where configuration.name != experiment.baseline {
                var byKey: [Key: [String: Double]] = [:]
                for workload in experiment.workloads {
                    guard let metric = experiment.primaryMetric(of: workload) else { continue }
                    let base = workload.colocated?.first.flatMap { experiment.primaryMetric(of: $0) } ?? metric
                    if let c = comparisons.first(where: {
                        $0.workload == workload.label && $0.condition == condition.name
                            && $0.configuration == configuration.name && $0.metric == metric && $0.versus == nil
                    }), let r = c.ratio, r > 0, r.isFinite {
                        byKey[Key(metric: base, polarity: c.polarity), default: [:]][workload.label] = r
                    }
                }
                for key in byKey.keys.sorted() {
                    let ratios = byKey[key]!
                    let estimate = Statistics.geometricMeanRatio(ratios.keys.sorted().map { ratios[$0]! })
                    result.append(
                        GeomeanSummary(
                            condition: condition.name, configuration: configuration.name, metric: key.metric,
                            polarity: key.polarity, geomean: estimate.ratio,
                            ci: estimate.lower.flatMap { lo in estimate.upper.map { [lo, $0] } }, workloads: ratios,
                            method: estimate.method))
                }
            }
        }
        return result
    }
}

extension CenterStatistic {
    /// The statistic of a declared center.
    public init(_ center: MetricCenter) {
        switch center {
        case .amean: self = .mean
        case .hmean: self = .harmonicMean
        case .median: self = .median
        }
    }
}
