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
            } else if file == "/sys/block/vda/stat" {
                // reads, read merges, sectors, read ms, writes, write merges, sectors, write ms,
                // in flight, io_ticks (ms busy), time in queue …
                let f = rest.split(separator: " ").compactMap { Int64($0) }
                if f.count >= 10 {
                    reading["swapdisk.reads"] = f[0]
                    reading["swapdisk.writes"] = f[4]
                    reading["swapdisk.io_ms"] = f[9]
                }
            } else if file.hasPrefix("/proc/"), file.hasSuffix("/stat"), let close = rest.lastIndex(of: ")") {
                // /proc/PID/stat: after "(comm)", field 3 is the state … field 12 majflt.
                let f = rest[rest.index(after: close)...].split(separator: " ")
                let pid = file.dropFirst("/proc/".count).dropLast("/stat".count)
                if f.count > 9, let majflt = Int64(f[9]) { reading["pid.\(pid).majflt"] = majflt }
            } else if file.hasPrefix("/sys/kernel/mm/ksm/") {
                if let v = Int64(rest.trimmingCharacters(in: .whitespaces)) {
                    reading["ksm.\(file.dropFirst("/sys/kernel/mm/ksm/".count))"] = v
                }
            }
        }
        return reading
    }

    /// The metrics of one layer from its readings before and after a run. `children`: the guest
    /// layers whose QEMU runs in this layer, by pid (their major faults here: the double-paging
    /// events when that guest swaps out pages this layer had swapped).
    public static func metrics(layer: String, before: Reading, after: Reading, children: [(name: String, pid: Int32)] = [])
        -> [Metric]
    {
        var metrics: [Metric] = []
        for child in children {
            guard let b = before["pid.\(child.pid).majflt"], let a = after["pid.\(child.pid).majflt"] else { continue }
            metrics.append(
                Metric(
                    name: "\(child.name).qemu_major_faults", value: Double(a - b), unit: "faults", polarity: .neutral,
                    source: "procfs",
                    detail: "major faults of the QEMU process running \(child.name), in \(layer), during the run"))
        }
        for (key, name, unit, what) in [
            ("swapdisk.io_ms", "swap.io_ms", "ms", "time its swap disk (vda) was busy"),
            ("swapdisk.reads", "swap.reads", "I/Os", "reads from its swap disk (vda)"),
            ("swapdisk.writes", "swap.writes", "I/Os", "writes to its swap disk (vda)"),
        ] {
            guard let b = before[key], let a = after[key] else { continue }
            metrics.append(
                Metric(
                    name: "\(layer).\(name)", value: Double(a - b), unit: unit, polarity: .neutral, source: "diskstats",
                    detail: "\(layer): \(what) during the run"))
        }
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

    static let files = ["/proc/vmstat", "/sys/block/vda/stat"] + ksmFiles.map { "/sys/kernel/mm/ksm/\($0)" }

    /// The guest layers whose QEMU runs in `layer` (nil: on this machine), with their QEMU pids.
    static func children(of layer: Int?, in stack: QemuStack) -> [(name: String, pid: Int32)] {
        stack.layers.filter { $0.parent == layer }.map { ($0.name, $0.qemuPID) }
    }

    /// Every guest layer's reading now (layers whose agent does not answer are left out), and
    /// this machine's (`host`: the QEMU processes it runs).
    static func read(_ stack: QemuStack) async -> [String: Reading] {
        var readings: [String: Reading] = [:]
        for (index, layer) in stack.layers.enumerated() {
            let qemus = children(of: index, in: stack).map { "/proc/\($0.pid)/stat" }
            // grep exits 2 when a file is missing (no KSM, no swap disk); what it read is still there.
            guard
                let (_, text) = try? await layer.agent.output(
                    ["grep", "-H", "", "--"] + files + qemus, failure: stack.deadReason)
            else { continue }
            readings[layer.name] = parse(text)
        }
        var host = ""
        for child in children(of: nil, in: stack) {
            if let stat = KernelFile.read("/proc/\(child.pid)/stat") { host += "/proc/\(child.pid)/stat:\(stat)\n" }
        }
        readings["host"] = parse(host)
        return readings
    }
}
