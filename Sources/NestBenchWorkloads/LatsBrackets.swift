import CLats
import Foundation

/// The one-pass exact path of `LatsFile.summarize`.
///
/// A sample (256 evenly spaced blocks of consecutive records, up to 131,072 records) gives, per
/// column and percentile, a value bracket [lo, hi] that holds the wanted ranks with overwhelming
/// probability (±4.5 binomial standard deviations around the sample quantile; the sample's order
/// statistics are found by selection, not sorting). One pass over all records (the C kernel
/// `nb_lats_scan`: AVX2 where the CPU has it, branch-free scalar otherwise) then counts, per
/// bracket, the values below `lo` (and, for a value the sample shows repeated, those equal to
/// it) and keeps the few inside, together with sums and maxima. A rank is then read exactly from
/// below + [lo × equal] + inner (selected). When a bracket missed its rank (a sample unlike the
/// whole file), or a value is too large for the kernel's 64-bit sums, the caller falls back to
/// the histogram path: the result is exact either way.
///
/// A file is read with `pread` in cache-sized chunks, one reader per CPU, rather than mapped:
/// mapping and unmapping 240 MB costs more than the scan.
enum Brackets {
    /// Where the records come from.
    enum Source: @unchecked Sendable {
        case memory(UnsafeBufferPointer<UInt64>)
        case file(descriptor: Int32, records: Int)

        var records: Int {
            switch self {
            case .memory(let words): words.count / 3
            case .file(_, let records): records
            }
        }

