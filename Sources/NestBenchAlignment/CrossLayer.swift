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

    /// Huge at every layer.
    public var wellAligned: Int { backed.last ?? guestHuge }
}

/// Pure: follows each huge guest region through the layers below (gpa → hva → that layer's verdict
/// → its physical start → the next layer's gpa). A region stops at the first layer where its 2 MiB
/// range is not one huge page (an unaligned hva, a base or absent region, an untranslated address).
public enum CrossLayer {
    public static func follow(guest: [RegionMapping], guestLayer: String, below: [LowerLayer]) -> CrossLayerResult {
        var backed = [Int](repeating: 0, count: below.count)
        var present = 0
        var guestHuge = 0
        for region in guest where region.kind != .notPresent {
            present += 1
            guard region.kind == .huge, var physical = region.physicalStart else { continue }
            guestHuge += 1
            for (i, layer) in below.enumerated() {
                guard let hva = layer.translate(physical), hva % PageGeometry.hugeSize == 0,
                    let down = layer.regions[hva], down.kind == .huge, let next = down.physicalStart
                else { break }
                backed[i] += 1
                physical = next
            }
        }
        return CrossLayerResult(
            guestLayer: guestLayer, layers: below.map(\.name), present: present, guestHuge: guestHuge, backed: backed)
    }

    /// `align.huge.<guest>`, `align.backed.<layer>`, `align.well_aligned`, `align.misaligned.guest_huge`.
    public static func metrics(_ r: CrossLayerResult, when: String) -> [Metric] {
        let source = AlignmentMetrics.source
        func fraction(_ name: String, _ part: Int, _ whole: Int, _ detail: String) -> Metric {
            whole == 0
                ? Metric.unavailable(
                    name, unit: "fraction", polarity: .higherIsBetter, source: source,
                    reason: "unavailable: \(detail): none to count")
                : Metric(
                    name: name, value: Double(part) / Double(whole), unit: "fraction", polarity: .higherIsBetter,
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
        return m
    }
}
