import CLats
import Foundation
import Testing

@testable import NestBenchWorkloads

@Suite struct BracketsProbeTests {
    /// Queue mostly zeros (a repeated lower end: counted, not collected), service with ties,
    /// sojourn spread: the kinds of columns real lats.bin files have.
    static func records(_ n: Int, seed: UInt64) -> [UInt64] {
        var rng = SplitMix(seed: seed)
        var words: [UInt64] = []
        words.reserveCapacity(3 * n)
        for i in 0..<n {
            let q: UInt64 = i % 7 == 0 ? rng.next() % 10_000_000 : 0
            let s: UInt64 = i % 5 == 0 ? 250_000 : 1000 + rng.next() % 400_000
            words += [q, s, q + s]
        }
        return words
    }

    /// The one-pass path answers by itself for ordinary data (no fallback), with the vector
    /// kernel and with the scalar one, and equals the exact histogram path.
    @Test(arguments: [false, true])
    func onePassCoversOrdinaryData(scalarOnly: Bool) throws {
        let words = Self.records(300_001, seed: 3)
        let fast = words.withUnsafeBufferPointer {
            Brackets.summarize(.memory($0), parts: 2, scalarOnly: scalarOnly)
        }
        let exact = words.withUnsafeBufferPointer { LatsFile.summarize(words: $0, threads: 2, method: .histogram) }
        #expect(fast != nil)
        #expect(fast == exact)
    }

    /// A file goes through pread in chunks, one reader per part: same answer as in memory.
    @Test func fileSourceEqualsMemory() throws {
        let words = Self.records(250_003, seed: 11)
        let path = Fixtures.temporaryDirectory() + "/lats.bin"
        try words.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: path)) }
        let fromFile = try LatsFile.analyze(path: path, threads: 3)
        let exact = words.withUnsafeBufferPointer { LatsFile.summarize(words: $0, threads: 1, method: .histogram) }
        #expect(fromFile == exact)
    }

    /// The kernel's counts against a plain loop, on brackets with a counted lower end, an empty
    /// (lo, lo] bracket and a record count that is not a multiple of the vector width.
    @Test(arguments: [0, 1])
    func kernelCountsMatchAPlainLoop(scalarOnly: Int32) {
        let words = Self.records(10_007, seed: 5)
        var bounds = nb_lats_bounds()
        let lo: [[UInt64]] = [[0, 2_000_000, 8_000_000], [100_000, 250_000, 390_000], [50_000, 300_000, 400_000]]
        let hi: [[UInt64]] = [[0, 2_100_000, 9_000_000], [110_000, 250_000, 400_000], [51_000, 310_000, 401_000]]
        withUnsafeMutableBytes(of: &bounds.lo) { raw in
            for (i, v) in lo.joined().enumerated() { raw.storeBytes(of: v, toByteOffset: 8 * i, as: UInt64.self) }
        }
        withUnsafeMutableBytes(of: &bounds.hi) { raw in
            for (i, v) in hi.joined().enumerated() { raw.storeBytes(of: v, toByteOffset: 8 * i, as: UInt64.self) }
        }
        // Counted lower ends: all of column 0, and bracket 1 of column 1 (250,000 is repeated).
        withUnsafeMutableBytes(of: &bounds.count_equal) { raw in
            for (i, v) in [1, 1, 1, 0, 1, 0, 0, 0, 0].enumerated() {
                raw.storeBytes(of: Int32(v), toByteOffset: 4 * i, as: Int32.self)
            }
        }
        var tally = nb_lats_tally()
        var buffers: [UnsafeMutablePointer<UInt64>] = []
        withUnsafeMutableBytes(of: &tally.inner) { raw in
            for i in 0..<9 {
                let b = UnsafeMutablePointer<UInt64>.allocate(capacity: 20_000)
                buffers.append(b)
                raw.storeBytes(of: b, toByteOffset: 8 * i, as: UnsafeMutablePointer<UInt64>.self)
            }
        }
        defer { buffers.forEach { $0.deallocate() } }
        withUnsafeMutableBytes(of: &tally.capacity) { raw in
            for i in 0..<9 { raw.storeBytes(of: 20_000, toByteOffset: 8 * i, as: Int.self) }
        }
        words.withUnsafeBufferPointer { nb_lats_scan($0.baseAddress!, 10_007, &bounds, &tally, scalarOnly) }
        #expect(tally.overflowed == 0)
        let sums = withUnsafeBytes(of: tally.sum) { Array($0.bindMemory(to: UInt64.self)) }
        let below = withUnsafeBytes(of: tally.below) { Array($0.bindMemory(to: UInt64.self)) }
        let equal = withUnsafeBytes(of: tally.equal) { Array($0.bindMemory(to: UInt64.self)) }
        let counts = withUnsafeBytes(of: tally.count) { Array($0.bindMemory(to: Int.self)) }
        for c in 0..<3 {
            let column = stride(from: c, to: words.count, by: 3).map { words[$0] }
            #expect(sums[c] == column.reduce(0, &+))
            for k in 0..<3 {
                let l = lo[c][k]
                let h = hi[c][k]
                #expect(below[3 * c + k] == UInt64(column.filter { $0 < l }.count))
                if c == 0 || (c == 1 && k == 1) {
                    #expect(equal[3 * c + k] == UInt64(column.filter { $0 == l }.count))
                    #expect(counts[3 * c + k] == column.filter { $0 > l && $0 <= h }.count)
                } else {
                    #expect(counts[3 * c + k] == column.filter { $0 >= l && $0 <= h }.count)
                }
                let got = Array(UnsafeBufferPointer(start: buffers[3 * c + k], count: counts[3 * c + k])).sorted()
                let counted = c == 0 || (c == 1 && k == 1)
                let want = column.filter { counted ? ($0 > l && $0 <= h) : ($0 >= l && $0 <= h) }.sorted()
                #expect(got == want)
            }
        }
    }

    /// Multi-rank selection against sorting.
    @Test func selectAllMatchesSorting() {
        var rng = SplitMix(seed: 9)
        var a = (0..<5000).map { _ in rng.next() % 700 }
        let sorted = a.sorted()
        let ranks = [4999, 0, 2500, 2501, 17, 17, 4000]
        #expect(Selection.selectAll(&a, ranks: ranks) == ranks.map { sorted[$0] })
    }
}
