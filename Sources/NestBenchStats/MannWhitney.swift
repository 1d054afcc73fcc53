import Foundation

/// Result of a two-sided Mann–Whitney U test.
public struct MannWhitneyTest: Sendable, Hashable, Codable {
    /// U of the first sample: the number of pairs (a_i, b_j) with a_i > b_j, ties counting ½.
    public var u: Double
    public var pValue: Double
    /// `exact` or `normal approximation (tie and continuity corrected)`.
    public var method: String
    /// The smallest two-sided p-value these sample sizes can produce (exact, without ties):
    /// 2 / C(m+n, m). At 3 vs 3 it is 0.1, so no result can be significant at 0.05; 5 vs 5 → 0.0079.
    public var floor: Double
}

extension Statistics {
    /// Smallest attainable two-sided p-value of the exact Mann–Whitney test for sizes m and n:
    /// both extreme rank orders, 2 / C(m+n, m) (clipped to 1).
    public static func mannWhitneyFloor(_ m: Int, _ n: Int) -> Double {
        // C(m+n, m) as a product of ratios: exact in Double for the sizes where the floor matters.
        var c = 1.0
        for i in 0..<Swift.min(m, n) { c = c * Double(m + n - i) / Double(i + 1) }
        return Swift.min(1, 2 / c)
    }

    /// Two-sided Mann–Whitney U (Wilcoxon rank-sum) test of H0: a and b come from one distribution.
    ///
    /// Exact null distribution of U (counted by the recurrence f(m,n,u) = f(m−1,n,u−n) + f(m,n−1,u),
    /// Mann & Whitney 1947) when there are no ties and m + n ≤ 40; otherwise the normal
    /// approximation with the tie-corrected variance and a continuity correction of ½. The two-sided
    /// p is 2·P(U ≥ max(U₁, U₂)), clipped to 1 — as `scipy.stats.mannwhitneyu` (method "exact" /
    /// "asymptotic") computes it. Small samples have a floor (`MannWhitneyTest.floor`).
    public static func mannWhitney(_ a: [Double], _ b: [Double]) -> MannWhitneyTest {
        precondition(!a.isEmpty && !b.isEmpty, "Mann–Whitney needs values on both sides")
        let m = a.count
        let n = b.count
        // Midranks of the pooled sample.
        let pooled = (a.map { ($0, 0) } + b.map { ($0, 1) }).sorted { $0.0 < $1.0 }
        var ranks = [Double](repeating: 0, count: pooled.count)
        var tieTerm = 0.0
        var hasTies = false
        var i = 0
        while i < pooled.count {
            var j = i
            while j + 1 < pooled.count && pooled[j + 1].0 == pooled[i].0 { j += 1 }
            let rank = Double(i + j) / 2 + 1
            for k in i...j { ranks[k] = rank }
            let t = Double(j - i + 1)
            if t > 1 {
                hasTies = true
                tieTerm += t * t * t - t
            }
            i = j + 1
        }
        var rankSumA = 0.0
        for (index, item) in pooled.enumerated() where item.1 == 0 { rankSumA += ranks[index] }
        let u1 = rankSumA - Double(m * (m + 1)) / 2
        let u2 = Double(m * n) - u1
        let big = Swift.max(u1, u2)
        let floor = mannWhitneyFloor(m, n)
        if !hasTies && m + n <= 40 {
            let counts = exactUCounts(m, n)
            let total = counts.reduce(0, +)
            let k = Int(big.rounded())
            var upper = 0.0
            for u in k..<counts.count { upper += counts[u] }
            return MannWhitneyTest(u: u1, pValue: Swift.min(1, 2 * upper / total), method: "exact", floor: floor)
        }
        let mu = Double(m * n) / 2
        let nn = Double(m + n)
        let variance = Double(m * n) / 12 * ((nn + 1) - tieTerm / (nn * (nn - 1)))
        guard variance > 0 else {
            return MannWhitneyTest(u: u1, pValue: 1, method: "normal approximation (all values tied)", floor: floor)
        }
        let z = (big - mu - 0.5) / variance.squareRoot()
        let p = Swift.min(1, 2 * (1 - Distributions.normalCDF(z)))
        return MannWhitneyTest(
            u: u1, pValue: p, method: "normal approximation (tie and continuity corrected)", floor: floor)
    }

    /// Number of rank orders giving each U = 0…m·n (no ties).
    static func exactUCounts(_ m: Int, _ n: Int) -> [Double] {
        // f[j][u] for sizes (i, j), built up over i; f(0, j) and f(i, 0) have one order with U = 0.
        var previous = [[Double]](repeating: [1], count: n + 1)
        for i in 1...m {
            var current = [[Double]](repeating: [1], count: n + 1)
            for j in 1...n {
                var f = [Double](repeating: 0, count: i * j + 1)
                // The largest value is from a: it beats all j of b → U shifts by j.
                for (u, c) in previous[j].enumerated() { f[u + j] += c }
                // The largest value is from b: U unchanged.
                for (u, c) in current[j - 1].enumerated() { f[u] += c }
                current[j] = f
            }
            previous = current
        }
        return previous[n]
    }
}