        /// Copies records [start, start + count) into `buffer`; false on a read error.
        func read(_ start: Int, _ count: Int, into buffer: UnsafeMutablePointer<UInt64>) -> Bool {
            switch self {
            case .memory(let words):
                buffer.update(from: words.baseAddress! + 3 * start, count: 3 * count)
                return true
            case .file(let fd, _):
                var done = 0
                let bytes = count * LatsFile.recordSize
                while done < bytes {
                    let n = pread(
                        fd, UnsafeMutableRawPointer(buffer) + done, bytes - done, off_t(start * LatsFile.recordSize + done))
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return false }
                    done += n
                }
                return true
            }
        }
    }

    static let chunkRecords = 8192

    /// The brackets from a sample, and per (column, bracket) the fraction of records expected inside.
    static func bounds(_ source: Source) -> (nb_lats_bounds, [[Double]])? {
        let n = source.records
        let blocks = 256
        let blockLength = Swift.max(1, Swift.min(256, n / (blocks * 8)))
        let stride = n / blocks
        var samples: [[UInt64]] = [[], [], []]
        for c in 0..<3 { samples[c].reserveCapacity(blocks * blockLength) }
        let buffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 3 * blockLength)
        defer { buffer.deallocate() }
        for block in 0..<blocks {
            let start = block * stride
            let count = Swift.min(blockLength, n - start)
            guard source.read(start, count, into: buffer) else { return nil }
            for r in 0..<count {
                for c in 0..<3 { samples[c].append(UInt64(littleEndian: buffer[3 * r + c])) }
            }
        }
        let m = samples[0].count
        var rankPairs: [(Int, Int)] = []
        for p in LatsFile.percentiles {
            let q = p / 100
            let center = q * Double(m - 1)
            let margin = 4.5 * (Double(m) * q * (1 - q)).squareRoot() + 8
            rankPairs.append(
                (Swift.max(0, Int((center - margin).rounded(.down))), Swift.min(m - 1, Int((center + margin).rounded(.up)))))
        }
        let ranks = Set(rankPairs.flatMap { [$0.0, $0.1] }).sorted()
        let pairs = rankPairs
        let columns = UnsafeMutableBufferPointer<(lo: [UInt64], hi: [UInt64], countEqual: [Bool])>.allocate(capacity: 3)
        defer { columns.deallocate() }
        let out = Unchecked(columns)
        let shared = Unchecked(samples)
        DispatchQueue.concurrentPerform(iterations: 3) { c in
            var sample = shared.value[c]
            var at: [Int: UInt64] = [:]
            for (rank, value) in zip(ranks, Selection.selectAll(&sample, ranks: ranks)) { at[rank] = value }
            var los: [UInt64] = []
            var his: [UInt64] = []
            for (loRank, hiRank) in pairs {
                los.append(loRank == 0 ? 0 : at[loRank]!)
                his.append(hiRank == m - 1 ? UInt64.max : at[hiRank]!)
            }
            // Values repeated in ≥ 2% of the sample at a bracket's ends. A repeated lower end is
            // counted, not collected. A repeated upper end is either the percentile itself (its
            // run holds the sample's percentile rank: the bracket becomes [x, x], counted) or
            // lies above it (the bracket stops below it).
            var equalLo = [0, 0, 0]
            var equalHi = [0, 0, 0]
            var belowHi = [0, 0, 0]
            for v in sample {
                for k in 0..<3 {
                    if v == los[k] { equalLo[k] += 1 }
                    if v == his[k] { equalHi[k] += 1 } else if v < his[k] { belowHi[k] += 1 }
                }
            }
            var countEqual = equalLo.map { $0 * 50 >= m }
            for k in 0..<3 where equalHi[k] * 50 >= m && his[k] > los[k] {
                let center = Int((LatsFile.percentiles[k] / 100 * Double(m - 1)).rounded())
                if belowHi[k] <= center && center < belowHi[k] + equalHi[k] {
                    los[k] = his[k]
                    countEqual[k] = true
                } else {
                    his[k] -= 1
                }
            }
            (out.value.baseAddress! + c).initialize(to: (los, his, countEqual))
        }
        var b = nb_lats_bounds()
        withUnsafeMutableBytes(of: &b.lo) { raw in
            let lo = raw.bindMemory(to: UInt64.self)
            for c in 0..<3 { for k in 0..<3 { lo[3 * c + k] = columns[c].lo[k] } }
        }
        withUnsafeMutableBytes(of: &b.hi) { raw in
            let hi = raw.bindMemory(to: UInt64.self)
            for c in 0..<3 { for k in 0..<3 { hi[3 * c + k] = columns[c].hi[k] } }
        }
        withUnsafeMutableBytes(of: &b.count_equal) { raw in
            let flags = raw.bindMemory(to: Int32.self)
            for c in 0..<3 { for k in 0..<3 { flags[3 * c + k] = columns[c].countEqual[k] ? 1 : 0 } }
        }
        let fractions = (0..<3).map { _ in pairs.map { Double($0.1 - $0.0 + 1) / Double(m) } }
        return (b, fractions)
    }

    /// What the workers saw, merged: per column.
    struct Column {
        var sum: UInt64 = 0
        var max: UInt64 = 0
        var below: [Int] = [0, 0, 0]
        var equal: [Int] = [0, 0, 0]
        var inner: [[UInt64]] = [[], [], []]

        /// The values of 0-based `ranks` if bracket `k` (lower end `lo`) holds them all.
        mutating func values(ranks: [Int], bracket k: Int, lo: UInt64, countEqual: Bool) -> [UInt64]? {
            var result = [UInt64](repeating: lo, count: ranks.count)
            var inside: [(Int, Int)] = []  // (index in ranks, offset in inner)
            for (i, rank) in ranks.enumerated() {
                var offset = rank - below[k]
                guard offset >= 0 else { return nil }
                if countEqual {
                    if offset < equal[k] { continue }
                    offset -= equal[k]
                }
                guard offset < inner[k].count else { return nil }
                inside.append((i, offset))
            }
            if !inside.isEmpty {
                for ((i, _), v) in zip(inside, Selection.selectAll(&inner[k], ranks: inside.map(\.1))) { result[i] = v }
            }
            return result
        }
    }

    static func summarize(_ source: Source, parts: Int, scalarOnly: Bool = false) -> LatsSummary? {
        let n = source.records
        guard let (bounds, fractions) = Self.bounds(source) else { return nil }
        let chunks = (n + chunkRecords - 1) / chunkRecords
        let perPart = (chunks + parts - 1) / parts
        let tallies = UnsafeMutableBufferPointer<nb_lats_tally>.allocate(capacity: parts)
        defer { tallies.deallocate() }
        let failed = UnsafeMutableBufferPointer<Bool>.allocate(capacity: parts)
        defer { failed.deallocate() }
        failed.initialize(repeating: false)
        let out = Unchecked((tallies, failed))
        let scalar: Int32 = scalarOnly ? 1 : 0
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let first = Swift.min(part * perPart * chunkRecords, n)
            let last = Swift.min((part + 1) * perPart * chunkRecords, n)
            var t = nb_lats_tally()
            var bounds = bounds
            // Buffers for the values inside the brackets: twice the sample's share, and more.
            var buffers: [UnsafeMutablePointer<UInt64>] = []
            withUnsafeMutableBytes(of: &t.inner) { raw in
                let inner = raw.bindMemory(to: UnsafeMutablePointer<UInt64>?.self)
                withUnsafeMutableBytes(of: &t.capacity) { rawCap in
                    let capacity = rawCap.bindMemory(to: Int.self)
                    for c in 0..<3 {
                        for k in 0..<3 {
                            let cap = Int(2 * fractions[c][k] * Double(last - first)) + 4096
                            let buffer = UnsafeMutablePointer<UInt64>.allocate(capacity: cap)
                            buffers.append(buffer)
                            inner[3 * c + k] = buffer
                            capacity[3 * c + k] = cap
                        }
                    }
                }
            }
            let chunk = UnsafeMutablePointer<UInt64>.allocate(capacity: 3 * chunkRecords)
            defer { chunk.deallocate() }
            var start = first
            while start < last {
                let count = Swift.min(chunkRecords, last - start)
                if case .memory(let words) = source {
                    nb_lats_scan(words.baseAddress! + 3 * start, count, &bounds, &t, scalar)
                } else {
                    guard source.read(start, count, into: chunk) else {
                        out.value.1[part] = true
                        break
                    }
                    nb_lats_scan(chunk, count, &bounds, &t, scalar)
                }
                start += count
            }
            if t.overflowed != 0 { out.value.1[part] = true }
            (out.value.0.baseAddress! + part).initialize(to: t)
            _ = buffers
        }
        defer {
            for part in 0..<parts {
                var t = tallies[part]
                withUnsafeMutableBytes(of: &t.inner) { raw in
                    for p in raw.bindMemory(to: UnsafeMutablePointer<UInt64>?.self) { p?.deallocate() }
                }
            }
        }
        guard !failed.contains(true) else { return nil }
        // The kernel compares as signed and sums in 64 bits: its counts mean something only for
        // values below 2^62 (checked before they are read: beyond, they can exceed the record
        // count), and its sums only while they fit. Otherwise the histogram path (128-bit sums).
        let bits = (0..<parts).reduce(UInt64(0)) { $0 | tallies[$1].bits }
        guard bits < 1 << 62 else { return nil }

        var columns = [Column(), Column(), Column()]
        for part in 0..<parts {
            var t = tallies[part]
            let sums = withUnsafeBytes(of: &t.sum) { Array($0.bindMemory(to: UInt64.self)) }
            let maxima = withUnsafeBytes(of: &t.max) { Array($0.bindMemory(to: UInt64.self)) }
            let below = withUnsafeBytes(of: &t.below) { Array($0.bindMemory(to: UInt64.self)) }
            let equal = withUnsafeBytes(of: &t.equal) { Array($0.bindMemory(to: UInt64.self)) }
            let counts = withUnsafeBytes(of: &t.count) { Array($0.bindMemory(to: Int.self)) }
            let inner = withUnsafeBytes(of: &t.inner) { Array($0.bindMemory(to: UnsafeMutablePointer<UInt64>?.self)) }
            for c in 0..<3 {
                columns[c].sum &+= sums[c]
                columns[c].max = Swift.max(columns[c].max, maxima[c])
                for k in 0..<3 {
                    guard let b = Int(exactly: below[3 * c + k]), let e = Int(exactly: equal[3 * c + k]), b <= n, e <= n else {
                        return nil
                    }
                    columns[c].below[k] += b
                    columns[c].equal[k] += e
                    columns[c].inner[k] += UnsafeBufferPointer(start: inner[3 * c + k], count: counts[3 * c + k])
                }
            }
        }
        guard columns.allSatisfy({ $0.max <= UInt64.max / UInt64(n) }) else { return nil }

        var los: [[UInt64]] = []
        var b = bounds
        withUnsafeBytes(of: &b.lo) { raw in
            let lo = raw.bindMemory(to: UInt64.self)
            los = (0..<3).map { c in (0..<3).map { k in lo[3 * c + k] } }
        }
        var flags = bounds.count_equal
        let countEqual = withUnsafeBytes(of: &flags) { raw in
            let f = raw.bindMemory(to: Int32.self)
            return (0..<3).map { c in (0..<3).map { k in f[3 * c + k] != 0 } }
        }
        let lows = los
        // The columns' order statistics, in parallel.
        let results = UnsafeMutableBufferPointer<LatencySummary?>.allocate(capacity: 3)
        defer { results.deallocate() }
        results.initialize(repeating: nil)
        let merged = Unchecked((columns, results))
        DispatchQueue.concurrentPerform(iterations: 3) { c in
            var column = merged.value.0[c]
            var pcts: [Double] = []
            for (k, p) in LatsFile.percentiles.enumerated() {
                let rank = p / 100 * Double(n - 1)
                let lo = Int(rank.rounded(.down))
                guard
                    let v = column.values(
                        ranks: [lo, Swift.min(lo + 1, n - 1)], bracket: k, lo: lows[c][k], countEqual: countEqual[c][k])
                else { return }
                pcts.append(LatsFile.lerp(Double(v[0]) / 1e6, Double(v[1]) / 1e6, rank - Double(lo)))
            }
            merged.value.1[c] = LatencySummary(
                mean: Double(column.sum) / Double(n) / 1e6, p50: pcts[0], p95: pcts[1], p99: pcts[2],
                max: Double(column.max) / 1e6)
        }
        guard let queue = results[0], let service = results[1], let sojourn = results[2] else { return nil }
        return LatsSummary(requests: n, sojourn: sojourn, service: service, queue: queue)
    }
}

