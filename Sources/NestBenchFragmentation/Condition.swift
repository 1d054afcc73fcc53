import Foundation
import Logging
import NestBenchCollectors
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess

/// What a condition left in place for one run in one place: metrics of its preparation
/// (compaction), the fragmenter holding memory, and the place whose knobs go back after the run.
public struct PreparedCondition: Sendable {
    public var metrics: [Metric] = []
    public var provenance: [String: String] = [:]
    public var fragmentation: FragmentationSession?
    public var pressure: PressureSession?
    public var place: (any Place)?

    public init() {}

    /// Puts the place's run knobs back (a guest's; this machine's go back with the next
    /// configuration or at the end).
    public func restore() async -> [String] {
        await place?.restoreKnobs() ?? []
    }

    /// `prefix.name`, or `name` when the prefix is empty.
    public static func prefixed(_ name: String, _ prefix: String) -> String { prefix.isEmpty ? name : "\(prefix).\(name)" }

    /// FMFI around drop_caches + compact_memory.
    static func compactionMetrics(before: Double?, after: Double?, order: Int, in place: String) -> [Metric] {
        [("fmfi_before_compaction", before), ("fmfi_after_compaction", after)].map { name, value in
            value.map {
                Metric(
                    name: name, value: $0, unit: "index", polarity: .neutral, source: "condition",
                    detail: "FMFI(\(order)) over the movable zones of \(place) around drop_caches + compact_memory")
            }
                ?? Metric.unavailable(
                    name, unit: "index", polarity: .neutral, source: "condition",
                    reason: "unavailable: cannot read \(place)'s /proc/buddyinfo")
        }
    }
}

/// A condition (compacted start, fragmentation and its sysctls) applied in a place: the same code
/// for this machine and for a guest layer.
public struct ConditionRunner: Sendable {
    public let harness: HarnessLocator
    public let journal: KnobJournal
    public let logger: Logger

    public init(harness: HarnessLocator, journal: KnobJournal, logger: Logger) {
        self.harness = harness
        self.journal = journal
        self.logger = logger
    }

    /// Compaction, memory pressure (nb-hold) holding, the fragmentation's sysctls, nb-fragment
    /// started and holding. On failure what
    /// was started is released and the knobs put back before the error is thrown.
    public func prepare(_ condition: Condition, in place: any Place, directory: String) async throws -> PreparedCondition {
        var prepared = PreparedCondition()
        prepared.place = place
        prepared.provenance["condition.layer"] = place.name
        let order = condition.fragmentation?.order ?? 9
        do {
            if condition.compact {
                let before = await place.fmfi(order: order)
                try await place.dropCachesAndCompact()
                let after = await place.fmfi(order: order)
                prepared.metrics += PreparedCondition.compactionMetrics(
                    before: before, after: after, order: order, in: place.name)
            }
            if let pressure = condition.memoryPressure {
                prepared.pressure = try await MemoryPressure(harness: harness, logger: logger)
                    .start(pressure, directory: directory, place: place)
            }
            guard let spec = condition.fragmentation else { return prepared }
            let owner = "condition \(condition.name)"
            let knobPrefix = place is LocalPlace ? "" : "\(place.name)."
            for (path, value) in try await place.apply(spec.knobs, owner: owner) {
                prepared.provenance["\(knobPrefix)knob:\(path)"] = value
            }
            // The fragmenter tops up the slack with huge pages (they take big free blocks, never a
            // hole); under THP never, THP is madvise while it fills, then put back.
            let thpEnabled = "/sys/kernel/mm/transparent_hugepage/enabled"
            let current = (try? await place.read(thpEnabled)).map(KernelFile.selectedValue)
            let raiseTHP = spec.method == .anonHoles && current == "never"
            if raiseTHP {
                _ = try await place.apply([Knob(path: thpEnabled, value: "madvise")], owner: owner + " (fragmenter fill)")
                prepared.provenance["fragmentation.thp_during_fill"] =
                    "madvise in \(place.name) (the configuration's never restored before the workload)"
            }
            prepared.fragmentation = try await Fragmenter(harness: harness, journal: journal, logger: logger)
                .start(spec, directory: directory, place: place)
            if raiseTHP { _ = try await place.apply([Knob(path: thpEnabled, value: "never")], owner: owner) }
        } catch {
            if let session = prepared.fragmentation { await session.release() }
            if let session = prepared.pressure { await session.release() }
            _ = await prepared.restore()
            throw error
        }
        return prepared
    }
}
