import Foundation

/// One line of /proc/buddyinfo: free block counts per order for one zone of one node.
public struct BuddyZone: Sendable, Hashable, Codable {
    public var node: Int
    public var zone: String
    /// counts[i] = number of free blocks of order i (2^i pages).
    public var counts: [Int64]

    public init(node: Int, zone: String, counts: [Int64]) {
        self.node = node
        self.zone = zone
        self.counts = counts
    }

    /// Free pages: Σ counts[i]·2^i.
    public var freePages: Int64 {
        counts.enumerated().reduce(0) { $0 + $1.element << Int64($1.offset) }
    }

    /// Free pages in blocks of at least `order`: Σ_{i≥order} counts[i]·2^i.
    public func freePages(atLeast order: Int) -> Int64 {
        counts.enumerated().reduce(0) { $1.offset >= order ? $0 + $1.element << Int64($1.offset) : $0 }
    }

    /// FMFI at `order` (Gorman's unusable free space index): (F − Σ_{i≥order} k_i·2^i) / F.
    /// As the kernel's `unusable_index`, 1 when there is no free memory ("all free memory is unusable").
    public func fmfi(order: Int) -> Double {
        let free = freePages
        guard free > 0 else { return 1 }
        return Double(free - freePages(atLeast: order)) / Double(free)
    }

    /// The kernel's printed form: three decimals, truncated (it computes the index scaled by 1000
    /// with integer division: mm/vmstat.c unusable_free_index, then prints `%d.%03d`).
    public func fmfiMilli(order: Int) -> Int64 {
        let free = freePages
        guard free > 0 else { return 1000 }
        return (free - freePages(atLeast: order)) * 1000 / free
    }
}

/// A /proc/buddyinfo snapshot.
public struct Buddyinfo: Sendable, Hashable, Codable {
    public var zones: [BuddyZone]

    public init(zones: [BuddyZone]) {
        self.zones = zones
    }

    /// Most orders a zone can have: the kernel's MAX_PAGE_ORDER is at most 15 on every
    /// architecture (arm64 64K pages), so 16 columns; more is not a buddyinfo line.
    public static let maxOrders = 16
    /// Most pages a machine can have: 2^64 bytes of 4 KiB pages. A zone (or all zones) claiming
    /// more free pages is not a real buddyinfo, and the sums below would overflow.
    public static let maxPages: Int64 = 1 << 52

    /// Parses `Node 0, zone   Normal    271    348 …`.
    public static func parse(_ text: String, path: String = "/proc/buddyinfo") throws(ProcfsError) -> Buddyinfo {
        var zones: [BuddyZone] = []
        var totalPages: Int64 = 0
        for (index, line) in text.split(separator: "\n").enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            let fields = trimmed.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" })
            guard fields.count >= 5, fields[0] == "Node", let node = Int(fields[1]), fields[2] == "zone" else {
                throw ProcfsError(path: path, message: "line \(index + 1) is not a buddyinfo line: \"\(trimmed.prefix(80))\"")
            }
            guard fields.count - 4 <= maxOrders else {
                throw ProcfsError(
                    path: path,
                    message: "line \(index + 1) has \(fields.count - 4) orders; the kernel has at most \(maxOrders)")
            }
            var counts: [Int64] = []
            var zonePages: Int64 = 0
            for (order, f) in fields[4...].enumerated() {
                guard let v = Int64(f), v >= 0 else {
                    throw ProcfsError(path: path, message: "line \(index + 1): \"\(f.prefix(40))\" is not a block count")
                }
                // counts·2^order, summed: checked, and bounded by what a machine can have.
                let (pages, overflow) = v.multipliedReportingOverflow(by: Int64(1) << Int64(order))
                let (sum, overflowSum) = zonePages.addingReportingOverflow(pages)
                guard !overflow, !overflowSum, sum <= maxPages else {
                    throw ProcfsError(
                        path: path,
                        message:
                            "line \(index + 1): \(v) free blocks of order \(order) make more free pages than a 64-bit machine can have (2^52)"
                    )
                }
                zonePages = sum
                counts.append(v)
            }
            totalPages += zonePages
            guard totalPages <= maxPages else {
                throw ProcfsError(
                    path: path,
                    message: "line \(index + 1): the zones add up to more free pages than a 64-bit machine can have (2^52)")
            }
            zones.append(BuddyZone(node: node, zone: String(fields[3]), counts: counts))
        }
        if zones.isEmpty { throw ProcfsError(path: path, message: "no zones found") }
        return Buddyinfo(zones: zones)
    }

    public static func live(path: String = "/proc/buddyinfo") throws(ProcfsError) -> Buddyinfo {
        try parse(try KernelFile.require(path), path: path)
    }

    /// Zones that hold movable memory (user pages, huge pages): every zone but DMA — DMA32,
    /// Normal, Movable. DMA (16 MiB, reserved for old devices) is excluded. DMA32 counts: user
    /// pages and THPs come from it once Normal runs short (it held a workload's huge pages in a
    /// fragmented run whose Normal zone alone looked fragmented).
    public var movableZones: [BuddyZone] {
        zones.filter { $0.zone != "DMA" }
    }

    /// FMFI over the given zones pooled: free pages weighted, as if one zone.
    public static func fmfi(of zones: [BuddyZone], order: Int) -> Double {
        let free = zones.reduce(Int64(0)) { $0 + $1.freePages }
        guard free > 0 else { return 1 }
        let big = zones.reduce(Int64(0)) { $0 + $1.freePages(atLeast: order) }
        return Double(free - big) / Double(free)
    }

    /// Whole-machine FMFI at `order` over `movableZones`.
    public func machineFMFI(order: Int) -> Double { Self.fmfi(of: movableZones, order: order) }

    /// Which zones `machineFMFI` covers, e.g. "Node 0 Normal".
    public var machineZonesDescription: String {
        movableZones.map { "node \($0.node) \($0.zone)" }.joined(separator: ", ")
    }
}

/// The kernel's /sys/kernel/debug/extfrag/unusable_index, to check our FMFI against.
public enum UnusableIndex {
    /// `Node 0, zone   Normal 0.000 0.011 …` → per (node, zone) values in thousandths.
    public static func parse(_ text: String) -> [String: [Int64]] {
        var result: [String: [Int64]] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "," })
            guard fields.count >= 5, fields[0] == "Node", fields[2] == "zone" else { continue }
            let values = fields[4...].compactMap { field -> Int64? in
                let parts = field.split(separator: ".")
                guard parts.count == 2, let whole = Int64(parts[0]), let milli = Int64(parts[1]) else { return nil }
                return whole * 1000 + milli
            }
            result["\(fields[1]):\(fields[3])"] = values
        }
        return result
    }
}
