import Foundation
import NestBenchModel

/// Why a Tailbench `lats.bin` cannot be analysed; every message names the file.
public struct LatsError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable { case unreadable, empty, truncated }
    public var code: Code
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
}

/// Summary of one latency column, in milliseconds.
public struct LatencySummary: Sendable, Hashable, Codable {
    public var mean: Double
    public var p50: Double
    public var p95: Double
    public var p99: Double
    public var max: Double
}

/// What a Tailbench `lats.bin` says: per measured request, queue, service and sojourn time.
public struct LatsSummary: Sendable, Hashable, Codable {
    public var requests: Int
    public var sojourn: LatencySummary
    public var service: LatencySummary
    public var queue: LatencySummary
}

/// Reads Tailbench's `lats.bin`: no header; one 24-byte record per measured request, three
/// little-endian uint64 nanosecond values (queue, service, sojourn), in completion order.
///
/// Percentiles are exact and use numpy's default linear interpolation (Hyndman & Fan type 7),
/// which is what Tailbench's `utilities/parselats.py` prints, on the millisecond values
/// (ns / 1e6) as parselats computes them. Files of 100,000 records or more take the one-pass
/// bracket path (`Brackets`: a sample, then one scan read in chunks by one reader per CPU).
/// Smaller files, and any file that path cannot settle, are memory-mapped and read in two
/// streaming passes split across the CPUs: the first builds, per column, a histogram over
/// buckets that keep the 12 most significant bits of each value (monotone in the value)
/// together with sum and maximum; the second collects only the values in the buckets that hold
/// the wanted ranks, which are then sorted. No full sort and no copy of the columns.
public enum LatsFile {
    static let recordSize = 24
    static let percentiles: [Double] = [50, 95, 99]
    /// Bucket count of `bucket(_:)`: values < 4096 exactly, then 2048 buckets per power of two.
    static let bucketCount = 52 * 2048 + 4096
    /// Buckets below this hold exactly one value, equal to the bucket number.
    static let exactBuckets = 4096

    @inline(__always)
    static func bucket(_ v: UInt64) -> Int {
        let bits = 64 - v.leadingZeroBitCount
        if bits <= 12 { return Int(truncatingIfNeeded: v) }
        let shift = bits - 12
        return shift << 11 + Int(truncatingIfNeeded: v >> UInt64(shift))
    }

