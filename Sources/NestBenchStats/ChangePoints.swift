import Foundation

/// A change point in a series: the mean shifts between `index − 1` and `index`.
public struct ChangePoint: Sendable, Hashable, Codable {
    /// First position of the new segment.
    public var index: Int
    public var meanBefore: Double
    public var meanAfter: Double
    public var sdBefore: Double
    public var sdAfter: Double
    /// Student's two-sided t-test of the segment before against the segment after.
    public var pValue: Double

    /// meanAfter / meanBefore − 1 (0 when meanBefore is 0).
    public var forwardChange: Double { meanBefore == 0 ? 0 : meanAfter / meanBefore - 1 }
    /// max(|after/before − 1|, |before/after − 1|), as Hunter judges the minimum change.
    public var magnitude: Double {
        let backward = meanAfter == 0 ? 0 : meanBefore / meanAfter - 1
        return Swift.max(abs(forwardChange), abs(backward))
    }
}

/// E-divisive means change-point detection with a t-test instead of permutations, as MongoDB's
/// and DataStax's Hunter (now Apache Otava) do it.
///
/// 1. Split: over windows of `windowLength` points advancing by half a window (or to the last
///    change point found), E-divisive (Matteson & James 2014, JASA 109, α = 1) repeatedly takes,
///    over the current segments, the split maximizing the energy statistic
///    Q̂ = mk/(m+k) · (2/(mk) Σ|xᵢ−yⱼ| − C(m,2)⁻¹ Σ|xᵢ−xₗ| − C(k,2)⁻¹ Σ|yⱼ−yₗ|), and keeps it while
///    Student's t-test of the points between its neighbouring change points is significant at
///    10 × `maxPValue` (Hunter's first, weak pass).
/// 2. Merge: over the whole series, the weakest change point (largest p above `maxPValue`, else
///    the smallest magnitude below `minMagnitude`) is removed and its neighbours re-tested, until
///    every change point has p < `maxPValue` and magnitude > `minMagnitude`.
/// Defaults are Hunter's: window 50, p 0.001, minimum change 5%. Each side of a split has at
/// least `minSegment` points.
public struct ChangePointDetector: Sendable, Hashable, Codable {
    public var windowLength: Int
    public var maxPValue: Double
    public var minMagnitude: Double
    public var minSegment: Int

    public init(windowLength: Int = 50, maxPValue: Double = 0.001, minMagnitude: Double = 0.05, minSegment: Int = 2) {
        precondition(windowLength >= 4, "the window must hold at least 4 points")
        self.windowLength = windowLength
        self.maxPValue = maxPValue
        self.minMagnitude = minMagnitude
        self.minSegment = Swift.max(1, minSegment)
    }

    public func detect(_ series: [Double]) -> [ChangePoint] {
        guard series.count >= 2 * minSegment else { return [] }
        let weakP = maxPValue < 0.05 ? maxPValue * 10 : (maxPValue < 0.5 ? maxPValue * 2 : maxPValue)
        var indexes: [Int] = []
        var start = 0
        let step = Swift.max(1, windowLength / 2)
        while start < series.count {
            let end = Swift.min(start + windowLength, series.count)
            let found = eDivisive(Array(series[start..<end]), pValue: weakP).map { $0 + start }.sorted()
            start = Swift.max(found.last ?? 0, start + step)
            for i in found where !indexes.contains(i) { indexes.append(i) }
            if end == series.count { break }
        }
        indexes.sort()
        var points = indexes.map { changePoint($0, in: series, endpoints: [0] + indexes + [series.count]) }
        // Merge: drop the weakest until all pass.
        while !points.isEmpty {
            var weakest = points.indices.max { points[$0].pValue < points[$1].pValue }!
            if points[weakest].pValue < maxPValue {
                weakest = points.indices.min { points[$0].magnitude < points[$1].magnitude }!
                if points[weakest].magnitude > minMagnitude { return points }
            }
            points.remove(at: weakest)
            let endpoints = [0] + points.map(\.index) + [series.count]
            for i in [weakest - 1, weakest] where i >= 0 && i < points.count {
                points[i] = changePoint(points[i].index, in: series, endpoints: endpoints)
            }
        }
        return points
    }

