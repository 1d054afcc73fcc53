import Testing

@testable import NestBenchStats

/// Known-answer values computed with SciPy 1.17.1 / NumPy 2.4.6 on this machine:
///
///     from scipy import stats, special; import numpy as np
///     a=[10.1,9.8,10.4,10.0,9.9]; b=[12.0,12.5,11.8,12.2,12.4,11.9]
///     stats.ttest_ind(a,b,equal_var=False)            # t=-13.594474868639727 p=2.643742861708632e-07
///     stats.t.cdf(1.5, 4.3)                            # 0.8984354720145697
///     stats.t.ppf(0.975, 7.5), stats.t.ppf(0.975, 2)   # 2.333039626864974, 4.302652729749462
///     stats.t.ppf(0.995, 30)                           # 2.7499956535672254
///     special.betainc(2.5, 0.5, 0.3)                   # 0.018927124071945658
///     special.betainc(10, 3, 0.9)                      # 0.889130022255
///     # Fieller, mean(a)/mean(b), Welch df of a − R·b:
///     ma,mb=np.mean(a),np.mean(b); va=np.var(a,ddof=1)/5; vb=np.var(b,ddof=1)/6; R=ma/mb
///     df=(va+R*R*vb)**2/(va**2/4+(R*R*vb)**2/5); t=stats.t.ppf(0.975,df)
///     qa=mb*mb-t*t*vb; qb=ma*mb; qc=ma*ma-t*t*va; d=np.sqrt(qb*qb-qa*qc)
///     (qb-d)/qa, (qb+d)/qa                             # 0.80160638926453, 0.8541020890794778
///     np.percentile([1,2,3,4,5,6,7,8,9,10.5],[50,95,99])  # 5.5, 9.825, 10.365
///     stats.gmean([1.2,0.9,1.5]), stats.hmean([1,2,4])    # 1.174460292350659, 1.7142857142857142
@Suite("Statistics known answers")
struct KnownAnswerTests {
    let a = [10.1, 9.8, 10.4, 10.0, 9.9]
    let b = [12.0, 12.5, 11.8, 12.2, 12.4, 11.9]

    func close(_ x: Double, _ y: Double, _ tolerance: Double = 1e-9) -> Bool {
        abs(x - y) <= tolerance * max(1, abs(y))
    }

    @Test func welch() {
        let w = Statistics.welch(a, b)
        #expect(close(w.t, -13.594474868639727))
        #expect(abs(w.pValue - 2.643742861708632e-07) < 1e-12)
    }

    @Test(arguments: [(1.5, 4.3, 0.8984354720145697)])
    func tCDF(t: Double, df: Double, expected: Double) {
        #expect(close(Distributions.studentTCDF(t, df: df), expected))
        #expect(close(Distributions.studentTCDF(-t, df: df), 1 - expected))
    }

    @Test(arguments: [(0.975, 7.5, 2.333039626864974), (0.975, 2.0, 4.302652729749462), (0.995, 30.0, 2.7499956535672254)])
    func tQuantile(p: Double, df: Double, expected: Double) {
        #expect(close(Distributions.studentTQuantile(p, df: df), expected, 1e-9))
    }

    @Test(arguments: [(0.3, 2.5, 0.5, 0.018927124071945658), (0.9, 10.0, 3.0, 0.889130022255)])
    func incompleteBeta(x: Double, a: Double, b: Double, expected: Double) {
        #expect(close(Distributions.regularizedIncompleteBeta(x, a: a, b: b), expected, 1e-10))
    }

    @Test func fieller() throws {
        let r = Statistics.fiellerRatio(a, b)
        #expect(close(r.ratio, 0.8274725274725274))
        #expect(close(try #require(r.lower), 0.80160638926453, 1e-9))
        #expect(close(try #require(r.upper), 0.8541020890794778, 1e-9))
    }

    @Test func percentiles() {
        let x = [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10.5]
        #expect(close(Statistics.percentile(sorted: x, 50), 5.5))
        #expect(close(Statistics.percentile(sorted: x, 95), 9.825))
        #expect(close(Statistics.percentile(sorted: x, 99), 10.365))
    }

    @Test func means() {
        #expect(close(Statistics.geometricMean([1.2, 0.9, 1.5]), 1.174460292350659))
        #expect(close(Statistics.harmonicMean([1, 2, 4]), 1.7142857142857142))
    }
}

@Suite("Statistics properties")
struct PropertyTests {
    @Test func fiellerContainsRatioAndIsPermutationInvariant() throws {
        let a = [3.1, 2.9, 3.3, 3.0, 3.2, 2.8]
        let b = [2.0, 2.2, 1.9, 2.1, 2.05]
        let r1 = Statistics.fiellerRatio(a, b)
        let r2 = Statistics.fiellerRatio(a.reversed(), b.shuffled())
        #expect(try #require(r1.lower) < r1.ratio && r1.ratio < (try #require(r1.upper)))
        #expect(abs(try #require(r1.lower) - (try #require(r2.lower))) < 1e-12)
    }

    @Test func identicalSamplesAreNotSignificant() {
        let a = [1.0, 1.1, 0.9, 1.05]
        #expect(Statistics.welch(a, a).pValue > 0.99)
    }

    @Test func unboundedWhenBaselineIsNoise() {
        // Baseline mean indistinguishable from 0: Fieller's interval is unbounded.
        let r = Statistics.fiellerRatio([1.0, 1.2, 0.9], [0.1, -0.1, 0.05])
        #expect(r.lower == nil && r.upper == nil)
    }

    @Test func zeroNumeratorWithConstantValuesDoesNotCrash() throws {
        // e.g. AnonHugePages: 0 in every run of the candidate, positive in the baseline.
        let r = Statistics.fiellerRatio([0, 0, 0], [2.6e8, 2.7e8, 2.5e8])
        #expect(r.ratio == 0)
        #expect(try #require(r.lower) == 0 && (try #require(r.upper)) == 0)
    }

    @Test func percentileIsMonotone() {
        let x = (0..<101).map { Double($0 * $0 % 37) }.sorted()
        var last = -Double.infinity
        for p in stride(from: 0.0, through: 100.0, by: 0.5) {
            let v = Statistics.percentile(sorted: x, p)
            #expect(v >= last)
            last = v
        }
    }
}