    /// Analyses the file at `path`.
    public static func analyze(path: String, threads: Int? = nil) throws(LatsError) -> LatsSummary {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            throw LatsError(
                code: .unreadable, path: path, message: "cannot open (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw LatsError(code: .unreadable, path: path, message: "cannot stat (\(String(cString: strerror(errno))))")
        }
        if let kind = InputFile.nonRegularKind(st.st_mode) {
            throw LatsError(code: .unreadable, path: path, message: "is \(kind), not a regular file")
        }
        let size = Int(st.st_size)
        if size == 0 {
            throw LatsError(
                code: .empty, path: path,
                message: "empty lats.bin: no measured requests (the run ended before its warm-up did, or TBENCH_MAXREQS was 0)")
        }
        guard size % recordSize == 0 else {
            throw LatsError(
                code: .truncated, path: path,
                message:
                    "truncated lats.bin: \(size) bytes is not a multiple of the 24-byte record (\(size / recordSize) whole records + \(size % recordSize) bytes); the harness was killed while writing it"
            )
        }
        let n = size / recordSize
        let parts = partCount(records: n, threads: threads)
        if n >= 100_000, let summary = Brackets.summarize(.file(descriptor: fd, records: n), parts: parts) {
            return summary
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0), base != MAP_FAILED else {
            throw LatsError(code: .unreadable, path: path, message: "cannot map (\(String(cString: strerror(errno))))")
        }
        defer { munmap(base, size) }
        _ = madvise(base, size, MADV_SEQUENTIAL)
        let words = UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt64.self), count: size / 8)
        return summarizeByHistogram(words: words, parts: parts)
    }

    /// How `summarize` finds the order statistics (both are exact).
    public enum Method: Sendable {
        /// Brackets from a sample, one exact pass; falls back to `histogram` if a bracket missed.
        case automatic
        /// Two passes: bucket histogram, then the values of the buckets holding the ranks.
        case histogram
    }

    /// Analyses records already in memory (3 words each: queue, service, sojourn, little-endian).
    public static func summarize(
        words: UnsafeBufferPointer<UInt64>, threads: Int? = nil, method: Method = .automatic
    ) -> LatsSummary {
        let n = words.count / 3
        precondition(n > 0, "no records")
        let parts = partCount(records: n, threads: threads)
        if method == .automatic, n >= 100_000, let summary = Brackets.summarize(.memory(words), parts: parts) {
            return summary
        }
        return summarizeByHistogram(words: words, parts: parts)
    }

    static func partCount(records n: Int, threads: Int?) -> Int {
        Swift.max(1, Swift.min(threads ?? ProcessInfo.processInfo.activeProcessorCount, n / 65_536 + 1, 16))
    }

    static func summarizeByHistogram(words: UnsafeBufferPointer<UInt64>, parts: Int) -> LatsSummary {
        let n = words.count / 3
        let chunk = (n + parts - 1) / parts
        @Sendable func range(_ part: Int) -> Range<Int> { Swift.min(part * chunk, n)..<Swift.min((part + 1) * chunk, n) }
        let shared = Unchecked(words)

        // Pass 1: histograms, sums, maxima per column (queue, service, sojourn).
        let firstPass = UnsafeMutableBufferPointer<PassOne>.allocate(capacity: parts)
        defer { firstPass.deallocate() }
        let firstOut = Unchecked(firstPass)
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            (firstOut.value.baseAddress! + part).initialize(to: PassOne.run(shared.value, range(part)))
        }
        var totals = firstPass[0]
        for part in 1..<parts { totals.merge(firstPass[part]) }
        for part in 0..<parts { (firstPass.baseAddress! + part).deinitialize(count: 1) }

        // The ranks each percentile interpolates between, and the buckets holding them.
        var wanted: [[Int]] = []  // per column, the sorted distinct buckets needed
        var ranks: [Int] = []
        for p in percentiles {
            let rank = p / 100 * Double(n - 1)
            let lo = Int(rank.rounded(.down))
            ranks.append(lo)
            ranks.append(Swift.min(lo + 1, n - 1))
        }
        var cumulative: [[Int]] = []  // per column, count of values below each wanted bucket
        for column in 0..<3 {
            var buckets: [Int] = []
            var below: [Int] = []
            for rank in Set(ranks).sorted() {
                let (b, c) = totals.locate(rank: rank, column: column)
                // Buckets below 4096 hold one value each (the bucket number): nothing to collect.
                if b >= exactBuckets, buckets.last != b {
                    buckets.append(b)
                    below.append(c)
                }
            }
            wanted.append(buckets)
            cumulative.append(below)
        }

        // Pass 2: collect only the values in the wanted buckets.
        let collected = UnsafeMutableBufferPointer<[[UInt64]]>.allocate(capacity: parts)
        defer { collected.deallocate() }
        let masks = wanted.map { buckets -> [Bool] in
            var mask = [Bool](repeating: false, count: bucketCount)
            for b in buckets { mask[b] = true }
            return mask
        }
        let collectedOut = Unchecked(collected)
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            (collectedOut.value.baseAddress! + part).initialize(to: collect(shared.value, range(part), masks: masks))
        }
        var values: [[UInt64]] = [[], [], []]
        for part in 0..<parts {
            for c in 0..<3 { values[c] += collected[part][c] }
            (collected.baseAddress! + part).deinitialize(count: 1)
        }

        var summaries: [LatencySummary] = []
        for column in 0..<3 {
            // The collected values, sorted, grouped by bucket in bucket order = value order.
            let sorted = values[column].sorted()
            func valueAt(rank: Int) -> Double {
                let b = totals.locate(rank: rank, column: column).bucket
                if b < exactBuckets { return Double(b) / 1e6 }
                let index = wanted[column].firstIndex(of: b)!
                // Values of earlier wanted buckets come first in `sorted`.
                var offset = 0
                for i in 0..<index { offset += totals.counts[column][wanted[column][i]] }
                return Double(sorted[offset + rank - cumulative[column][index]]) / 1e6
            }
            var pcts: [Double] = []
            for p in percentiles {
                let rank = p / 100 * Double(n - 1)
                let lo = Int(rank.rounded(.down))
                let frac = rank - Double(lo)
                let a = valueAt(rank: lo)
                let b = valueAt(rank: Swift.min(lo + 1, n - 1))
                pcts.append(lerp(a, b, frac))
            }
            let mean = totals.sums[column].double / Double(n) / 1e6
            summaries.append(
                LatencySummary(
                    mean: mean, p50: pcts[0], p95: pcts[1], p99: pcts[2], max: Double(totals.maxima[column]) / 1e6))
        }
        return LatsSummary(requests: n, sojourn: summaries[2], service: summaries[1], queue: summaries[0])
    }

    /// numpy's `_lerp`: a + (b − a)·t, computed from the upper end when t ≥ 0.5 (numpy ≥ 1.22).
    static func lerp(_ a: Double, _ b: Double, _ t: Double) -> Double {
        let diff = b - a
        return t >= 0.5 ? b - diff * (1 - t) : a + diff * t
    }

    static func collect(_ words: UnsafeBufferPointer<UInt64>, _ range: Range<Int>, masks: [[Bool]]) -> [[UInt64]] {
        var out: [[UInt64]] = [[], [], []]
        masks[0].withUnsafeBufferPointer { m0 in
            masks[1].withUnsafeBufferPointer { m1 in
                masks[2].withUnsafeBufferPointer { m2 in
                    var i = range.lowerBound * 3
                    let end = range.upperBound * 3
                    while i < end {
                        let q = UInt64(littleEndian: words[i])
                        let s = UInt64(littleEndian: words[i + 1])
                        let j = UInt64(littleEndian: words[i + 2])
                        if m0[bucket(q)] { out[0].append(q) }
                        if m1[bucket(s)] { out[1].append(s) }
                        if m2[bucket(j)] { out[2].append(j) }
                        i += 3
                    }
                }
            }
        }
        return out
    }
}

