/// Bits of `/proc/PID/pagemap` entries (one little-endian u64 per virtual 4 KiB page;
/// Documentation/admin-guide/mm/pagemap.rst).
public enum PagemapBits {
    public static let present: UInt64 = 1 << 63
    public static let swapped: UInt64 = 1 << 62
    public static let fileOrSharedAnon: UInt64 = 1 << 61
    public static let exclusive: UInt64 = 1 << 56
    /// Bits 0–54: the page frame number (zero unless the reader has CAP_SYS_ADMIN).
    public static let pfnMask: UInt64 = (1 << 55) - 1
}

/// Bits of `/proc/kpageflags` (one u64 per page frame; include/uapi/linux/kernel-page-flags.h).
public struct KPageFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let compoundHead = KPageFlags(rawValue: 1 << 15)
    public static let compoundTail = KPageFlags(rawValue: 1 << 16)
    /// hugetlb.
    public static let huge = KPageFlags(rawValue: 1 << 17)
    public static let ksm = KPageFlags(rawValue: 1 << 21)
    /// Transparent huge page (head and tails).
    public static let thp = KPageFlags(rawValue: 1 << 22)
    public static let zeroPage = KPageFlags(rawValue: 1 << 24)
    /// A page-table page (HugeGPT's object).
    public static let pgtable = KPageFlags(rawValue: 1 << 26)
}

/// Sizes of the x86-64 pages the probe tests.
public enum PageGeometry {
    public static let baseSize: UInt64 = 4096
    public static let hugeSize: UInt64 = 2 << 20
    /// Base pages per 2 MiB page.
    public static let pagesPerHuge = 512
}
