/// One layer's verdict on one process: every whole 2 MiB region of its probed mappings.
public struct ProcessAlignment: Sendable, Hashable {
    public var pid: Int32
    /// Probed mappings (private anonymous, heap, anonymous hugetlb) and their whole 2 MiB regions.
    public var mappings: Int
    public var regions: [RegionMapping]
    /// Wall time of the probe pass (maps + pagemap + kpageflags), seconds.
    public var seconds: Double
    /// Bytes read from pagemap and kpageflags.
    public var pagemapBytes: Int
    public var kpageflagsBytes: Int

    public init(
        pid: Int32, mappings: Int, regions: [RegionMapping], seconds: Double, pagemapBytes: Int, kpageflagsBytes: Int
    ) {
        self.pid = pid
        self.mappings = mappings
        self.regions = regions
        self.seconds = seconds
        self.pagemapBytes = pagemapBytes
        self.kpageflagsBytes = kpageflagsBytes
    }

    public var summary: AlignmentSummary { AlignmentSummary(regions) }
}

/// Counts over regions.
public struct AlignmentSummary: Sendable, Hashable, Codable {
    public var huge = 0
    public var hugeTHP = 0
    public var hugeHugetlb = 0
    public var base = 0
    public var notPresent = 0

    public init(_ regions: [RegionMapping]) {
        for r in regions {
            switch r.kind {
            case .huge:
                huge += 1
                if r.hugeKind == .hugetlb { hugeHugetlb += 1 } else { hugeTHP += 1 }
            case .base: base += 1
            case .notPresent: notPresent += 1
            }
        }
    }

    /// Regions with at least one present page: the memory the process uses.
    public var present: Int { huge + base }

    /// Fraction of present regions mapped by one huge page; nil when no region is present.
    public var hugeFraction: Double? { present == 0 ? nil : Double(huge) / Double(present) }
}
