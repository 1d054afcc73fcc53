import Foundation

/// One observation of a bootstrap sample: a run's value and the group it belongs to.
///
/// The group is the unit above the run, e.g. the VM boot the run happened in. Runs that share a
/// group are not independent (a boot's memory layout affects all its runs), so a hierarchical
/// bootstrap resamples groups, not runs. When every run is its own group this is the ordinary
/// bootstrap over runs.
public struct GroupedValue: Sendable, Hashable, Codable {
    public var value: Double
    public var group: String

    public init(value: Double, group: String) {
        self.value = value
        self.group = group
    }

    /// Each value its own group: the bootstrap over runs.
    public static func ungrouped(_ values: [Double]) -> [GroupedValue] {
        values.enumerated().map { GroupedValue(value: $0.element, group: "#\($0.offset)") }
    }
}

/// The statistic a ratio is taken of.
public enum CenterStatistic: String, Sendable, Hashable, Codable {
    /// Arithmetic mean (times, counts: mmtests' Amean).
    case mean
    /// Harmonic mean (rates: mmtests' Hmean).
    case harmonicMean = "hmean"
    /// Median of per-run values (per-run percentiles such as p99: the run is the unit, never averaged).
    case median

    public func of(_ x: [Double]) -> Double {
        switch self {
        case .mean: return Statistics.mean(x)
        case .harmonicMean: return Statistics.harmonicMean(x)
        case .median: return Statistics.percentile(sorted: x.sorted(), 50)
        }
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): the same small seeded generator as the planner's, kept
/// here so this module imports nothing of ours. Bootstrap intervals are reproducible from the seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Statistics {
    /// Ratio of means mean(a)/mean(b) with a log-t confidence interval.
    ///
    /// log R̂ = ln x̄a − ln x̄b with the delta-method variance u_a + u_b, u = s²/(n·x̄²) (the squared
    /// relative standard errors), and Student's t at the Welch–Satterthwaite df of that sum:
    /// df = (u_a + u_b)² / (u_a²/(n_a−1) + u_b²/(n_b−1)). The interval exp(log R̂ ± t·se) is
    /// asymmetric around R̂ and never contains 0 or negative values. Needs positive means and at
    /// least 2 values per sample. Reference: e.g. Franz (2007), arXiv:0710.2024, §4 (log method).
    public static func logTRatio(_ a: [Double], _ b: [Double], confidence: Double = 0.95) -> RatioEstimate {
        precondition(a.count >= 2 && b.count >= 2, "a ratio CI needs at least 2 values per sample")
        let sa = Summary(a)
        let sb = Summary(b)
        let ratio = sa.mean / sb.mean
        let method = "log-t (delta method, Welch df)"
        guard sa.mean > 0, sb.mean > 0 else {
            return RatioEstimate(
                ratio: ratio, lower: nil, upper: nil, confidence: confidence, method: method + ": needs positive means")
        }
        let ua = sa.varianceOfMean / (sa.mean * sa.mean)
        let ub = sb.varianceOfMean / (sb.mean * sb.mean)
        if ua + ub == 0 {
            return RatioEstimate(ratio: ratio, lower: ratio, upper: ratio, confidence: confidence, method: method)
        }
        let df = (ua + ub) * (ua + ub) / (ua * ua / Double(a.count - 1) + ub * ub / Double(b.count - 1))
        let t = Distributions.studentTQuantile(1 - (1 - confidence) / 2, df: df)
        let se = (ua + ub).squareRoot()
        let center = log(ratio)
        return RatioEstimate(
            ratio: ratio, lower: exp(center - t * se), upper: exp(center + t * se), confidence: confidence, method: method)
    }

