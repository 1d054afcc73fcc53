import Foundation

/// The one-pass exact path of `LatsFile.summarize`.
///
/// A sample (64 evenly spaced blocks of consecutive records) gives, per column and percentile, a
/// value bracket [lo, hi] that holds the wanted ranks with overwhelming probability (±4.5 binomial
/// standard deviations around the sample quantile). One pass over all records then counts, branch
/// free, the values below each `lo`, counts those equal to `lo` or `hi`, and keeps the few strictly
/// inside, together with sums and maxima. A rank is then read exactly from
/// [lo × equal-to-lo] + inner (selected, not sorted) + [hi × equal-to-hi]. When a bracket missed
/// its rank (a sample unlike the whole file), the caller falls back to the histogram path: the
/// result is exact either way.
enum Brackets {
    struct Column {
        var lo: (UInt64, UInt64, UInt64) = (0, 0, 0)
        var width: (UInt64, UInt64, UInt64) = (0, 0, 0)
        var below: (Int, Int, Int) = (0, 0, 0)
        var eqLo: (Int, Int, Int) = (0, 0, 0)
        var eqHi: (Int, Int, Int) = (0, 0, 0)
        var inner: ([UInt64], [UInt64], [UInt64]) = ([], [], [])
        var sum = WideSum()
        var max: UInt64 = 0

        @inline(__always)
        mutating func scan(_ v: UInt64) {
            sum.add(v)
            max = Swift.max(max, v)
            below.0 &+= v < lo.0 ? 1 : 0
            below.1 &+= v < lo.1 ? 1 : 0
            below.2 &+= v < lo.2 ? 1 : 0
            if v &- lo.0 <= width.0 { hit(0, v) }
            if v &- lo.1 <= width.1 { hit(1, v) }
            if v &- lo.2 <= width.2 { hit(2, v) }
        }

        @inline(never)
        mutating func hit(_ j: Int, _ v: UInt64) {
            switch j {
            case 0:
                if v == lo.0 { eqLo.0 += 1 } else if v == lo.0 &+ width.0 { eqHi.0 += 1 } else { inner.0.append(v) }
            case 1:
                if v == lo.1 { eqLo.1 += 1 } else if v == lo.1 &+ width.1 { eqHi.1 += 1 } else { inner.1.append(v) }
            default:
                if v == lo.2 { eqLo.2 += 1 } else if v == lo.2 &+ width.2 { eqHi.2 += 1 } else { inner.2.append(v) }
            }
        }

        mutating func merge(_ o: Column) {
            below = (below.0 + o.below.0, below.1 + o.below.1, below.2 + o.below.2)
            eqLo = (eqLo.0 + o.eqLo.0, eqLo.1 + o.eqLo.1, eqLo.2 + o.eqLo.2)
            eqHi = (eqHi.0 + o.eqHi.0, eqHi.1 + o.eqHi.1, eqHi.2 + o.eqHi.2)
            inner.0 += o.inner.0
            inner.1 += o.inner.1
            inner.2 += o.inner.2
            sum.add(o.sum)
            max = Swift.max(max, o.max)
        }

        /// The value of 0-based `rank` if bracket `j` holds it.
        mutating func value(rank: Int, bracket j: Int) -> UInt64? {
            let (below, eqLo, eqHi, lo, width): (Int, Int, Int, UInt64, UInt64) =
                switch j {
                case 0: (self.below.0, self.eqLo.0, self.eqHi.0, self.lo.0, self.width.0)
                case 1: (self.below.1, self.eqLo.1, self.eqHi.1, self.lo.1, self.width.1)
                default: (self.below.2, self.eqLo.2, self.eqHi.2, self.lo.2, self.width.2)
                }
            var offset = rank - below
            guard offset >= 0 else { return nil }
            if offset < eqLo { return lo }
            offset -= eqLo
            let count = j == 0 ? inner.0.count : j == 1 ? inner.1.count : inner.2.count
            if offset < count {
                switch j {
                case 0: return Selection.select(&inner.0, offset)
                case 1: return Selection.select(&inner.1, offset)
                default: return Selection.select(&inner.2, offset)
                }
            }
            offset -= count
            return offset < eqHi ? lo &+ width : nil
        }
    }

