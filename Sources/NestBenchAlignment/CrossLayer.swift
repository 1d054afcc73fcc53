import Foundation
import NestBenchModel

/// QEMU's answers about guest memory (over QMP `human-monitor-command`).
public enum QEMUMonitorText {
    /// `gpa2hva 0x200000` → `Host virtual address for 0x200000 (pc.ram) is 0x7fb2a8000000`:
    /// the RAM block's name and the host-virtual address; nil for anything else (an error line).
    public static func gpa2hva(_ text: String) -> (block: String, hva: UInt64)? {
        let line = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard line.hasPrefix("Host virtual address for "),
            let open = line.firstIndex(of: "("), let close = line[open...].firstIndex(of: ")"),
            let isRange = line.range(of: " is 0x", range: close..<line.endIndex)
        else { return nil }
        let block = String(line[line.index(after: open)..<close])
        guard let hva = UInt64(line[isRange.upperBound...], radix: 16) else { return nil }
        return (block, hva)
    }
}

/// One layer below the measured process: how its guest-physical addresses map into the process
/// that runs the guest (QEMU, from `gpa2hva`), and the probe's verdicts on that process's regions.
public struct LowerLayer: Sendable {
    public var name: String
    /// Guest-physical address (of the layer above) → host-virtual address in the QEMU process; nil when QEMU does not map it.
    public var translate: @Sendable (UInt64) -> UInt64?
    /// The QEMU process's regions by virtual start.
    public var regions: [UInt64: RegionMapping]

    public init(name: String, translate: @escaping @Sendable (UInt64) -> UInt64?, regions: [RegionMapping]) {
        self.name = name
        self.translate = translate
        self.regions = Dictionary(regions.map { ($0.virtualStart, $0) }) { a, _ in a }
    }
}

/// A guest huge region followed down the layers.
public struct CrossLayerResult: Sendable, Hashable {
    public var guestLayer: String
    public var layers: [String]
    /// Present regions of the workload in the guest.
    public var present: Int
    /// Huge in the guest.
    public var guestHuge: Int
    /// Per lower layer (top to bottom): guest huge regions backed by one huge page at that layer and every layer above it.
    public var backed: [Int]
    /// Base regions of the guest whose pages all lie in 2 MiB physical ranges that are one huge
    /// page in the layer right below (a huge page below that the guest does not use).
    public var baseOverHuge: Int = 0
    /// The guest's page-table pages (KPF_PGTABLE, the whole guest: pagemap cannot tell whose), and
    /// per lower layer how many lie in a 2 MiB range backed by one huge page there and at every layer
    /// above it; nil when the guest's page-table pages were not read.
    public var pageTables: Int?
    public var pageTablesBacked: [Int] = []

    /// Huge at every layer.
    public var wellAligned: Int { backed.last ?? guestHuge }
}

/// Pure: follows each huge guest region through the layers below (gpa → hva → that layer's verdict
/// → its physical start → the next layer's gpa). A region stops at the first layer where its 2 MiB
/// range is not one huge page (an unaligned hva, a base or absent region, an untranslated address).
public enum CrossLayer {
    /// How many layers below (from the top) back the 2 MiB physical range at `physical` with one huge page each.
    public static func depth(of physical: UInt64, below: [LowerLayer]) -> Int {
        var physical = physical
        for (i, layer) in below.enumerated() {
            guard let hva = layer.translate(physical), hva % PageGeometry.hugeSize == 0,
                let down = layer.regions[hva], down.kind == .huge, let next = down.physicalStart
            else { return i }
            physical = next
        }
        return below.count
    }

    /// Every 2 MiB physical range (of each layer, top to bottom) that following `guest` and
    /// `pageTableFrames` down needs translated at the first layer: huge regions' starts, base
    /// regions' frames, page-table pages' ranges.
    public static func framesToTranslate(guest: [RegionMapping], pageTableFrames: [UInt64]?) -> [UInt64] {
        var set = Set<UInt64>()
        for r in guest where r.kind != .notPresent {
            if r.kind == .huge, let p = r.physicalStart { set.insert(p) } else { set.formUnion(r.frames) }
        }
        for pfn in pageTableFrames ?? [] {
            set.insert(pfn / UInt64(PageGeometry.pagesPerHuge) * PageGeometry.hugeSize)
        }
        return set.sorted()
    }