    /// Statistics of a change point at `index` between its neighbouring endpoints.
    func changePoint(_ index: Int, in series: [Double], endpoints: [Int]) -> ChangePoint {
        let lo = endpoints.last { $0 < index } ?? 0
        let hi = endpoints.first { $0 > index } ?? series.count
        let left = Array(series[lo..<index])
        let right = Array(series[index..<hi])
        let sl = Summary(left)
        let sr = Summary(right)
        return ChangePoint(
            index: index, meanBefore: sl.mean, meanAfter: sr.mean, sdBefore: sl.standardDeviation,
            sdAfter: sr.standardDeviation, pValue: Self.studentP(left, right))
    }

    /// Two-sided Student's t-test with pooled variance (Hunter uses scipy's `ttest_ind_from_stats`
    /// with equal variances). Zero pooled variance: p = 1 for equal means, else 0.
    static func studentP(_ a: [Double], _ b: [Double]) -> Double {
        let na = Double(a.count)
        let nb = Double(b.count)
        guard na + nb > 2, na > 0, nb > 0 else { return 1 }
        let ma = Statistics.mean(a)
        let mb = Statistics.mean(b)
        let pooled = (Statistics.variance(a) * (na - 1) + Statistics.variance(b) * (nb - 1)) / (na + nb - 2)
        let se = (pooled * (1 / na + 1 / nb)).squareRoot()
        if se == 0 { return ma == mb ? 1 : 0 }
        return Distributions.studentTTwoSided((ma - mb) / se, df: na + nb - 2)
    }

    /// E-divisive on one window: split positions (relative to the window) found significant.
    func eDivisive(_ x: [Double], pValue: Double) -> [Int] {
        let n = x.count
        guard n >= 2 * minSegment else { return [] }
        var cuts: [Int] = []
        while true {
            let bounds = [0] + cuts + [n]
            var best: (q: Double, index: Int)?
            for s in 0..<(bounds.count - 1) {
                let lo = bounds[s]
                let hi = bounds[s + 1]
                guard hi - lo >= 2 * minSegment else { continue }
                if let (q, tau) = bestSplit(x, lo, hi), q > (best?.q ?? -.infinity) { best = (q, tau) }
            }
            guard let best else { return cuts }
            let lo = bounds.last { $0 < best.index } ?? 0
            let hi = bounds.first { $0 > best.index } ?? n
            let p = Self.studentP(Array(x[lo..<best.index]), Array(x[best.index..<hi]))
            guard p <= pValue else { return cuts }
            cuts.append(best.index)
            cuts.sort()
        }
    }

    /// The split τ of x[lo..<hi] maximizing Q̂, computed incrementally in O(L²).
    func bestSplit(_ x: [Double], _ lo: Int, _ hi: Int) -> (Double, Int)? {
        let length = hi - lo
        var total = 0.0
        for i in lo..<hi {
            for j in (i + 1)..<hi { total += abs(x[i] - x[j]) }
        }
        var withinLeft = 0.0
        var withinRight = total
        var between = 0.0
        var best: (Double, Int)?
        // Move element at position p from the right part to the left part.
        for p in lo..<(hi - minSegment) {
            var toLeft = 0.0
            for i in lo..<p { toLeft += abs(x[i] - x[p]) }
            var toRight = 0.0
            for j in (p + 1)..<hi { toRight += abs(x[p] - x[j]) }
            withinLeft += toLeft
            withinRight -= toRight
            between += toRight - toLeft
            let m = Double(p + 1 - lo)
            let k = Double(length) - m
            guard Int(m) >= minSegment else { continue }
            let e =
                2 / (m * k) * between - (m > 1 ? withinLeft / (m * (m - 1) / 2) : 0)
                - (k > 1 ? withinRight / (k * (k - 1) / 2) : 0)
            let q = m * k / (m + k) * e
            if q > (best?.0 ?? -.infinity) { best = (q, p + 1) }
        }
        return best
    }
}
