import Foundation
import NestBenchStats

/// Repeats `body` and returns the per-iteration seconds (after one warm-up call).
func measure(iterations: Int, _ body: () throws -> Void) rethrows -> [Double] {
    try body()
    var times: [Double] = []
    for _ in 0..<iterations {
        let start = ContinuousClock.now
        try body()
        let (s, atto) = (ContinuousClock.now - start).components
        times.append(Double(s) + Double(atto) / 1e18)
    }
    return times
}

/// "name: median 1.23 ms (n=20)".
func describe(_ name: String, _ times: [Double]) -> String {
    let sorted = times.sorted()
    let median = Statistics.percentile(sorted: sorted, 50)
    return String(format: "%@: median %.3f ms, min %.3f ms (n=%d)", name, median * 1000, sorted[0] * 1000, times.count)
}

func median(_ times: [Double]) -> Double { Statistics.percentile(sorted: times.sorted(), 50) }
