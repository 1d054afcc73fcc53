import Foundation

extension CenterStatistic {
    /// A confidence interval of one sample's center, or nil when the sample cannot give one.
    ///
    /// - mean: Student's t interval, x̄ ± t(1−α/2, n−1)·s/√n (n ≥ 2).
    /// - hmean: the t interval of the reciprocals' mean, inverted (mmtests' Hmean; needs positive
    ///   values and a lower reciprocal bound above 0, else the upper bound is unbounded: nil).
    /// - median: the distribution-free order-statistic interval [x₍k₎, x₍n−k+1₎] with the largest k
    ///   such that 2·P(Binomial(n, ½) ≤ k−1) ≤ α (Conover, Practical Nonparametric Statistics,
    ///   §3.2); n ≤ 5 has none at 95%.
    public func interval(_ x: [Double], confidence: Double = 0.95) -> (lower: Double, upper: Double)? {
        let n = x.count
        guard n >= 2 else { return nil }
        let alpha = 1 - confidence
        switch self {
        case .mean:
            let half =
                Distributions.studentTQuantile(1 - alpha / 2, df: Double(n - 1)) * Statistics.standardDeviation(x)
                / Double(n).squareRoot()
            let m = Statistics.mean(x)
            return (m - half, m + half)
        case .harmonicMean:
            guard x.allSatisfy({ $0 > 0 }) else { return nil }
            guard let (lo, hi) = CenterStatistic.mean.interval(x.map { 1 / $0 }, confidence: confidence), lo > 0 else {
                return nil
            }
            return (1 / hi, 1 / lo)
        case .median:
            let sorted = x.sorted()
            // P(X ≤ j) for X ~ Binomial(n, 1/2), accumulated.
            var cumulative = 0.0
            var coefficient = 1.0
            var k = 0
            for j in 0..<n {
                cumulative += coefficient * pow(0.5, Double(n))
                coefficient = coefficient * Double(n - j) / Double(j + 1)
                if 2 * cumulative <= alpha { k = j + 1 } else { break }
            }
            guard k >= 1 else { return nil }
            return (sorted[k - 1], sorted[n - k])
        }
    }
}
