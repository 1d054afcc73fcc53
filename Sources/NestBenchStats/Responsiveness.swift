/// Time-to-responsiveness (TTR) of a workload after a disruption (a VM restored from a saved
/// image, a host that swapped its memory out): from a per-interval progress timeline, the time
/// from the disruption's start until the rate stays within a tolerance of its level before the
/// disruption, and the work lost meanwhile.
public enum Responsiveness {
    /// One progress interval: it ended at `end` (seconds, on the clock of the disruption's times),
    /// lasted `seconds` and did `operations`.
    public struct Interval: Sendable, Hashable {
        public var end: Double
        public var seconds: Double
        public var operations: Double

        public init(end: Double, seconds: Double, operations: Double) {
            self.end = end
            self.seconds = seconds
            self.operations = operations
        }

        public var start: Double { end - seconds }
        public var rate: Double { seconds > 0 ? operations / seconds : 0 }
    }

    public struct Result: Sendable, Hashable {
        /// Operations per second over the intervals that ended before the disruption began.
        public var baselineRate: Double
        /// Seconds from the disruption's start until the rate stays within the tolerance.
        public var ttrSeconds: Double
        /// Operations the workload would have done at the baseline rate from the disruption's
        /// start until it was responsive again, minus those it did (never negative).
        public var degradedOperations: Double
    }

    public enum Failure: Error, Sendable, Hashable, CustomStringConvertible {
        /// No complete interval before the disruption: there is no level to come back to.
        case noBaseline
        /// No complete interval ended after `from`: the timeline stops before recovery could be seen.
        case noProgressAfter(from: Double)
        /// The rate was still below the tolerance at the end of the timeline.
        case notRecovered(lastRate: Double, baselineRate: Double)

        public var description: String {
            switch self {
            case .noBaseline: "no progress interval ended before the disruption began: no level to return to"
            case .noProgressAfter(let from):
                "no progress interval ended after \(from) s: the timeline stops before the workload could be seen recovering"
            case .notRecovered(let last, let base):
                "the rate had not come back within the tolerance by the end of the run (last interval \(last) ops/s, before the disruption \(base) ops/s)"
            }
        }
    }

    /// TTR of `intervals` around a disruption that began at `disruption` (e.g. the save's start)
    /// and from whose `from` (e.g. the restore's start; ≥ `disruption`) the time is counted.
    /// Responsive means every interval from then on has a rate of at least
    /// `(1 - tolerance) ×` the baseline (being faster is no impact). The TTR ends at the start of
    /// the first interval of that final run of good intervals (or at `from` if it is already in
    /// one).
    public static func timeToResponsiveness(
        _ intervals: [Interval], disruption: Double, from: Double, tolerance: Double = 0.10
    ) -> Swift.Result<Result, Failure> {
        let sorted = intervals.filter { $0.seconds > 0 }.sorted { $0.end < $1.end }
        let before = sorted.filter { $0.end <= disruption }
        let beforeSeconds = before.reduce(0) { $0 + $1.seconds }
        guard beforeSeconds > 0 else { return .failure(.noBaseline) }
        let baseline = before.reduce(0) { $0 + $1.operations } / beforeSeconds
        let floor = (1 - tolerance) * baseline
        let after = sorted.filter { $0.end > from }
        guard let last = after.last else { return .failure(.noProgressAfter(from: from)) }
        // The first interval of the final run of good ones.
        var firstGood = after.count
        while firstGood > 0 && after[firstGood - 1].rate >= floor { firstGood -= 1 }
        guard firstGood < after.count else {
            return .failure(.notRecovered(lastRate: last.rate, baselineRate: baseline))
        }
        let responsiveAt = max(from, firstGood == 0 ? from : after[firstGood].start)
        // Work done between `from` and `responsiveAt` (intervals straddling `from` count pro rata).
        var done = 0.0
        for interval in after.prefix(firstGood) {
            let overlap = min(interval.end, responsiveAt) - max(interval.start, from)
            if overlap > 0 { done += interval.operations * overlap / interval.seconds }
        }
        let expected = baseline * (responsiveAt - from)
        return .success(
            Result(baselineRate: baseline, ttrSeconds: responsiveAt - from, degradedOperations: max(0, expected - done)))
    }
}