    /// Ratio of a statistic of a to the same statistic of b, with a percentile-bootstrap CI.
    ///
    /// Each resample draws, independently for a and b, as many groups as the sample has, with
    /// replacement, and keeps every run of each drawn group (resampling the highest level with
    /// replacement and the lower level without: Ren et al. 2010, "Nonparametric bootstrapping for
    /// hierarchical data", J. Appl. Stat. 37(9)). With one run per group this is the ordinary
    /// bootstrap over runs (Efron & Tibshirani 1993, ch. 13, percentile interval). Reproducible:
    /// the resamples come from `SplitMix64(seed)`. Resamples whose baseline statistic is 0 are
    /// dropped. Needs at least 2 groups per side.
    public static func bootstrapRatio(
        _ a: [GroupedValue], _ b: [GroupedValue], statistic: CenterStatistic = .mean,
        confidence: Double = 0.95, resamples: Int = 2000, seed: UInt64 = 0x5EED
    ) -> RatioEstimate {
        let groupsA = grouped(a)
        let groupsB = grouped(b)
        let ratio = statistic.of(a.map(\.value)) / statistic.of(b.map(\.value))
        let hierarchical = groupsA.count < a.count || groupsB.count < b.count
        let method =
            hierarchical
            ? "bootstrap over groups (VM boots) keeping their runs, percentile, \(resamples) resamples"
            : "bootstrap over runs, percentile, \(resamples) resamples"
        guard groupsA.count >= 2, groupsB.count >= 2 else {
            return RatioEstimate(
                ratio: ratio, lower: nil, upper: nil, confidence: confidence, method: method + ": needs 2 groups per side")
        }
        var generator = SplitMix64(seed: seed)
        var ratios: [Double] = []
        ratios.reserveCapacity(resamples)
        var bufferA: [Double] = []
        var bufferB: [Double] = []
        func draw(_ groups: [[Double]], into buffer: inout [Double]) {
            buffer.removeAll(keepingCapacity: true)
            for _ in 0..<groups.count {
                buffer += groups[Int.random(in: 0..<groups.count, using: &generator)]
            }
        }
        for _ in 0..<resamples {
            draw(groupsA, into: &bufferA)
            draw(groupsB, into: &bufferB)
            let denominator = statistic.of(bufferB)
            guard denominator != 0 else { continue }
            let r = statistic.of(bufferA) / denominator
            if r.isFinite { ratios.append(r) }
        }
        guard ratios.count >= 2 else {
            return RatioEstimate(ratio: ratio, lower: nil, upper: nil, confidence: confidence, method: method)
        }
        ratios.sort()
        let tail = (1 - confidence) / 2 * 100
        return RatioEstimate(
            ratio: ratio, lower: percentile(sorted: ratios, tail), upper: percentile(sorted: ratios, 100 - tail),
            confidence: confidence, method: method)
    }

    /// Values split by group, groups in first-seen order.
    static func grouped(_ x: [GroupedValue]) -> [[Double]] {
        var order: [String] = []
        var byGroup: [String: [Double]] = [:]
        for v in x {
            if byGroup[v.group] == nil { order.append(v.group) }
            byGroup[v.group, default: []].append(v.value)
        }
        return order.map { byGroup[$0]! }
    }

    /// Ratio of harmonic means Hmean(a)/Hmean(b) with Fieller's CI.
    ///
    /// Hmean(x) = 1/mean(1/x), so Hmean(a)/Hmean(b) = mean(1/b)/mean(1/a): Fieller's interval on
    /// the reciprocals (time per unit of work), which is where the harmonic mean is an arithmetic
    /// mean. Values must be positive.
    public static func harmonicMeanRatio(_ a: [Double], _ b: [Double], confidence: Double = 0.95) -> RatioEstimate {
        precondition(a.allSatisfy { $0 > 0 } && b.allSatisfy { $0 > 0 }, "harmonic means need positive values")
        var r = fiellerRatio(b.map { 1 / $0 }, a.map { 1 / $0 }, confidence: confidence)
        r.method = "Fieller on reciprocals (ratio of harmonic means, Welch df)"
        return r
    }
}

/// One observation of a multi-testbed bootstrap: a run's value, its group (VM boot, or the run
/// itself) and the testbed it was measured on.
public struct TestbedValue: Sendable, Hashable, Codable {
    public var value: Double
    public var group: String
    public var testbed: String

    public init(value: Double, group: String, testbed: String) {
        self.value = value
        self.group = group
        self.testbed = testbed
    }
}

/// The ratio of a candidate to a baseline over several testbeds: each testbed's own ratio and
/// the combined one.
public struct TestbedRatios: Sendable, Hashable {
    public struct Entry: Sendable, Hashable {
        public var testbed: String
        public var estimate: RatioEstimate
    }
    /// Each testbed's ratio and its bootstrap CI (over its groups), testbeds in first-seen order.
    public var perTestbed: [Entry]
    /// The geometric mean of the per-testbed ratios with the three-level bootstrap CI.
    public var combined: RatioEstimate
    /// Testbeds whose own CI does not overlap the others' combined CI: they disagree with the others.
    public var disagreeing: [String]
}

