/// How one 2 MiB virtual region is mapped.
public enum RegionKind: String, Sendable, Hashable, Codable {
    /// One huge page: a THP, a 2 MiB hugetlb page, or a 2 MiB slice of a larger hugetlb page.
    case huge
    /// At least one present page, but not one huge page.
    case base
    /// No page present (never touched, or swapped out).
    case notPresent = "not-present"
}

/// What kind of huge page backs a huge region.
public enum HugeKind: String, Sendable, Hashable, Codable {
    case thp
    case hugetlb
}

/// The verdict on one 2 MiB virtual region.
public struct RegionMapping: Sendable, Hashable {
    public var virtualStart: UInt64
    public var kind: RegionKind
    public var hugeKind: HugeKind?
    /// Physical start of the huge page (its PFN × 4 KiB); nil unless huge.
    public var physicalStart: UInt64?
    /// Present base pages in the region (0…512).
    public var presentPages: Int
    /// A base region's pages: the distinct 2 MiB-aligned physical ranges they lie in (empty
    /// without page frame numbers). Followed down for `align.misaligned.host_huge`.
    public var frames: [UInt64] = []

    public init(virtualStart: UInt64, kind: RegionKind, hugeKind: HugeKind?, physicalStart: UInt64?, presentPages: Int) {
        self.virtualStart = virtualStart
        self.kind = kind
        self.hugeKind = hugeKind
        self.physicalStart = physicalStart
        self.presentPages = presentPages
    }
}

/// The pagemap-only first step for one region: only a region whose 512 pages are all present at
/// consecutive PFNs from a 512-aligned one can be one huge page, so only those need kpageflags.
public enum RegionCandidate: Sendable, Hashable {
    case notPresent
    /// Some pages present; `pfnsVisible` false when every present entry has PFN 0 (no CAP_SYS_ADMIN).
    case base(present: Int, pfnsVisible: Bool)
    /// All 512 present and physically contiguous from a 512-aligned PFN.
    case contiguous(firstPFN: UInt64)
}

/// Pure classification of pagemap entries and kpageflags words (no I/O).
public enum RegionClassifier {
    /// Step 1: the 512 pagemap entries of one 2 MiB-aligned region.
    public static func candidate(_ entries: UnsafeBufferPointer<UInt64>) -> RegionCandidate {
        precondition(entries.count == PageGeometry.pagesPerHuge)
        let first = UInt64(littleEndian: entries[0])
        if first & PagemapBits.present != 0 {
            let pfn0 = first & PagemapBits.pfnMask
            if pfn0 != 0, pfn0 % UInt64(PageGeometry.pagesPerHuge) == 0 {
                var contiguous = true
                for i in 1..<PageGeometry.pagesPerHuge {
                    let e = UInt64(littleEndian: entries[i])
                    if e & PagemapBits.present == 0 || e & PagemapBits.pfnMask != pfn0 &+ UInt64(i) {
                        contiguous = false
                        break
                    }
                }
                if contiguous { return .contiguous(firstPFN: pfn0) }
            }
        }
        var present = 0
        var anyPFN = false
        for i in 0..<PageGeometry.pagesPerHuge {
            let e = UInt64(littleEndian: entries[i])
            if e & PagemapBits.present != 0 {
                present += 1
                if e & PagemapBits.pfnMask != 0 { anyPFN = true }
            }
        }
        return present == 0 ? .notPresent : .base(present: present, pfnsVisible: anyPFN)
    }

    /// The distinct 2 MiB-aligned physical ranges of a region's present pages.
    public static func frames(_ entries: UnsafeBufferPointer<UInt64>) -> [UInt64] {
        var set = Set<UInt64>()
        for e in entries {
            let v = UInt64(littleEndian: e)
            guard v & PagemapBits.present != 0 else { continue }
            let pfn = v & PagemapBits.pfnMask
            if pfn != 0 { set.insert(pfn / UInt64(PageGeometry.pagesPerHuge) * PageGeometry.hugeSize) }
        }
        return set.sorted()
    }

    /// Step 2: the kpageflags words of the 512 frames from a contiguous candidate's first PFN.
    /// One huge page: a head (THP or hugetlb) followed by 511 tails of the same kind, or 512 tails
    /// of a hugetlb page larger than 2 MiB (a 1 GiB page's 2 MiB slice). Anything else is base pages
    /// that merely happen to be physically contiguous.
    public static func hugeKind(_ flags: UnsafeBufferPointer<UInt64>) -> HugeKind? {
        precondition(flags.count == PageGeometry.pagesPerHuge)
        let head = KPageFlags(rawValue: UInt64(littleEndian: flags[0]))
        let kind: HugeKind
        if head.contains(.huge) {
            kind = .hugetlb
        } else if head.contains(.thp) {
            kind = .thp
        } else {
            return nil
        }
        let kindBit: KPageFlags = kind == .hugetlb ? .huge : .thp
        let headIsHead = head.contains(.compoundHead)
        if !headIsHead && !(kind == .hugetlb && head.contains(.compoundTail)) { return nil }
        for i in 1..<PageGeometry.pagesPerHuge {
            let f = KPageFlags(rawValue: UInt64(littleEndian: flags[i]))
            if !f.contains(.compoundTail) || !f.contains(kindBit) || f.contains(.compoundHead) { return nil }
        }
        return kind
    }
}
