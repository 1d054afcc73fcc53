import Foundation
import NestBenchModel

/// One counter of a TLB event set: the metric it becomes and the libpfm event that measures it.
public struct CounterEvent: Sendable, Hashable, Codable {
    /// Metric name, stable across microarchitectures (`tlb.dtlb_load_walks`).
    public var metric: String
    /// libpfm event string without the PMU prefix (`DTLB_LOAD_MISSES:WALK_COMPLETED`).
    public var event: String
    public var polarity: Polarity
    public var meaning: String

    public init(metric: String, event: String, polarity: Polarity = .lowerIsBetter, meaning: String = "") {
        self.metric = metric
        self.event = event
        self.polarity = polarity
        self.meaning = meaning
    }
}

/// The TLB events of one microarchitecture (../shared/METHOD.md, "TLB-miss events").
public struct TLBEventSet: Sendable, Hashable, Codable {
    /// e.g. "Broadwell".
    public var microarchitecture: String
    /// The libpfm PMU table whose names are encoded (`bdw_ep::…`).
    public var pmu: String
    /// Encoded with LIBPFM_ENCODE_INACTIVE (a CPU newer than this libpfm: Emerald Rapids → spr).
    public var encodeInactive: Bool
    public var events: [CounterEvent]

    /// `pmu::event`, the string given to libpfm.
    public func qualified(_ event: CounterEvent) -> String { "\(pmu)::\(event.event)" }

    /// The metrics summed into `tlb_misses` (completed page walks: loads, stores, instructions).
    public var walkMetrics: [String] { events.map(\.metric).filter { TLBEventSets.walkMetricNames.contains($0) } }
}

/// The per-microarchitecture TLB event tables.
public enum TLBEventSets {
    /// Completed page walks; `tlb_misses` is their sum (what the xGemini paper's Fig. 12 counts).
    public static let walkMetricNames: Set<String> = [
        "tlb.dtlb_load_walks", "tlb.dtlb_store_walks", "tlb.dtlb_walks", "tlb.itlb_walks",
    ]

    /// The metric every run reports (measured, or unavailable with the reason).
    public static let headlineMetrics = [
        "tlb_misses", "tlb.dtlb_load_walks", "tlb.dtlb_store_walks", "tlb.itlb_walks", "cycles", "instructions",
    ]

    static func intelCommon(walkCycles: String, extra: [CounterEvent]) -> [CounterEvent] {
        [
            CounterEvent(
                metric: "tlb.dtlb_load_walks", event: "DTLB_LOAD_MISSES:WALK_COMPLETED",
                meaning: "data-load page walks completed (any page size)"),
            CounterEvent(
                metric: "tlb.dtlb_store_walks", event: "DTLB_STORE_MISSES:WALK_COMPLETED",
                meaning: "data-store page walks completed"),
            CounterEvent(
                metric: "tlb.itlb_walks", event: "ITLB_MISSES:WALK_COMPLETED",
                meaning: "instruction-fetch page walks completed"),
            CounterEvent(
                metric: "tlb.dtlb_load_walk_cycles", event: "DTLB_LOAD_MISSES:\(walkCycles)",
                meaning: "cycles of data-load page walks"),
            CounterEvent(
                metric: "tlb.dtlb_store_walk_cycles", event: "DTLB_STORE_MISSES:\(walkCycles)",
                meaning: "cycles of data-store page walks"),
            CounterEvent(
                metric: "tlb.itlb_walk_cycles", event: "ITLB_MISSES:\(walkCycles)",
                meaning: "cycles of instruction page walks"),
        ] + extra + [
            CounterEvent(metric: "cycles", event: "UNHALTED_CORE_CYCLES", meaning: "core cycles, not halted"),
            CounterEvent(
                metric: "instructions", event: "INSTRUCTION_RETIRED", polarity: .neutral, meaning: "instructions retired"),
        ]
    }

    static func broadwell(_ pmu: String) -> TLBEventSet {
        TLBEventSet(
            microarchitecture: pmu == "bdw_ep" ? "Broadwell-EP" : "Broadwell", pmu: pmu, encodeInactive: false,
            events: intelCommon(
                walkCycles: "WALK_DURATION",
                extra: [
                    CounterEvent(
                        metric: "tlb.ept_walk_cycles", event: "EPT:WALK_CYCLES",
                        meaning: "cycles of EPT (second-level) page walks")
                ]))
    }

