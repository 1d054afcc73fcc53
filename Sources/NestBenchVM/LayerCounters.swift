import Foundation
import NestBenchCollectors
import NestBenchModel

/// Each guest layer's memory-overcommit counters across one run, read through its agent before
/// the workload and after it: `/proc/vmstat` deltas (THP splits, swap in/out, KSM's own
/// counters where the kernel has them) and KSM's state (`/sys/kernel/mm/ksm/`). Named
/// `<layer>.vmstat.<counter>` and `<layer>.ksm.<file>`. A layer whose agent does not answer, or
/// whose kernel has no KSM, gives no such metric — the report lists what is missing, nothing is
/// defaulted.
public struct LayerCounters: Sendable {
    /// Deltas over the run.
    public static let vmstatCounters = [
        "thp_split_page", "thp_split_pmd", "thp_split_page_failed", "thp_fault_alloc", "thp_collapse_alloc",
        "pswpin", "pswpout", "pgmajfault", "ksm_swpin_copy", "cow_ksm",
    ]
    /// KSM's files: states after the run, except `full_scans` (a delta).
    public static let ksmFiles = ["run", "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "full_scans"]

    /// One layer's reading: counter → value.
    public typealias Reading = [String: Int64]

    /// Parses `grep -H '' /proc/vmstat /sys/kernel/mm/ksm/…` output into one reading
    /// (`vmstat.<name>`, `ksm.<file>`).
    public static func parse(_ text: String) -> Reading {
        var reading: Reading = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let file = line[..<colon]
            let rest = line[line.index(after: colon)...]
            if file == "/proc/vmstat" {
                let f = rest.split(separator: " ")
                if f.count == 2, let v = Int64(f[1]) { reading["vmstat.\(f[0])"] = v }
            } else if file.hasPrefix("/sys/kernel/mm/ksm/") {
                if let v = Int64(rest.trimmingCharacters(in: .whitespaces)) {
                    reading["ksm.\(file.dropFirst("/sys/kernel/mm/ksm/".count))"] = v
                }
            }
        }
        return reading
    }

    /// The metrics of one layer from its readings before and after a run.
    public static func metrics(layer: String, before: Reading, after: Reading) -> [Metric] {
        var metrics: [Metric] = []
        for name in vmstatCounters {
            guard let b = before["vmstat.\(name)"], let a = after["vmstat.\(name)"] else { continue }
            metrics.append(
                Metric(
                    name: "\(layer).vmstat.\(name)", value: Double(a - b), unit: "events", polarity: .neutral, source: "vmstat",
                    detail: "/proc/vmstat \(name) in \(layer), delta over the run (whole layer)"))
        }
        for file in ksmFiles {
            if file == "full_scans" {
                guard let b = before["ksm.full_scans"], let a = after["ksm.full_scans"] else { continue }
                metrics.append(
                    Metric(
                        name: "\(layer).ksm.full_scans", value: Double(a - b), unit: "scans", polarity: .neutral, source: "ksm",
                        detail: "KSM full scans in \(layer) during the run"))
            } else if let a = after["ksm.\(file)"] {
                metrics.append(
                    Metric(
                        name: "\(layer).ksm.\(file)", value: Double(a), unit: file == "run" ? "state" : "pages",
                        polarity: .neutral, source: "ksm", detail: "/sys/kernel/mm/ksm/\(file) in \(layer) after the run"))
            }
        }
        return metrics
    }

    static let files = ["/proc/vmstat"] + ksmFiles.map { "/sys/kernel/mm/ksm/\($0)" }

    /// Every guest layer's reading now (layers whose agent does not answer are left out).
    static func read(_ stack: QemuStack) async -> [String: Reading] {
        var readings: [String: Reading] = [:]
        for layer in stack.layers {
            // grep exits 2 when a KSM file is missing; what it read is still there.
            guard let (_, text) = try? await layer.agent.output(["grep", "-H", "", "--"] + files, failure: stack.deadReason)
            else { continue }
            readings[layer.name] = parse(text)
        }
        return readings
    }
}
