import Testing

@testable import NestBenchStats

/// Time-to-responsiveness on synthetic timelines with known answers.
@Suite("Time to responsiveness (known answers)")
struct ResponsivenessTests {
    typealias I = Responsiveness.Interval

    /// One-second intervals ending at 1…n with the given rates.
    static func timeline(_ rates: [Double]) -> [I] {
        rates.enumerated().map { I(end: Double($0.offset + 1), seconds: 1, operations: $0.element) }
    }

    @Test func pausedThenSlowThenBack() throws {
        // 100 ops/s for 5 s; saved at 5, restored from 6 (the guest did nothing from 5 to 7);
        // then 20, 50, 95, 100, 100: responsive from 9 (95 ≥ 90), so TTR = 9 - 6 = 3 s.
        let rates: [Double] = [100, 100, 100, 100, 100, 0, 0, 20, 50, 95, 100, 100]
        let r = try Responsiveness.timeToResponsiveness(Self.timeline(rates), disruption: 5, from: 6).get()
        #expect(r.baselineRate == 100)
        #expect(r.ttrSeconds == 3)
        // From 6 to 9 the workload did 0 + 20 + 50 of the 300 it would have done.
        #expect(r.degradedOperations == 230)
    }

    @Test func aLaterDipMovesTheEnd() throws {
        // Back within 10% at 8, dips at 10, then good: responsiveness begins at 10 (interval 11's start).
        let rates: [Double] = [100, 100, 100, 100, 100, 0, 0, 95, 96, 50, 100, 100]
        let r = try Responsiveness.timeToResponsiveness(Self.timeline(rates), disruption: 5, from: 5).get()
        #expect(r.ttrSeconds == 5)
        #expect(r.degradedOperations == 500 - (0 + 0 + 95 + 96 + 50))
    }

    @Test func neverDisruptedIsZero() throws {
        let r = try Responsiveness.timeToResponsiveness(Self.timeline([100, 100, 100, 100]), disruption: 2, from: 2).get()
        #expect(r.ttrSeconds == 0 && r.degradedOperations == 0)
    }

    @Test func fasterAfterwardIsNoImpactAndToleranceIsAParameter() throws {
        let rates: [Double] = [100, 100, 80, 150]
        let strict = try Responsiveness.timeToResponsiveness(Self.timeline(rates), disruption: 2, from: 2).get()
        #expect(strict.ttrSeconds == 1)  // 80 < 90: responsive from 3
        let loose = try Responsiveness.timeToResponsiveness(
            Self.timeline(rates), disruption: 2, from: 2, tolerance: 0.25
        ).get()
        #expect(loose.ttrSeconds == 0)  // 80 ≥ 75
    }

    @Test func unevenIntervalsCountProRata() throws {
        // Baseline 10 ops/s over 2 s; from 2.5 the interval 2..4 did 5 ops (2.5 per s), then 10/s.
        let intervals = [
            I(end: 2, seconds: 2, operations: 20), I(end: 4, seconds: 2, operations: 5),
            I(end: 5, seconds: 1, operations: 10),
        ]
        let r = try Responsiveness.timeToResponsiveness(intervals, disruption: 2, from: 2.5).get()
        #expect(r.ttrSeconds == 1.5)
        #expect(abs(r.degradedOperations - (15 - 3.75)) < 1e-12)
    }

    @Test func noBaselineAndNoRecoveryAreFailuresNotNumbers() {
        let late = Responsiveness.timeToResponsiveness(Self.timeline([100, 100]), disruption: 0.5, from: 1)
        #expect(late == .failure(.noBaseline))
        let stuck = Responsiveness.timeToResponsiveness(Self.timeline([100, 100, 10, 10]), disruption: 2, from: 2)
        #expect(stuck == .failure(.notRecovered(lastRate: 10, baselineRate: 100)))
        // Nothing measured after the restore: no rate to report (not a last rate of 0).
        let cut = Responsiveness.timeToResponsiveness(Self.timeline([100, 100]), disruption: 2, from: 2)
        #expect(cut == .failure(.noProgressAfter(from: 2)))
    }
}