/// Hands a buffer to `concurrentPerform` workers that each touch only their own part of it.
struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// A 128-bit unsigned sum, so that the mean of any file is exact before the final division.
struct WideSum: Sendable {
    var high: UInt64 = 0
    var low: UInt64 = 0

    @inline(__always)
    mutating func add(_ v: UInt64) {
        let (sum, overflow) = low.addingReportingOverflow(v)
        low = sum
        if overflow { high &+= 1 }
    }

    mutating func add(_ other: WideSum) {
        add(other.low)
        high &+= other.high
    }

    var double: Double { Double(high) * 18_446_744_073_709_551_616.0 + Double(low) }
}

/// The first pass's per-thread result.
struct PassOne {
    var counts: [[Int]]
    var sums: [WideSum]
    var maxima: [UInt64]

    static func run(_ words: UnsafeBufferPointer<UInt64>, _ range: Range<Int>) -> PassOne {
        var c0 = [Int](repeating: 0, count: LatsFile.bucketCount)
        var c1 = c0
        var c2 = c0
        var s0 = WideSum()
        var s1 = WideSum()
        var s2 = WideSum()
        var m0: UInt64 = 0
        var m1: UInt64 = 0
        var m2: UInt64 = 0
        c0.withUnsafeMutableBufferPointer { h0 in
            c1.withUnsafeMutableBufferPointer { h1 in
                c2.withUnsafeMutableBufferPointer { h2 in
                    var i = range.lowerBound * 3
                    let end = range.upperBound * 3
                    while i < end {
                        let q = UInt64(littleEndian: words[i])
                        let s = UInt64(littleEndian: words[i + 1])
                        let j = UInt64(littleEndian: words[i + 2])
                        h0[LatsFile.bucket(q)] &+= 1
                        h1[LatsFile.bucket(s)] &+= 1
                        h2[LatsFile.bucket(j)] &+= 1
                        s0.add(q)
                        s1.add(s)
                        s2.add(j)
                        m0 = Swift.max(m0, q)
                        m1 = Swift.max(m1, s)
                        m2 = Swift.max(m2, j)
                        i += 3
                    }
                }
            }
        }
        return PassOne(counts: [c0, c1, c2], sums: [s0, s1, s2], maxima: [m0, m1, m2])
    }

    mutating func merge(_ other: PassOne) {
        for c in 0..<3 {
            counts[c].withUnsafeMutableBufferPointer { mine in
                other.counts[c].withUnsafeBufferPointer { theirs in
                    for i in 0..<mine.count { mine[i] &+= theirs[i] }
                }
            }
            sums[c].add(other.sums[c])
            maxima[c] = Swift.max(maxima[c], other.maxima[c])
        }
    }

    /// The bucket holding the value of 0-based `rank` in `column`, and how many values lie below it.
    func locate(rank: Int, column: Int) -> (bucket: Int, below: Int) {
        var below = 0
        for (b, count) in counts[column].enumerated() where count > 0 {
            if below + count > rank { return (b, below) }
            below += count
        }
        preconditionFailure("rank \(rank) beyond the \(below) values")
    }
}
