import Foundation
import NestBenchCollectors
import NestBenchModel

/// Each guest layer's memory-overcommit counters across one run, read through its agent before
/// the workload and after it: `/proc/vmstat` deltas (THP splits, swap in/out, KSM's own
/// counters where the kernel has them) and KSM's state (`/sys/kernel/mm/ksm/`). Named
/// `<layer>.vmstat.<counter>` and `<layer>.ksm.<file>`. A layer whose agent does not answer, or
/// whose kernel has no KSM, gives these metrics as `unavailable:` with the reason — nothing is
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
    /// events when that guest swaps out pages this layer had swapped). `layerFiles`: whether the
    /// readings are of the layer's own vmstat and KSM files (this machine's hold only its QEMU
    /// processes' stat). A counter or file missing from a reading is `unavailable:` with the
    /// reason, never a number; a layer without a swap disk has no swap metrics.
    public static func metrics(
        layer: String, before: Reading, after: Reading, children: [(name: String, pid: Int32)] = [],
        layerFiles: Bool = true
    ) -> [Metric] {
        /// Why a counter read as `key` is missing, or nil when both readings have it.
        func missing(_ key: String, _ what: String) -> String? {
            switch (before[key], after[key]) {
            case (.some, .some): nil
            case (nil, nil): "unavailable: \(layer) has no \(what)"
            case (nil, .some): "unavailable: \(layer)'s \(what) was not read as the run began"
            case (.some, nil): "unavailable: \(layer)'s \(what) was not read after the run"
            }
        }
        /// The counter's increase over the run, or why there is none: missing from a reading, or
        /// lower after the run than before (reset, or a process/layer restarted meanwhile).
        func delta(_ key: String, _ what: String) -> Result<Double, MetricUnavailable> {
            if let reason = missing(key, what) { return .failure(MetricUnavailable(reason: reason)) }
            let (b, a) = (before[key]!, after[key]!)
            guard a >= b else {
                return .failure(
                    MetricUnavailable(
                        reason:
                            "unavailable: \(layer)'s \(what) went down during the run (\(b) → \(a): reset, or restarted meanwhile)"
                    ))
            }
            return .success(Double(a - b))
        }
        var metrics: [Metric] = []
        for child in children {
            let name = "\(child.name).qemu_major_faults"
            let key = "pid.\(child.pid).majflt"
            switch delta(key, "/proc/\(child.pid)/stat (the QEMU process running \(child.name))") {
            case .failure(let e):
                metrics.append(.unavailable(name, unit: "faults", polarity: .neutral, source: "procfs", reason: e.reason))
            case .success(let value):
                metrics.append(
                    Metric(
                        name: name, value: value, unit: "faults", polarity: .neutral, source: "procfs",
                        detail: "major faults of the QEMU process running \(child.name), in \(layer), during the run"))
            }
        }
        for (key, name, unit, what) in [
            ("swapdisk.io_ms", "swap.io_ms", "ms", "time its swap disk (vda) was busy"),
            ("swapdisk.reads", "swap.reads", "I/Os", "reads from its swap disk (vda)"),
            ("swapdisk.writes", "swap.writes", "I/Os", "writes to its swap disk (vda)"),
        ] {
            // No swap disk in either reading: the layer has none, there is nothing to measure.
            if before[key] == nil && after[key] == nil { continue }
            switch delta(key, "/sys/block/vda/stat") {
            case .failure(let e):
                metrics.append(
                    .unavailable("\(layer).\(name)", unit: unit, polarity: .neutral, source: "diskstats", reason: e.reason))
            case .success(let value):
                metrics.append(
                    Metric(
                        name: "\(layer).\(name)", value: value, unit: unit, polarity: .neutral, source: "diskstats",
                        detail: "\(layer): \(what) during the run"))
            }
        }
        guard layerFiles else { return metrics }
        for name in vmstatCounters {
            let key = "vmstat.\(name)"
            switch delta(key, "\(name) in /proc/vmstat") {
            case .failure(let e):
                metrics.append(
                    .unavailable(
                        "\(layer).vmstat.\(name)", unit: "events", polarity: .neutral, source: "vmstat", reason: e.reason))
            case .success(let value):
                metrics.append(
                    Metric(
                        name: "\(layer).vmstat.\(name)", value: value, unit: "events", polarity: .neutral, source: "vmstat",
                        detail: "/proc/vmstat \(name) in \(layer), delta over the run (whole layer)"))
            }
        }
        for file in ksmFiles {
            let key = "ksm.\(file)"
            let unit = file == "full_scans" ? "scans" : file == "run" ? "state" : "pages"
            if file == "full_scans" {
                switch delta(key, "/sys/kernel/mm/ksm/full_scans") {
                case .failure(let e):
                    metrics.append(
                        .unavailable("\(layer).ksm.full_scans", unit: unit, polarity: .neutral, source: "ksm", reason: e.reason))
                case .success(let value):
                    metrics.append(
                        Metric(
                            name: "\(layer).ksm.full_scans", value: value, unit: unit, polarity: .neutral, source: "ksm",
                            detail: "KSM full scans in \(layer) during the run"))
                }
            } else if let a = after[key] {
                metrics.append(
                    Metric(
                        name: "\(layer).ksm.\(file)", value: Double(a), unit: unit, polarity: .neutral, source: "ksm",
                        detail: "/sys/kernel/mm/ksm/\(file) in \(layer) after the run"))
            } else {
                let reason =
                    before[key] == nil
                    ? "unavailable: \(layer) has no /sys/kernel/mm/ksm/\(file)"
                    : "unavailable: \(layer)'s /sys/kernel/mm/ksm/\(file) was not read after the run"
                metrics.append(
                    .unavailable("\(layer).ksm.\(file)", unit: unit, polarity: .neutral, source: "ksm", reason: reason))
            }
        }
        return metrics
    }

    /// The metrics of a layer that could not be read before or after the run (its agent did not
    /// answer), each `unavailable:` with `reason`.
    public static func unavailable(layer: String, reason: String, children: [(name: String, pid: Int32)] = []) -> [Metric] {
        children.map {
            Metric.unavailable(
                "\($0.name).qemu_major_faults", unit: "faults", polarity: .neutral, source: "procfs", reason: reason)
        }
            + vmstatCounters.map {
                Metric.unavailable("\(layer).vmstat.\($0)", unit: "events", polarity: .neutral, source: "vmstat", reason: reason)
            }
            + ksmFiles.map {
                Metric.unavailable(
                    "\(layer).ksm.\($0)", unit: $0 == "full_scans" ? "scans" : $0 == "run" ? "state" : "pages",
                    polarity: .neutral, source: "ksm", reason: reason)
            }
    }

    /// Why a counter's delta is unavailable.
    public struct MetricUnavailable: Error, Sendable { public var reason: String }

    static let files = ["/proc/vmstat", "/sys/block/vda/stat"] + ksmFiles.map { "/sys/kernel/mm/ksm/\($0)" }

    /// The guest layers whose QEMU runs in `layer` (nil: on this machine), with their QEMU pids.
    static func children(of layer: Int?, in stack: QemuStack) -> [(name: String, pid: Int32)] {
        stack.layers.filter { $0.parent == layer }.map { ($0.name, $0.qemuPID) }
    }

    /// Every guest layer's reading now, or why it could not be read (its agent did not answer),
    /// and this machine's (`host`: the QEMU processes it runs).
    static func read(_ stack: QemuStack) async -> [String: Result<Reading, ReadFailure>] {
        var readings: [String: Result<Reading, ReadFailure>] = [:]
        for (index, layer) in stack.layers.enumerated() {
            let qemus = children(of: index, in: stack).map { "/proc/\($0.pid)/stat" }
            // grep exits 2 when a file is missing (no KSM, no swap disk); what it read is still there.
            do {
                let (status, text) = try await layer.agent.output(
                    ["grep", "-H", "", "--"] + files + qemus, failure: stack.deadReason)
                readings[layer.name] = reading(of: layer.name, status: status, text: text)
            } catch {
                readings[layer.name] = .failure(ReadFailure(reason: "\(layer.name)'s agent did not answer: \(error)"))
            }
        }
        var host = ""
        for child in children(of: nil, in: stack) {
            if let stat = KernelFile.read("/proc/\(child.pid)/stat") { host += "/proc/\(child.pid)/stat:\(stat)\n" }
        }
        readings["host"] = .success(parse(host))
        return readings
    }

    /// A layer's reading from grep's output, or why there is none: every Linux layer has
    /// /proc/vmstat, so output without it means the read failed (grep's output not seen), not a
    /// layer without counters.
    static func reading(of layer: String, status: Int?, text: String) -> Result<Reading, ReadFailure> {
        let reading = parse(text)
        guard reading.keys.contains(where: { $0.hasPrefix("vmstat.") }) else {
            return .failure(
                ReadFailure(
                    reason:
                        "reading \(layer)'s /proc/vmstat gave nothing (grep exit \(status.map(String.init) ?? "unknown"))"))
        }
        return .success(reading)
    }

    /// Why a layer's counters could not be read.
    struct ReadFailure: Error, Sendable {
        var reason: String
    }

    /// The metrics of every layer and this machine over a run from `read`'s readings before and
    /// after it; a layer missing from either is `unavailable:` with the reason.
    static func metrics(
        layers: [(name: String, children: [(name: String, pid: Int32)])], host: [(name: String, pid: Int32)],
        before: [String: Result<Reading, ReadFailure>], after: [String: Result<Reading, ReadFailure>]
    ) -> [Metric] {
        var metrics: [Metric] = []
        for (name, children) in layers + [("host", host)] {
            switch (before[name], after[name]) {
            case (.success(let b), .success(let a)):
                metrics += Self.metrics(layer: name, before: b, after: a, children: children, layerFiles: name != "host")
            case (.failure(let f), _):
                metrics += unavailable(layer: name, reason: "unavailable: as the run began, \(f.reason)", children: children)
            case (_, .failure(let f)):
                metrics += unavailable(layer: name, reason: "unavailable: after the run, \(f.reason)", children: children)
            default:
                metrics += unavailable(layer: name, reason: "unavailable: \(name) was not read", children: children)
            }
        }
        return metrics
    }
}