    static func summarize(words: UnsafeBufferPointer<UInt64>, parts: Int) -> LatsSummary? {
        let n = words.count / 3
        // The sample: 64 blocks of up to 256 consecutive records, evenly spaced.
        let blocks = 64
        let blockLength = Swift.min(256, n / blocks)
        var samples: [[UInt64]] = [[], [], []]
        for b in 0..<blocks {
            let start = b * (n / blocks)
            for r in start..<(start + blockLength) {
                for c in 0..<3 { samples[c].append(UInt64(littleEndian: words[3 * r + c])) }
            }
        }
        let m = samples[0].count
        var template: [Column] = []
        for c in 0..<3 {
            samples[c].sort()
            var column = Column()
            var los: [UInt64] = []
            var widths: [UInt64] = []
            for p in LatsFile.percentiles {
                let q = p / 100
                let center = q * Double(m - 1)
                let margin = 4.5 * (Double(m) * q * (1 - q)).squareRoot() + 8
                let loRank = Swift.max(0, Int((center - margin).rounded(.down)))
                let hiRank = Swift.min(m - 1, Int((center + margin).rounded(.up)))
                var lo = samples[c][loRank]
                var hi = samples[c][hiRank]
                if loRank == 0 { lo = 0 }
                if hiRank == m - 1 { hi = UInt64.max }
                los.append(lo)
                widths.append(hi - lo)
            }
            column.lo = (los[0], los[1], los[2])
            column.width = (widths[0], widths[1], widths[2])
            template.append(column)
        }

        let chunk = (n + parts - 1) / parts
        let shared = Unchecked(words)
        let out = UnsafeMutableBufferPointer<[Column]>.allocate(capacity: parts)
        defer { out.deallocate() }
        let outShared = Unchecked(out)
        let start = template
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let words = shared.value
            var q = start[0]
            var s = start[1]
            var j = start[2]
            var i = Swift.min(part * chunk, n) * 3
            let end = Swift.min((part + 1) * chunk, n) * 3
            while i < end {
                q.scan(UInt64(littleEndian: words[i]))
                s.scan(UInt64(littleEndian: words[i + 1]))
                j.scan(UInt64(littleEndian: words[i + 2]))
                i += 3
            }
            (outShared.value.baseAddress! + part).initialize(to: [q, s, j])
        }
        var columns = out[0]
        for part in 1..<parts {
            for c in 0..<3 { columns[c].merge(out[part][c]) }
        }
        for part in 0..<parts { (out.baseAddress! + part).deinitialize(count: 1) }

        var summaries: [LatencySummary] = []
        for c in 0..<3 {
            var pcts: [Double] = []
            for (j, p) in LatsFile.percentiles.enumerated() {
                let rank = p / 100 * Double(n - 1)
                let lo = Int(rank.rounded(.down))
                guard let a = columns[c].value(rank: lo, bracket: j),
                    let b = columns[c].value(rank: Swift.min(lo + 1, n - 1), bracket: j)
                else { return nil }
                pcts.append(LatsFile.lerp(Double(a) / 1e6, Double(b) / 1e6, rank - Double(lo)))
            }
            summaries.append(
                LatencySummary(
                    mean: columns[c].sum.double / Double(n) / 1e6, p50: pcts[0], p95: pcts[1], p99: pcts[2],
                    max: Double(columns[c].max) / 1e6))
        }
        return LatsSummary(requests: n, sojourn: summaries[2], service: summaries[1], queue: summaries[0])
    }
}

/// Exact order statistics by selection (Hoare partitioning, median-of-three pivots).
enum Selection {
    /// The value of 0-based rank `k` of `a`; reorders `a`.
    static func select(_ a: inout [UInt64], _ k: Int) -> UInt64 {
        precondition(k >= 0 && k < a.count)
        return a.withUnsafeMutableBufferPointer { buf -> UInt64 in
            var lo = 0
            var hi = buf.count - 1
            while hi > lo {
                if hi - lo < 16 {
                    // Small range: insertion sort.
                    for i in (lo + 1)...hi {
                        let v = buf[i]
                        var j = i - 1
                        while j >= lo && buf[j] > v {
                            buf[j + 1] = buf[j]
                            j -= 1
                        }
                        buf[j + 1] = v
                    }
                    return buf[k]
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
                if k <= j {
                    hi = j
                } else if k >= i {
                    lo = i
                } else {
                    return buf[k]
                }
            }
            return buf[k]
        }
    }
}