    public static func follow(
        guest: [RegionMapping], guestLayer: String, below: [LowerLayer], pageTableFrames: [UInt64]? = nil
    ) -> CrossLayerResult {
        var backed = [Int](repeating: 0, count: below.count)
        var present = 0
        var guestHuge = 0
        var baseOverHuge = 0
        var depths: [UInt64: Int] = [:]
        func depth(_ p: UInt64) -> Int {
            if let d = depths[p] { return d }
            let d = Self.depth(of: p, below: below)
            depths[p] = d
            return d
        }
        for region in guest where region.kind != .notPresent {
            present += 1
            guard region.kind == .huge, let physical = region.physicalStart else {
                if !below.isEmpty, !region.frames.isEmpty, region.frames.allSatisfy({ depth($0) >= 1 }) { baseOverHuge += 1 }
                continue
            }
            guestHuge += 1
            let d = depth(physical)
            for i in 0..<d { backed[i] += 1 }
        }
        var result = CrossLayerResult(
            guestLayer: guestLayer, layers: below.map(\.name), present: present, guestHuge: guestHuge, backed: backed)
        result.baseOverHuge = baseOverHuge
        if let frames = pageTableFrames {
            result.pageTables = frames.count
            var counts = [Int](repeating: 0, count: below.count)
            for pfn in frames {
                let d = depth(pfn / UInt64(PageGeometry.pagesPerHuge) * PageGeometry.hugeSize)
                for i in 0..<d { counts[i] += 1 }
            }
            result.pageTablesBacked = counts
        }
        return result
    }

    /// `align.huge.<guest>`, `align.backed.<layer>`, `align.well_aligned`,
    /// `align.misaligned.guest_huge`, `align.misaligned.host_huge`, `align.pgtable_backed.<layer>`.
    public static func metrics(_ r: CrossLayerResult, when: String) -> [Metric] {
        let source = AlignmentMetrics.source
        func fraction(_ name: String, _ part: Int, _ whole: Int, _ detail: String, polarity: Polarity = .higherIsBetter)
            -> Metric
        {
            whole == 0
                ? Metric.unavailable(
                    name, unit: "fraction", polarity: polarity, source: source,
                    reason: "unavailable: \(detail): none to count")
                : Metric(
                    name: name, value: Double(part) / Double(whole), unit: "fraction", polarity: polarity,
                    source: source, detail: "\(part) of \(whole) \(detail); \(when)")
        }
        var m = [
            fraction("align.huge.\(r.guestLayer)", r.guestHuge, r.present, "present regions huge in \(r.guestLayer)")
        ]
        for (i, layer) in r.layers.enumerated() {
            m.append(
                fraction(
                    "align.backed.\(layer)", r.backed[i], r.guestHuge,
                    "huge regions of \(r.guestLayer) backed by one huge page at \(layer) and at every layer between"))
        }
        m.append(
            fraction("align.well_aligned", r.wellAligned, r.present, "present regions one huge page at every layer"))
        m.append(
            Metric(
                name: "align.misaligned.guest_huge",
                value: r.present == 0 ? nil : Double(r.guestHuge - r.wellAligned) / Double(r.present),
                unit: "fraction", polarity: .lowerIsBetter, source: source,
                unavailable: r.present == 0 ? "unavailable: no present region" : nil,
                detail: "present regions huge in \(r.guestLayer) but base pages at some layer below; \(when)"))
        if let below = r.layers.first {
            m.append(
                fraction(
                    "align.misaligned.host_huge", r.baseOverHuge, r.present,
                    "present regions base pages in \(r.guestLayer) whose pages all lie in 2 MiB ranges that are one huge page in \(below)",
                    polarity: .lowerIsBetter))
        }
        if let tables = r.pageTables {
            for (i, layer) in r.layers.enumerated() {
                m.append(
                    fraction(
                        "align.pgtable_backed.\(layer)", r.pageTablesBacked[i], tables,
                        "page-table pages of all of \(r.guestLayer) (whole guest, not only the workload: KPF_PGTABLE) in a 2 MiB range backed by one huge page at \(layer) and at every layer between"
                    ))
            }
        }
        return m
    }
}

