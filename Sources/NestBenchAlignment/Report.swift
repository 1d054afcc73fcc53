/// One layer's row of `nestbench align`: the counts, or why there are none.
public struct LayerAlignmentReport: Sendable, Hashable, Codable {
    public struct Region: Sendable, Hashable, Codable {
        public var virtualStart: String
        public var kind: RegionKind
        public var hugeKind: HugeKind?
        public var physicalStart: String?
        public var presentPages: Int
    }

    public var layer: String
    public var pid: Int32
    public var mappings: Int?
    public var counts: AlignmentSummary?
    public var hugeFraction: Double?
    public var probeSeconds: Double?
    public var unavailable: String?
    public var regions: [Region]?

    public init(layer: String, pid: Int32, result: Result<ProcessAlignment, AlignmentUnavailable>, includeRegions: Bool) {
        self.layer = layer
        self.pid = pid
        switch result {
        case .success(let a):
            mappings = a.mappings
            counts = a.summary
            hugeFraction = a.summary.hugeFraction
            probeSeconds = a.seconds
            if includeRegions {
                regions = a.regions.map {
                    Region(
                        virtualStart: "0x" + String($0.virtualStart, radix: 16), kind: $0.kind, hugeKind: $0.hugeKind,
                        physicalStart: $0.physicalStart.map { "0x" + String($0, radix: 16) }, presentPages: $0.presentPages)
                }
            }
        case .failure(let error):
            unavailable = error.description
        }
    }
}