/// Exact order statistics by selection (Hoare partitioning, median-of-three pivots).
enum Selection {
    /// The values of the 0-based `ranks` of `a` (in the order given); reorders `a`. One
    /// multi-way quickselect: each partition step recurses only into the sides holding ranks.
    static func selectAll(_ a: inout [UInt64], ranks: [Int]) -> [UInt64] {
        let sorted = Array(Set(ranks)).sorted()
        precondition(sorted.first.map { $0 >= 0 } ?? true && sorted.last.map { $0 < a.count } ?? true)
        var found: [Int: UInt64] = [:]
        a.withUnsafeMutableBufferPointer { buf in
            // (lo, hi, first wanted, end of wanted) over `sorted`
            var stack: [(Int, Int, Int, Int)] = [(0, buf.count - 1, 0, sorted.count)]
            while let (lo, hi, first, end) = stack.popLast() {
                guard first < end else { continue }
                if hi - lo < 16 {
                    if hi > lo {
                        for i in (lo + 1)...hi {
                            let v = buf[i]
                            var j = i - 1
                            while j >= lo && buf[j] > v {
                                buf[j + 1] = buf[j]
                                j -= 1
                            }
                            buf[j + 1] = v
                        }
                    }
                    for w in first..<end { found[sorted[w]] = buf[sorted[w]] }
                    continue
                }
                let mid = lo + (hi - lo) / 2
                if buf[mid] < buf[lo] { buf.swapAt(mid, lo) }
                if buf[hi] < buf[lo] { buf.swapAt(hi, lo) }
                if buf[hi] < buf[mid] { buf.swapAt(hi, mid) }
                let pivot = buf[mid]
                var i = lo
                var j = hi
                while i <= j {
                    while buf[i] < pivot { i += 1 }
                    while buf[j] > pivot { j -= 1 }
                    if i <= j {
                        buf.swapAt(i, j)
                        i += 1
                        j -= 1
                    }
                }
                // [lo, j] ≤ pivot, (j, i) = pivot, [i, hi] ≥ pivot
                var w = first
                let leftStart = w
                while w < end && sorted[w] <= j { w += 1 }
                stack.append((lo, j, leftStart, w))
                while w < end && sorted[w] < i {
                    found[sorted[w]] = buf[sorted[w]]
                    w += 1
                }
                stack.append((i, hi, w, end))
            }
        }
        return ranks.map { found[$0]! }
    }
}
