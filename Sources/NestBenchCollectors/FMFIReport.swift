import Foundation

/// FMFI of a buddyinfo snapshot per node/zone and for the whole machine, as `nestbench fmfi` shows it.
public struct FMFIReport: Codable, Sendable, Hashable {
    public struct Zone: Codable, Sendable, Hashable {
        public var node: Int
        public var zone: String
        public var freePages: Int64
        /// FMFI at the requested order.
        public var fmfi: Double
        /// Every order as the kernel prints /sys/kernel/debug/extfrag/unusable_index ("0.012", truncated).
        public var unusableIndex: [String]

        enum CodingKeys: String, CodingKey {
            case node, zone, fmfi
            case freePages = "free_pages"
            case unusableIndex = "unusable_index"
        }
    }

    public var source: String
    public var order: Int
    public var zones: [Zone]
    /// Pooled over the zones that hold movable memory.
    public var machineFMFI: Double
    public var machineZones: [String]

    enum CodingKeys: String, CodingKey {
        case source, order, zones
        case machineFMFI = "machine_fmfi"
        case machineZones = "machine_zones"
    }

    public init(_ buddy: Buddyinfo, order: Int, source: String) {
        self.source = source
        self.order = order
        zones = buddy.zones.map { z in
            Zone(
                node: z.node, zone: z.zone, freePages: z.freePages, fmfi: z.fmfi(order: order),
                unusableIndex: (0..<z.counts.count).map { FMFIReport.kernelForm(z.fmfiMilli(order: $0)) })
        }
        machineFMFI = buddy.machineFMFI(order: order)
        machineZones = buddy.movableZones.map { "node \($0.node) \($0.zone)" }
    }

    /// 12 → "0.012", 1000 → "1.000" (mm/vmstat.c prints `%d.%03d`).
    public static func kernelForm(_ milli: Int64) -> String {
        "\(milli / 1000).\(String(format: "%03d", Int(milli % 1000)))"
    }
}

/// The live kernel's unusable_index read together with /proc/buddyinfo.
public enum LiveFMFICheck {
    public struct Result: Sendable {
        public var buddyinfo: Buddyinfo
        /// "node:zone" → thousandths per order, as the kernel printed them.
        public var kernel: [String: [Int64]]
        /// "node 0 Normal order 9: ours 0.012, kernel 0.013" per disagreement.
        public var mismatches: [String]
        /// Reads needed until buddyinfo was the same before and after reading unusable_index.
        public var attempts: Int
    }

    /// Reads buddyinfo, unusable_index, buddyinfo until both buddyinfo reads agree (same moment),
    /// mounting debugfs for the duration if needed.
    public static func run(maxAttempts: Int = 50) throws -> Result {
        try Debugfs.withMounted { debugfs in
            let indexPath = "\(debugfs)/extfrag/unusable_index"
            for attempt in 1...maxAttempts {
                let before = try KernelFile.require("/proc/buddyinfo")
                let index = try KernelFile.require(indexPath)
                let after = try KernelFile.require("/proc/buddyinfo")
                guard before == after else { continue }
                let buddy = try Buddyinfo.parse(before)
                let kernel = UnusableIndex.parse(index)
                var mismatches: [String] = []
                for z in buddy.zones {
                    guard let expected = kernel["\(z.node):\(z.zone)"] else {
                        mismatches.append("node \(z.node) \(z.zone): missing from \(indexPath)")
                        continue
                    }
                    for order in 0..<max(expected.count, z.counts.count) {
                        let ours = order < z.counts.count ? z.fmfiMilli(order: order) : -1
                        let theirs = order < expected.count ? expected[order] : -1
                        if ours != theirs {
                            mismatches.append(
                                "node \(z.node) \(z.zone) order \(order): ours \(FMFIReport.kernelForm(ours)), kernel \(FMFIReport.kernelForm(theirs))"
                            )
                        }
                    }
                }
                if kernel.count != buddy.zones.count {
                    mismatches.append("\(indexPath) has \(kernel.count) zones, /proc/buddyinfo \(buddy.zones.count)")
                }
                return Result(buddyinfo: buddy, kernel: kernel, mismatches: mismatches, attempts: attempt)
            }
            throw ProcfsError(
                path: "/proc/buddyinfo",
                message: "changed during every one of \(maxAttempts) reads: memory is too busy to compare")
        }
    }
}
