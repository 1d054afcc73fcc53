import Foundation
import NestBenchModel
import NestBenchStats
import Yams

/// A relative threshold for one metric, with the direction that is an improvement.
public struct MetricThreshold: Sendable, Hashable, Codable {
    /// Relative change, e.g. 0.05 for 5%.
    public var relative: Double
    /// nil: the metric's own polarity.
    public var polarity: Polarity?

    public init(relative: Double, polarity: Polarity? = nil) {
        self.relative = relative
        self.polarity = polarity
    }
}

/// Thresholds of `compare` and `nightly`: which metrics are judged, and how much change counts.
public struct ThresholdSet: Sendable, Hashable, Codable {
    /// Metric name → threshold. A metric listed here is always judged.
    public var perMetric: [String: MetricThreshold]
    /// For judged metrics without their own threshold.
    public var defaultRelative: Double
    /// Judge every metric with a polarity, not only the primary metric and the listed ones.
    public var allMetrics: Bool
    /// When set, judge only these metrics (the rest are reported).
    public var only: Set<String>?
    /// Whether a thresholds file gave `default:` (so it overrides the command's default).
    public var fileSetsDefault = false

    public init(
        perMetric: [String: MetricThreshold] = [:], defaultRelative: Double = 0.05, allMetrics: Bool = false,
        only: Set<String>? = nil
    ) {
        self.perMetric = perMetric
        self.defaultRelative = defaultRelative
        self.allMetrics = allMetrics
        self.only = only
    }

    /// The threshold of a metric when it is judged, nil when it is only reported.
    public func threshold(for metric: String, primary: Set<String>) -> MetricThreshold? {
        if let only, !only.contains(metric) { return nil }
        if only != nil { return perMetric[metric] ?? MetricThreshold(relative: defaultRelative) }
        if let t = perMetric[metric] { return t }
        if allMetrics || primary.contains(metric) { return MetricThreshold(relative: defaultRelative) }
        return nil
    }

    /// Parses `5%`, `0.05`, `ops_per_sec=5%`, `wall_seconds=3%:lower`.
    public static func parse(_ text: String, source: String) throws(ThresholdError) -> (metric: String?, MetricThreshold) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var metric: String?
        var rest = Substring(trimmed)
        if let eq = trimmed.firstIndex(where: { $0 == "=" || $0 == ":" }), trimmed[eq] == "=" || !trimmed[..<eq].contains("%") {
            // `name=…` or YAML-style `name: …`; a bare `5%:lower` has no name.
            let name = trimmed[..<eq].trimmingCharacters(in: .whitespaces)
            if Double(name.replacingOccurrences(of: "%", with: "")) == nil {
                metric = name
                rest = trimmed[trimmed.index(after: eq)...]
            }
        }
        let parts = rest.split(whereSeparator: { $0 == ":" || $0 == " " }).map(String.init)
        guard let amount = parts.first else {
            throw ThresholdError(source: source, message: "\"\(text)\": expected a relative threshold such as 5% or 0.05")
        }
        let value: Double?
        if amount.hasSuffix("%") { value = Double(amount.dropLast()).map { $0 / 100 } } else { value = Double(amount) }
        guard let value, value >= 0, value.isFinite else {
            throw ThresholdError(
                source: source, message: "\"\(text)\": \"\(amount)\" is not a relative threshold such as 5% or 0.05")
        }
        var polarity: Polarity?
        if parts.count > 1 {
            guard let p = Polarity(rawValue: parts[1]) else {
                throw ThresholdError(
                    source: source, message: "\"\(text)\": polarity must be higher, lower or neutral, found \"\(parts[1])\"")
            }
            polarity = p
        }
        return (metric, MetricThreshold(relative: value, polarity: polarity))
    }

    /// A thresholds file, YAML: one `metric: 5%` or `metric: 5% lower` per line; `#` comments;
    /// `default: 3%` sets the default. Errors name the file and line.
    public static func parseFile(_ text: String, path: String) throws(ThresholdError) -> ThresholdSet {
        var set = ThresholdSet()
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ThresholdError(source: path, message: "not a YAML mapping of metric: threshold lines (\(error))")
        }
        guard let root else { return set }
        guard let mapping = root.mapping else {
            throw ThresholdError(
                source: "\(path):\(root.mark.map { String($0.line) } ?? "1")", message: "expected metric: threshold lines")
        }
        for (key, value) in mapping {
            let source = "\(path):\(key.mark.map { String($0.line) } ?? "?")"
            guard let metric = key.string, !metric.isEmpty, let amount = value.scalar?.string else {
                throw ThresholdError(source: source, message: "expected metric: threshold, such as ops_per_sec: 5% higher")
            }
            let (_, threshold) = try parse(amount, source: source)
            if metric == "default" {
                set.defaultRelative = threshold.relative
                set.fileSetsDefault = true
            } else {
                set.perMetric[metric] = threshold
            }
        }
        return set
    }
}

/// A malformed threshold, naming the flag or file line.
public struct ThresholdError: Error, Sendable, CustomStringConvertible {
    public var source: String
    public var message: String
    public var description: String { "\(source): \(message)" }
}

/// One metric of one (workload, condition) in an A/B comparison.
public struct ABVerdict: Codable, Sendable, Hashable {
    public var workload: String
    public var condition: String
    public var metric: String
    public var unit: String
    public var polarity: Polarity
    public var baselineValue: Double
    public var candidateValue: Double
    public var ratio: Double?
    public var ratioCI: [Double]?
    public var pValue: Double?
    public var n: Int
    public var nBaseline: Int
    /// nil when the metric is reported, not judged.
    public var threshold: Double?
    /// `regression`, `improvement`, `same`, or `reported` (not judged).
    public var verdict: String
    public var method: String