extension Statistics {
    /// Ratio of a statistic of a to that of b over several testbeds, the testbed as the top level
    /// of a hierarchical bootstrap (testbed → group (VM boot) → run).
    ///
    /// A testbed is a blocking factor (every configuration of a repetition block runs on the same
    /// testbed), so only testbeds with both sides count, and the ratio is taken per testbed first:
    /// r_t = stat(a_t) / stat(b_t). The combined ratio is the geometric mean of the r_t (each
    /// testbed weighs the same, whatever its number of runs). Each resample draws as many
    /// testbeds as there are, with replacement — the same testbeds for both sides, as the
    /// blocking pairs them — and within each drawn testbed, independently per side, its groups
    /// with replacement keeping their runs (Ren et al. 2010, resampling the top level and each
    /// level below with replacement). The CI is the percentile interval. A testbed disagrees when
    /// its own bootstrap CI (over its groups) does not overlap the CI of the combined ratio of the
    /// other testbeds (leave one out; with two testbeds, the other's own CI). Needs 2 testbeds
    /// for a combined CI, and 2 groups per side on a testbed for its own CI.
    public static func testbedBootstrapRatio(
        _ a: [TestbedValue], _ b: [TestbedValue], statistic: CenterStatistic = .mean,
        confidence: Double = 0.95, resamples: Int = 2000, seed: UInt64 = 0x5EED, flagging: Bool = true
    ) -> TestbedRatios {
        var order: [String] = []
        for v in a + b where !order.contains(v.testbed) { order.append(v.testbed) }
        let both = order.filter { t in a.contains { $0.testbed == t } && b.contains { $0.testbed == t } }
        var per: [TestbedRatios.Entry] = []
        var levels: [(a: [[Double]], b: [[Double]], ratio: Double)] = []
        for t in both {
            let ta = a.filter { $0.testbed == t }.map { GroupedValue(value: $0.value, group: $0.group) }
            let tb = b.filter { $0.testbed == t }.map { GroupedValue(value: $0.value, group: $0.group) }
            per.append(
                TestbedRatios.Entry(
                    testbed: t,
                    estimate: bootstrapRatio(
                        ta, tb, statistic: statistic, confidence: confidence, resamples: resamples, seed: seed)
                ))
            levels.append((grouped(ta), grouped(tb), per.last!.estimate.ratio))
        }
        let method =
            "bootstrap over testbeds (testbed → VM boot → run), geometric mean of per-testbed ratios, percentile, \(resamples) resamples"
        let usable = levels.filter { $0.ratio > 0 && $0.ratio.isFinite }
        guard usable.count == levels.count, !levels.isEmpty else {
            let combined = RatioEstimate(
                ratio: .nan, lower: nil, upper: nil, confidence: confidence,
                method: method + ": a testbed's ratio is not positive")
            return TestbedRatios(perTestbed: per, combined: combined, disagreeing: [])
        }
        let point = exp(levels.map { log($0.ratio) }.reduce(0, +) / Double(levels.count))
        guard levels.count >= 2 else {
            let combined = RatioEstimate(
                ratio: point, lower: nil, upper: nil, confidence: confidence, method: method + ": needs 2 testbeds")
            return TestbedRatios(perTestbed: per, combined: combined, disagreeing: [])
        }
        var generator = SplitMix64(seed: seed)
        var ratios: [Double] = []
        ratios.reserveCapacity(resamples)
        func draw(_ groups: [[Double]]) -> [Double] {
            var out: [Double] = []
            for _ in 0..<groups.count { out += groups[Int.random(in: 0..<groups.count, using: &generator)] }
            return out
        }
        resampling: for _ in 0..<resamples {
            var sum = 0.0
            for _ in 0..<levels.count {
                let t = levels[Int.random(in: 0..<levels.count, using: &generator)]
                let denominator = statistic.of(draw(t.b))
                let numerator = statistic.of(draw(t.a))
                guard denominator > 0, numerator > 0 else { continue resampling }
                sum += log(numerator / denominator)
            }
            ratios.append(exp(sum / Double(levels.count)))
        }
        var combined = RatioEstimate(ratio: point, lower: nil, upper: nil, confidence: confidence, method: method)
        if ratios.count >= 2 {
            ratios.sort()
            let tail = (1 - confidence) / 2 * 100
            combined.lower = percentile(sorted: ratios, tail)
            combined.upper = percentile(sorted: ratios, 100 - tail)
        }
        // Leave one out: a testbed disagrees when its CI does not overlap the CI of the others'
        // combined ratio (with one other testbed, that testbed's own CI). With two testbeds
        // that disagree, both are flagged: nothing tells which one is odd.
        var disagreeing: [String] = []
        if flagging {
            for entry in per {
                guard let lo = entry.estimate.lower, let hi = entry.estimate.upper else { continue }
                let others = both.filter { $0 != entry.testbed }
                let rest: RatioEstimate
                if others.count >= 2 {
                    rest =
                        testbedBootstrapRatio(
                            a.filter { others.contains($0.testbed) }, b.filter { others.contains($0.testbed) },
                            statistic: statistic, confidence: confidence, resamples: resamples, seed: seed, flagging: false
                        ).combined
                } else {
                    rest = per.first { $0.testbed == others.first }?.estimate ?? entry.estimate
                }
                guard let rlo = rest.lower, let rhi = rest.upper else { continue }
                if hi < rlo || lo > rhi { disagreeing.append(entry.testbed) }
            }
        }
        return TestbedRatios(perTestbed: per, combined: combined, disagreeing: disagreeing)
    }
}
