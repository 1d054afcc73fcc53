import Foundation
import Testing

@testable import NestBenchWorkloads

@Suite struct BracketsProbeTests {
    /// The one-pass path answers by itself for ordinary data (no fallback).
    @Test func onePassCoversOrdinaryData() throws {
        var rng = SplitMix(seed: 3)
        var words: [UInt64] = []
        for i in 0..<300_000 {
            let q: UInt64 = i % 7 == 0 ? rng.next() % 10_000_000 : 0
            let s = 1000 + rng.next() % 400_000
            words += [q, s, q + s]
        }
        let fast = words.withUnsafeBufferPointer { Brackets.summarize(words: $0, parts: 2) }
        let exact = words.withUnsafeBufferPointer { LatsFile.summarize(words: $0, threads: 2, method: .histogram) }
        #expect(fast != nil)
        #expect(fast == exact)
    }
}