extension CrossLayer {
    /// The names `metrics` gives, each unavailable with the reason (a probe that could not run).
    public static func unavailable(guestLayer: String, layers: [String], pageTables: Bool, reason: String) -> [Metric] {
        let text = reason.hasPrefix("unavailable:") ? reason : "unavailable: \(reason)"
        let source = AlignmentMetrics.source
        var names = layers.map { "align.backed.\($0)" } + ["align.well_aligned", "align.misaligned.guest_huge"]
        if !layers.isEmpty { names.append("align.misaligned.host_huge") }
        if pageTables { names += layers.map { "align.pgtable_backed.\($0)" } }
        return names.map { name in
            Metric.unavailable(
                name, unit: "fraction", polarity: name.hasPrefix("align.misaligned") ? .lowerIsBetter : .higherIsBetter,
                source: source, reason: text)
        }
    }
}

/// KVM's own per-VM counts of the pages it maps 4 KiB / 2 MiB / 1 GiB (debugfs
/// `/sys/kernel/debug/kvm/PID-FD/pages_*`): whole-VM numbers, the shadow/nested page tables of
/// the VM's own guests included — a cross-check beside the probe, not a per-workload answer.
public enum KVMPageCounts {
    public static let files = ["pages_4k", "pages_2m", "pages_1g"]

    /// "VM FILE VALUE" lines (the agent's `kvm` section, or read here) → the counts of the VMs of
    /// process `qemuPID` (directories `PID-FD`), summed over its VMs; nil when it has none.
    public static func counts(_ text: String, qemuPID: Int32) -> [String: Double]? {
        var result: [String: Double] = [:]
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count == 3, f[0].hasPrefix("\(qemuPID)-"), let v = Double(f[2]) else { continue }
            result[String(f[1]), default: 0] += v
        }
        return result.isEmpty ? nil : result
    }

    /// This machine's debugfs, in the same line form.
    public static func readLocal(root: String = "/sys/kernel/debug/kvm") -> Result<String, AlignmentUnavailable> {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: root) else {
            return .failure(AlignmentUnavailable("\(root) is not readable (debugfs not mounted, or no KVM here)"))
        }
        var text = ""
        for entry in entries.sorted() where entry.contains("-") {
            for file in files {
                if let s = try? String(contentsOfFile: "\(root)/\(entry)/\(file)", encoding: .utf8),
                    let v = Int64(s.trimmingCharacters(in: .whitespacesAndNewlines))
                {
                    text += "\(entry) \(file) \(v)\n"
                }
            }
        }
        return .success(text)
    }

    /// `align.kvm.<vm>.pages_4k|2m|1g`: KVM in `layer` for the VM of `vm` (its QEMU's pid).
    public static func metrics(vm: String, in layer: String, qemuPID: Int32, text: Result<String, AlignmentUnavailable>)
        -> [Metric]
    {
        let source = "kvm-debugfs"
        let counts: [String: Double]
        let reason: String?
        switch text {
        case .success(let t):
            if let c = Self.counts(t, qemuPID: qemuPID) {
                counts = c
                reason = nil
            } else {
                counts = [:]
                reason =
                    "unavailable: \(layer)'s /sys/kernel/debug/kvm has no VM of pid \(qemuPID) (\(vm)'s QEMU: not a KVM guest, e.g. TCG)"
            }
        case .failure(let e):
            counts = [:]
            reason = e.description
        }
        return files.map { file in
            let name = "align.kvm.\(vm).\(file)"
            guard let v = counts[file] else {
                return Metric.unavailable(
                    name, unit: "pages", polarity: .neutral, source: source,
                    reason: reason ?? "unavailable: \(layer)'s KVM has no \(file) for \(vm)")
            }
            return Metric(
                name: name, value: v, unit: "pages", polarity: .neutral, source: source,
                detail:
                    "whole-VM count: pages KVM in \(layer) maps with this size for all of \(vm)'s memory (the workload's and everything else's, the shadow/nested page tables of \(vm)'s own guests included), after the probe"
            )
        }
    }
}
