import Foundation

/// Descriptive statistics of one sample.
public struct Summary: Sendable, Hashable, Codable {
    public var n: Int
    public var mean: Double
    /// Sample standard deviation (n − 1 denominator); 0 when n < 2.
    public var standardDeviation: Double
    public var min: Double
    public var max: Double

    public init(_ values: [Double]) {
        n = values.count
        mean = values.isEmpty ? .nan : Statistics.mean(values)
        standardDeviation = Statistics.standardDeviation(values)
        min = values.min() ?? .nan
        max = values.max() ?? .nan
    }

    /// Squared standard error of the mean.
    public var varianceOfMean: Double { n > 0 ? standardDeviation * standardDeviation / Double(n) : .nan }
}

/// Result of Welch's unequal-variances t-test.
public struct WelchTest: Sendable, Hashable, Codable {
    public var t: Double
    /// Welch–Satterthwaite degrees of freedom.
    public var df: Double
    /// Two-sided p-value.
    public var pValue: Double
}

/// A ratio of means with its confidence interval.
public struct RatioEstimate: Sendable, Hashable, Codable {
    public var ratio: Double
    /// Lower and upper bound; nil when the interval is unbounded (baseline mean not
    /// significantly different from zero, Fieller's g ≥ 1).
    public var lower: Double?
    public var upper: Double?
    public var confidence: Double
    public var method: String
}

/// Statistics used to compare configurations. Pure functions of their inputs.
public enum Statistics {
    /// Arithmetic mean.
    public static func mean(_ x: [Double]) -> Double {
        precondition(!x.isEmpty, "mean of an empty sample")
        // Kahan–Babuska summation keeps long samples exact to rounding.
        var sum = 0.0
        var compensation = 0.0
        for v in x {
            let t = sum + v
            if abs(sum) >= abs(v) { compensation += (sum - t) + v } else { compensation += (v - t) + sum }
            sum = t
        }
        return (sum + compensation) / Double(x.count)
    }

    /// Sample variance with the n − 1 denominator (two-pass); 0 when n < 2.
    public static func variance(_ x: [Double]) -> Double {
        guard x.count > 1 else { return 0 }
        let m = mean(x)
        var ss = 0.0
        for v in x { ss += (v - m) * (v - m) }
        return ss / Double(x.count - 1)
    }

    public static func standardDeviation(_ x: [Double]) -> Double { variance(x).squareRoot() }

    /// Geometric mean of positive values: exp(mean(log x)).
    public static func geometricMean(_ x: [Double]) -> Double {
        precondition(x.allSatisfy { $0 > 0 }, "geometric mean needs positive values")
        return exp(mean(x.map { log($0) }))
    }

    /// Harmonic mean of positive values (mmtests' Hmean, for rates).
    public static func harmonicMean(_ x: [Double]) -> Double {
        precondition(x.allSatisfy { $0 > 0 }, "harmonic mean needs positive values")
        return Double(x.count) / x.reduce(0) { $0 + 1 / $1 }
    }

    /// Welch's t-test of H0: mean(a) = mean(b).
    ///
    /// t = (x̄a − x̄b) / √(sa²/na + sb²/nb), df by Welch–Satterthwaite. Assumes independent,
    /// roughly normal samples of at least 2 each. When both variances are 0, returns p = 1 for
    /// equal means and p = 0 otherwise.
    public static func welch(_ a: [Double], _ b: [Double]) -> WelchTest {
        precondition(a.count >= 2 && b.count >= 2, "Welch's test needs at least 2 values per sample")
        let sa = Summary(a)
        let sb = Summary(b)
        let va = sa.varianceOfMean
        let vb = sb.varianceOfMean
        let se = (va + vb).squareRoot()
        if se == 0 {
            return WelchTest(
                t: sa.mean == sb.mean ? 0 : .infinity, df: Double(a.count + b.count - 2),
                pValue: sa.mean == sb.mean ? 1 : 0)
        }
        let t = (sa.mean - sb.mean) / se
        let df = (va + vb) * (va + vb) / (va * va / Double(a.count - 1) + vb * vb / Double(b.count - 1))
        return WelchTest(t: t, df: df, pValue: Distributions.studentTTwoSided(t, df: df))
    }

