import Foundation
import Testing

@testable import NestBenchStats

/// Known-answer values computed with SciPy 1.17.1 / NumPy 2.4.6 on this machine:
///
///     from scipy import stats; import numpy as np
///     a=[10.1,9.8,10.4,10.0,9.9]; b=[12.0,12.5,11.8,12.2,12.4,11.9]
///     ma,mb=np.mean(a),np.mean(b); va=np.var(a,ddof=1)/5; vb=np.var(b,ddof=1)/6
///     # log-t: delta-method variance of log(ma/mb), Welch df of the two relative variances
///     ua,ub=va/ma**2,vb/mb**2; df=(ua+ub)**2/(ua**2/4+ub**2/5); t=stats.t.ppf(0.975,df); se=np.sqrt(ua+ub)
///     np.exp(np.log(ma/mb)-t*se), np.exp(np.log(ma/mb)+t*se)   # 0.8016451595483128, 0.8541320003822802
///     # bootstrap over runs, percentile interval of the ratio of means
///     r=stats.bootstrap((a,b), lambda x,y,axis=-1: np.mean(x,axis=axis)/np.mean(y,axis=axis),
///         method='percentile', n_resamples=200000, vectorized=True, random_state=np.random.default_rng(1))
///     r.confidence_interval                                     # 0.8080971659919028, 0.8484181568088032
///     stats.mannwhitneyu([1,2,3],[4,5,6],method='exact')              # U=0, p=0.1
///     stats.mannwhitneyu([1,2,3,4,5],[6,7,8,9,10],method='exact')     # U=0, p=0.007936507936507936
///     stats.mannwhitneyu([1.1,2.3,0.7,4.2,3.3,5.0],[3.9,6.1,4.8,7.2,5.5],method='exact')  # U=3, p=0.030303030303030304
///     stats.mannwhitneyu([1,2,2,3,4,5,5,6,7,8,9,10],[4,5,6,6,7,8,9,11,12,12,13],method='asymptotic')
///                                                                     # U=30, p=0.02834560321374223
///     g=np.log([1.2,0.9,1.5]); se=np.std(g,ddof=1)/np.sqrt(3); t2=stats.t.ppf(0.975,2)
///     np.exp(g.mean()-t2*se), np.exp(g.mean()+t2*se)                  # 0.6216627144454685, 2.2188188968978144
///
/// The bootstrap's resamples come from a different generator than NumPy's, so it is compared to
/// SciPy's 200,000-resample interval within Monte Carlo error (±0.003 at 20,000 resamples).
@Suite("Ratio intervals and rank test, known answers")
struct IntervalKnownAnswerTests {
    let a = [10.1, 9.8, 10.4, 10.0, 9.9]
    let b = [12.0, 12.5, 11.8, 12.2, 12.4, 11.9]

    func close(_ x: Double, _ y: Double, _ tolerance: Double = 1e-9) -> Bool {
        abs(x - y) <= tolerance * max(1, abs(y))
    }

    @Test func logT() throws {
        let r = Statistics.logTRatio(a, b)
        #expect(close(r.ratio, 0.8274725274725274))
        #expect(close(try #require(r.lower), 0.8016451595483128))
        #expect(close(try #require(r.upper), 0.8541320003822802))
    }

    @Test func bootstrapOverRuns() throws {
        let r = Statistics.bootstrapRatio(GroupedValue.ungrouped(a), GroupedValue.ungrouped(b), resamples: 20_000, seed: 7)
        #expect(abs(try #require(r.lower) - 0.8080971659919028) < 0.003)
        #expect(abs(try #require(r.upper) - 0.8484181568088032) < 0.003)
        #expect(r.method.contains("over runs"))
        // Same seed, same interval.
        let again = Statistics.bootstrapRatio(GroupedValue.ungrouped(a), GroupedValue.ungrouped(b), resamples: 20_000, seed: 7)
        #expect(again == r)
    }

    @Test(arguments: [
        ([1.0, 2, 3], [4.0, 5, 6], 0.0, 0.1),
        ([1.0, 2, 3, 4, 5], [6.0, 7, 8, 9, 10], 0.0, 0.007936507936507936),
        ([1.1, 2.3, 0.7, 4.2, 3.3, 5.0], [3.9, 6.1, 4.8, 7.2, 5.5], 3.0, 0.030303030303030304),
        ([1.0, 2, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10], [4.0, 5, 6, 6, 7, 8, 9, 11, 12, 12, 13], 30.0, 0.02834560321374223),
    ])
    func mannWhitney(a: [Double], b: [Double], u: Double, p: Double) {
        let r = Statistics.mannWhitney(a, b)
        #expect(r.u == u)
        #expect(close(r.pValue, p, 1e-9), "\(r)")
    }