    enum CodingKeys: String, CodingKey {
        case workload, condition, metric, unit, polarity
        case baselineValue = "baseline_value"
        case candidateValue = "candidate_value"
        case ratio
        case ratioCI = "ratio_ci"
        case pValue = "p_value"
        case n
        case nBaseline = "n_baseline"
        case threshold, verdict, method
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(workload, forKey: .workload)
        try c.encode(condition, forKey: .condition)
        try c.encode(metric, forKey: .metric)
        try c.encode(unit, forKey: .unit)
        try c.encode(polarity, forKey: .polarity)
        try c.encode(baselineValue, forKey: .baselineValue)
        try c.encode(candidateValue, forKey: .candidateValue)
        try c.encode(ratio, forKey: .ratio)
        try c.encode(ratioCI, forKey: .ratioCI)
        try c.encode(pValue, forKey: .pValue)
        try c.encode(n, forKey: .n)
        try c.encode(nBaseline, forKey: .nBaseline)
        try c.encode(threshold, forKey: .threshold)
        try c.encode(verdict, forKey: .verdict)
        try c.encode(method, forKey: .method)
    }
}

/// The outcome of `nestbench compare` / `nightly`, mapped to ordo-one/benchmark's exit codes.
public enum GateOutcome: String, Codable, Sendable {
    case noChange = "no-significant-change"
    case regression
    case improvement

    /// 2 for a regression; 4 for improvements only when asked to fail on them; else 0.
    public func exitCode(failOnImprovement: Bool) -> Int32 {
        switch self {
        case .regression: return 2
        case .improvement: return failOnImprovement ? 4 : 0
        case .noChange: return 0
        }
    }

    public static func of(_ verdicts: [String]) -> GateOutcome {
        if verdicts.contains("regression") { return .regression }
        if verdicts.contains("improvement") { return .improvement }
        return .noChange
    }
}

/// Result of comparing a candidate configuration (or run) with a baseline.
public struct ABComparison: Codable, Sendable {
    public var baseline: String
    public var candidate: String
    public var verdicts: [ABVerdict]
    public var outcome: GateOutcome
    public var notes: [String]
}

/// Compares two samples of runs: a baseline configuration's and a candidate's, from one run or two.
public enum ABComparator {
    /// - Parameters:
    ///   - baseline: runs of the baseline side (already filtered to one configuration).
    ///   - candidate: runs of the candidate side.
    ///   - primary: the metrics judged by default (the experiment's primary metric per workload).
    ///   - experiment: whose metric declarations say each metric's center and polarity (the
    ///     candidate's); undeclared metrics keep their own polarity and the arithmetic mean.
    public static func compare(
        baseline: [RunRecord], candidate: [RunRecord], baselineLabel: String, candidateLabel: String,
        thresholds: ThresholdSet, primary: Set<String>, alpha: Double, experiment: Experiment? = nil
    ) -> ABComparison {
        func byKey(_ runs: [RunRecord]) -> [String: [String: MetricValues]] {
            // Key on (workload, condition); configuration is the side.
            var relabeled = runs
            for i in relabeled.indices { relabeled[i].planned.configuration = "x" }
            var out: [String: [String: MetricValues]] = [:]
            for (cell, metrics) in Comparator.values(relabeled, experiment: experiment) {
                out["\(cell.workload)\u{0}\(cell.condition)"] = metrics
            }
            return out
        }
        let base = byKey(baseline)
        let cand = byKey(candidate)
        var verdicts: [ABVerdict] = []
        var notes: [String] = []
        for key in cand.keys.sorted() {
            guard let b = base[key] else {
                let parts = key.split(separator: "\u{0}").map(String.init)
                notes.append("\(parts[0]) / \(parts[1]): no baseline runs to compare with")
                continue
            }
            let parts = key.split(separator: "\u{0}", omittingEmptySubsequences: false).map(String.init)
            let c = cand[key]!
            for name in c.keys.sorted() {
                guard let cv = c[name], let bv = b[name] else { continue }
                let threshold = thresholds.threshold(for: name, primary: primary)
                let polarity = threshold?.polarity ?? cv.declaration.polarity
                let settings = AnalysisSettings(alpha: alpha, minEffect: threshold?.relative ?? 0)
                let j = Comparator.judge(candidate: cv, baseline: bv, polarity: polarity, settings: settings)
                let verdict: String
                if threshold == nil || polarity == .neutral {
                    verdict = "reported"
                } else {
                    switch j.verdict {
                    case "worse": verdict = "regression"
                    case "better": verdict = "improvement"
                    default: verdict = "same"
                    }
                }
                verdicts.append(
                    ABVerdict(
                        workload: parts[0], condition: parts[1], metric: name, unit: cv.unit, polarity: polarity,
                        baselineValue: j.baselineCenterValue, candidateValue: j.centerValue, ratio: j.ratio, ratioCI: j.ci,
                        pValue: j.p, n: cv.values.count, nBaseline: bv.values.count, threshold: threshold?.relative,
                        verdict: verdict, method: j.method))
            }
        }
        if !verdicts.contains(where: { $0.verdict != "reported" }) {
            notes.append("no metric was judged: name one with --threshold METRIC=PCT, or pass --all-metrics")
        }
        return ABComparison(
            baseline: baselineLabel, candidate: candidateLabel, verdicts: verdicts,
            outcome: GateOutcome.of(verdicts.map(\.verdict)), notes: notes)
    }
}