    static func skylake(_ pmu: String, name: String) -> TLBEventSet {
        TLBEventSet(
            microarchitecture: name, pmu: pmu, encodeInactive: false,
            events: intelCommon(
                walkCycles: "WALK_ACTIVE",
                extra: [
                    CounterEvent(
                        metric: "tlb.ept_walk_pending", event: "EPT:WALK_PENDING",
                        meaning: "EPT page walks pending, per cycle")
                ]))
    }

    static func iceLake(_ pmu: String, name: String) -> TLBEventSet {
        TLBEventSet(
            microarchitecture: name, pmu: pmu, encodeInactive: false, events: intelCommon(walkCycles: "WALK_ACTIVE", extra: []))
    }

    static func zen(_ pmu: String, name: String, itlbUmasks: String) -> TLBEventSet {
        TLBEventSet(
            microarchitecture: name, pmu: pmu, encodeInactive: false,
            events: [
                CounterEvent(
                    metric: "tlb.dtlb_walks",
                    event:
                        "L1_DTLB_MISS:TLB_RELOAD_1G_L2_MISS:TLB_RELOAD_2M_L2_MISS:TLB_RELOAD_COALESCED_PAGE_MISS:TLB_RELOAD_4K_L2_MISS",
                    meaning: "data page walks (L1 and L2 DTLB miss, loads and stores together)"),
                CounterEvent(
                    metric: "tlb.itlb_walks", event: "L1_ITLB_MISS_L2_ITLB_MISS:\(itlbUmasks)",
                    meaning: "instruction page walks (L1 and L2 ITLB miss)"),
                CounterEvent(metric: "cycles", event: "CYCLES_NOT_IN_HALT", meaning: "core cycles, not halted"),
                CounterEvent(
                    metric: "instructions", event: "RETIRED_INSTRUCTIONS", polarity: .neutral, meaning: "instructions retired"),
            ])
    }

    /// The table for a libpfm PMU name, or nil when NestBench has none.
    public static func forPMU(_ name: String) -> TLBEventSet? {
        switch name {
        case "bdw", "bdw_ep": return broadwell(name)
        case "skl": return skylake(name, name: "Skylake")
        case "skx": return skylake(name, name: "Skylake-X")
        case "clx": return skylake(name, name: "Cascade Lake")
        case "icl": return iceLake(name, name: "Ice Lake")
        case "icx": return iceLake(name, name: "Ice Lake-X")
        case "spr": return iceLake(name, name: "Sapphire Rapids")
        case "amd64_fam17h_zen1": return zen(name, name: "Zen 1", itlbUmasks: "IF1G:IF2M:IF4K")
        case "amd64_fam17h_zen2": return zen(name, name: "Zen 2", itlbUmasks: "IF1G:IF2M:IF4K")
        case "amd64_fam19h_zen3": return zen(name, name: "Zen 3", itlbUmasks: "IF1G:IF2M:IF4K")
        case "amd64_fam19h_zen4": return zen(name, name: "Zen 4", itlbUmasks: "IF1G:IF2M:IF4K:COALESCED4K")
        default: return nil
        }
    }

    /// Every PMU name with a table.
    public static let supportedPMUs = [
        "bdw", "bdw_ep", "skl", "skx", "clx", "icl", "icx", "spr", "amd64_fam17h_zen1", "amd64_fam17h_zen2",
        "amd64_fam19h_zen3", "amd64_fam19h_zen4",
    ]

    /// Emerald Rapids: Sapphire Rapids' table, encoded inactive (libpfm 4.13 does not know EMR).
    public static var emeraldRapids: TLBEventSet {
        var set = iceLake("spr", name: "Emerald Rapids (SPR table, LIBPFM_ENCODE_INACTIVE)")
        set.encodeInactive = true
        return set
    }

    /// The set for this machine: from libpfm's detected core PMU, or — for CPUs newer than libpfm —
    /// from CPUID. The error says why there is none.
    public static func select(corePMU: PMUDescription?, cpu: CPUIdentity) -> Result<TLBEventSet, SelectionError> {
        if cpu.needsInactiveEncoding { return .success(emeraldRapids) }
        guard let pmu = corePMU else {
            return .failure(
                SelectionError(
                    reason:
                        "libpfm4 (API \(Perfmon.libraryVersion)) detects no core PMU for \(cpu.summary)"))
        }
        guard let set = forPMU(pmu.name) else {
            return .failure(SelectionError(reason: "no TLB event table for libpfm PMU \(pmu.name) (\(pmu.description))"))
        }
        return .success(set)
    }

    public struct SelectionError: Error, Sendable, Hashable {
        public var reason: String
    }
}