    /// Ratio of means mean(a)/mean(b) with Fieller's confidence interval for independent samples
    /// with unequal variances.
    ///
    /// Solves (x̄a − R·x̄b)² = t²(va + R²·vb) for R, where va, vb are the squared standard errors
    /// and t the two-sided Student quantile at the Welch–Satterthwaite df of the linear
    /// combination x̄a − R̂·x̄b (R̂ = x̄a/x̄b). Reference: Fieller (1954), J. R. Stat. Soc. B 16;
    /// the unequal-variance form as in Franz (2007), "Ratios: A short guide to confidence limits
    /// and proper use", arXiv:0710.2024, §3. The interval is unbounded (nil bounds) when
    /// g = t²·vb/x̄b² ≥ 1, i.e. the baseline mean is not distinguishable from zero.
    public static func fiellerRatio(_ a: [Double], _ b: [Double], confidence: Double = 0.95) -> RatioEstimate {
        precondition(a.count >= 2 && b.count >= 2, "a ratio CI needs at least 2 values per sample")
        let sa = Summary(a)
        let sb = Summary(b)
        let ratio = sa.mean / sb.mean
        let va = sa.varianceOfMean
        let vb = sb.varianceOfMean
        let method = "Fieller (Welch df)"
        if va == 0 && vb == 0 {
            return RatioEstimate(ratio: ratio, lower: ratio, upper: ratio, confidence: confidence, method: method)
        }
        let r2vb = ratio * ratio * vb
        var df =
            (va + r2vb) * (va + r2vb)
            / (va * va / Double(a.count - 1) + r2vb * r2vb / Double(b.count - 1))
        // R̂ = 0 with a constant numerator (all candidate values 0): the combination has no
        // variance to weigh; fall back to the smaller sample's df.
        if !(df > 0) || !df.isFinite { df = Double(Swift.min(a.count, b.count) - 1) }
        let t = Distributions.studentTQuantile(1 - (1 - confidence) / 2, df: df)
        let t2 = t * t
        let g = t2 * vb / (sb.mean * sb.mean)
        if g >= 1 || !g.isFinite {
            return RatioEstimate(ratio: ratio, lower: nil, upper: nil, confidence: confidence, method: method)
        }
        let qa = sb.mean * sb.mean - t2 * vb
        let qb = sa.mean * sb.mean
        let qc = sa.mean * sa.mean - t2 * va
        let disc = max(0, qb * qb - qa * qc)
        let lo = (qb - disc.squareRoot()) / qa
        let hi = (qb + disc.squareRoot()) / qa
        return RatioEstimate(ratio: ratio, lower: min(lo, hi), upper: max(lo, hi), confidence: confidence, method: method)
    }

    /// Geometric mean of ratios with a t-based CI on the log scale across the ratios
    /// (the spread is between workloads, not measurement noise). CI is nil for fewer than 2 ratios.
    public static func geometricMeanRatio(_ ratios: [Double], confidence: Double = 0.95) -> RatioEstimate {
        let logs = ratios.map { log($0) }
        let center = exp(mean(logs))
        guard logs.count >= 2 else {
            return RatioEstimate(
                ratio: center, lower: nil, upper: nil, confidence: confidence,
                method: "geometric mean (one ratio: no CI)")
        }
        let se = standardDeviation(logs) / Double(logs.count).squareRoot()
        let t = Distributions.studentTQuantile(1 - (1 - confidence) / 2, df: Double(logs.count - 1))
        return RatioEstimate(
            ratio: center, lower: exp(mean(logs) - t * se), upper: exp(mean(logs) + t * se),
            confidence: confidence, method: "geometric mean, log-t across workloads")
    }

    /// Linear-interpolation percentile of sorted values (numpy's default, "linear"; Hyndman & Fan type 7).
    public static func percentile(sorted x: [Double], _ p: Double) -> Double {
        precondition(!x.isEmpty, "percentile of an empty sample")
        precondition(p >= 0 && p <= 100, "percentile must be in [0, 100]")
        let rank = p / 100 * Double(x.count - 1)
        let lo = Int(rank.rounded(.down))
        let hi = Swift.min(lo + 1, x.count - 1)
        let frac = rank - Double(lo)
        return x[lo] + (x[hi] - x[lo]) * frac
    }
}