    /// The floor of the exact test: 3 vs 3 cannot reach p < 0.05 whatever the data; 5 vs 5 → 0.0079.
    @Test func mannWhitneyFloor() {
        #expect(close(Statistics.mannWhitneyFloor(3, 3), 0.1))
        #expect(close(Statistics.mannWhitneyFloor(5, 5), 0.007936507936507936))
        #expect(Statistics.mannWhitney([1, 2, 3], [100, 200, 300]).pValue >= 0.05)
        #expect(Statistics.mannWhitney([1, 2, 3], [100, 200, 300]).floor == Statistics.mannWhitneyFloor(3, 3))
    }

    @Test func geometricMeanOfRatiosCI() throws {
        let g = Statistics.geometricMeanRatio([1.2, 0.9, 1.5])
        #expect(close(try #require(g.lower), 0.6216627144454685))
        #expect(close(try #require(g.upper), 2.2188188968978144))
    }

    /// Hmean(a)/Hmean(b) is mean(1/b)/mean(1/a), so its Fieller interval is the reciprocals' one.
    @Test func harmonicMeanRatioIsFiellerOnReciprocals() throws {
        let h = Statistics.harmonicMeanRatio(a, b)
        #expect(close(h.ratio, Statistics.harmonicMean(a) / Statistics.harmonicMean(b), 1e-12))
        let f = Statistics.fiellerRatio(b.map { 1 / $0 }, a.map { 1 / $0 })
        #expect(h.lower == f.lower && h.upper == f.upper)
        #expect(try #require(h.lower) < h.ratio && h.ratio < (try #require(h.upper)))
    }
}

@Suite("Hierarchical bootstrap")
struct HierarchicalBootstrapTests {
    /// Runs nested in VM boots: each boot shifts all its runs. Resampling runs as if independent
    /// understates the uncertainty; resampling boots does not.
    @Test func bootEffectsWidenTheInterval() throws {
        var generator = SplitMix64(seed: 3)
        func boots(_ level: Double) -> [GroupedValue] {
            (0..<4).flatMap { boot -> [GroupedValue] in
                let shift = Double.random(in: -0.08...0.08, using: &generator)
                return (0..<5).map { _ in
                    GroupedValue(
                        value: level * (1 + shift + Double.random(in: -0.005...0.005, using: &generator)), group: "boot\(boot)")
                }
            }
        }
        let a = boots(110)
        let b = boots(100)
        let nested = Statistics.bootstrapRatio(a, b, resamples: 4000)
        let flat = Statistics.bootstrapRatio(
            GroupedValue.ungrouped(a.map(\.value)), GroupedValue.ungrouped(b.map(\.value)), resamples: 4000)
        #expect(nested.method.contains("groups"))
        let nestedWidth = try #require(nested.upper) - (try #require(nested.lower))
        let flatWidth = try #require(flat.upper) - (try #require(flat.lower))
        #expect(nestedWidth > 1.5 * flatWidth, "nested \(nestedWidth) vs flat \(flatWidth)")
    }

    @Test func needsTwoGroups() {
        let one = [GroupedValue(value: 1, group: "g"), GroupedValue(value: 2, group: "g")]
        let r = Statistics.bootstrapRatio(one, GroupedValue.ungrouped([1, 2, 3]))
        #expect(r.lower == nil && r.upper == nil)
    }

    @Test func medianOfRunsIsNotAMean() {
        // Per-run p99 values: the center is their median, one outlier run does not move it.
        let p99 = [10.0, 11, 10.5, 80]
        #expect(CenterStatistic.median.of(p99) == 10.75)
    }
}

/// Change-point detection on synthetic histories.
///
/// Histories of 120 nightly values with Gaussian noise of 1% relative sd (Box–Muller on
/// SplitMix64), steps at known positions. Done-when criteria, checked here:
/// - every step of at least 5% is found within ±1 position, over 20 seeds each (all must pass):
///   steps of ±6%, +10%, −20% with Hunter's defaults; steps of exactly ±5% with the minimum change
///   set to 4%, because a 5% step measures as 5% ± noise and so sits on the default threshold
///   (5%) itself — with the default it is found only when the noise pushes it above;
/// - on flat noise, no change point is reported in at least 95% of 200 seeds (defaults).
@Suite("Change points (E-divisive with t-test)")
struct ChangePointTests {
    static func noise(_ n: Int, seed: UInt64, sd: Double = 0.01) -> [Double] {
        var g = SplitMix64(seed: seed)
        return (0..<n).map { _ in
            let u1 = max(Double(g.next() >> 11) / Double(1 << 53), 1e-300)
            let u2 = Double(g.next() >> 11) / Double(1 << 53)
            return sd * (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
    }

    static func history(steps: [(at: Int, by: Double)], n: Int = 120, seed: UInt64) -> [Double] {
        let e = noise(n, seed: seed)
        return (0..<n).map { i in
            var level = 100.0
            for s in steps where i >= s.at { level *= 1 + s.by }
            return level * (1 + e[i])
        }
    }

    @Test(arguments: [
        [(at: 40, by: -0.06)], [(at: 60, by: 0.06)], [(at: 25, by: 0.10), (at: 90, by: -0.20)],
        [(at: 10, by: 0.06), (at: 55, by: -0.06), (at: 100, by: 0.10)],
    ])
    func findsEachStep(steps: [(at: Int, by: Double)]) {
        check(steps, ChangePointDetector())
    }

    @Test(arguments: [[(at: 40, by: -0.05)], [(at: 70, by: 0.05)], [(at: 30, by: 0.05), (at: 80, by: -0.05)]])
    func findsFivePercentStepsWithThresholdBelowFive(steps: [(at: Int, by: Double)]) {
        check(steps, ChangePointDetector(minMagnitude: 0.04))
    }

    func check(_ steps: [(at: Int, by: Double)], _ detector: ChangePointDetector) {
        for seed in UInt64(1)...20 {
            let points = detector.detect(Self.history(steps: steps, seed: seed))
            #expect(points.count == steps.count, "seed \(seed): \(points.map(\.index)) for \(steps.map(\.at))")
            for s in steps {
                #expect(
                    points.contains { abs($0.index - s.at) <= 1 },
                    "seed \(seed): step at \(s.at) not found in \(points.map(\.index))")
            }
        }
    }

    @Test func flatNoiseHasNoChangePointIn95PercentOfSeeds() {
        var clean = 0
        for seed in UInt64(1000)..<1200 where ChangePointDetector().detect(Self.history(steps: [], seed: seed)).isEmpty {
            clean += 1
        }
        #expect(clean >= 190, "\(clean) of 200 flat histories without a change point")
    }

    @Test func parametersAreSettable() {
        let h = Self.history(steps: [(at: 50, by: 0.05)], seed: 5)
        let loose = ChangePointDetector(windowLength: 60, maxPValue: 0.01, minMagnitude: 0.03)
        #expect(loose.detect(h).contains { abs($0.index - 50) <= 1 })
        // A 5% step is never reported when at least 20% is asked for.
        #expect(ChangePointDetector(minMagnitude: 0.2).detect(h).isEmpty)
    }

    @Test func reportsTheStatisticsOfEachSegment() throws {
        let h = Self.history(steps: [(at: 30, by: 0.2)], n: 60, seed: 9)
        let p = try #require(ChangePointDetector().detect(h).first)
        #expect(abs(p.forwardChange - 0.2) < 0.02)
        #expect(p.pValue < 0.001)
        #expect(abs(p.meanBefore - 100) < 1)
    }

    @Test func tooShortOrConstant() {
        #expect(ChangePointDetector().detect([1, 2, 3]).isEmpty)
        #expect(ChangePointDetector().detect([Double](repeating: 5, count: 80)).isEmpty)
    }
}

/// Confidence intervals of one sample's center. Expected values from SciPy 1.10:
/// `m ± st.t.ppf(0.975, n-1) * x.std(ddof=1) / sqrt(n)`; hmean: the same on 1/x, inverted;
/// median: order statistics with 2·st.binom.cdf(k-1, n, .5) ≤ 0.05.
@Suite struct CenterIntervalTests {
    @Test func meanIsStudentT() throws {
        let ci = try #require(CenterStatistic.mean.interval([1, 2, 3, 4, 5]))
        #expect(abs(ci.lower - 1.0367568385224428) < 1e-9 && abs(ci.upper - 4.963243161477557) < 1e-9)
        #expect(CenterStatistic.mean.interval([3]) == nil)
    }

    @Test func harmonicMeanInvertsTheReciprocalsInterval() throws {
        let ci = try #require(CenterStatistic.harmonicMean.interval([10, 12, 11, 13, 9]))
        #expect(abs(ci.lower - 9.15331024418755) < 1e-9 && abs(ci.upper - 13.216927201008776) < 1e-9)
        #expect(CenterStatistic.harmonicMean.interval([2, 4]) == nil, "the reciprocals' interval reaches 0")
    }

    @Test func medianUsesOrderStatistics() throws {
        #expect(CenterStatistic.median.interval([5, 1, 4, 2, 3]) == nil, "n = 5: 2·P(X ≤ 0) = 0.0625 > 0.05")
        let six = try #require(CenterStatistic.median.interval([6, 1, 5, 2, 4, 3]))
        #expect(six.lower == 1 && six.upper == 6, "n = 6: 2·P(X ≤ 0) = 0.03125")
        let ten = try #require(CenterStatistic.median.interval((1...10).map(Double.init).reversed()))
        #expect(ten.lower == 2 && ten.upper == 9, "n = 10: 2·P(X ≤ 1) = 0.0215, 2·P(X ≤ 2) = 0.109")
    }
}
