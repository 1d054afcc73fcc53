import Foundation
import Logging
import NestBenchCollectors
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess

/// Why fragmentation could not be injected; names what to fix.
public struct FragmentationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One line of nb-fragment's protocol: `kind key=value …` (or `error MESSAGE`).
public struct FragmenterEvent: Sendable, Hashable {
    public var kind: String
    public var fields: [String: String]
    /// Milliseconds since the fragmenter started, when the line was read.
    public var tMillis: Int64

    public init(kind: String, fields: [String: String], tMillis: Int64 = 0) {
        self.kind = kind
        self.fields = fields
        self.tMillis = tMillis
    }

    public func double(_ key: String) -> Double? { fields[key].flatMap(Double.init) }

    /// Parses one protocol line; nil for an empty line.
    public static func parse(_ line: Substring, tMillis: Int64 = 0) -> FragmenterEvent? {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard let kind = trimmed.split(separator: " ").first.map(String.init) else { return nil }
        if kind == "error" {
            return FragmenterEvent(
                kind: kind, fields: ["message": String(trimmed.dropFirst(5)).trimmingCharacters(in: .whitespaces)],
                tMillis: tMillis)
        }
        var fields: [String: String] = [:]
        for part in trimmed.split(separator: " ").dropFirst() {
            let kv = part.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
        }
        return FragmenterEvent(kind: kind, fields: fields, tMillis: tMillis)
    }
}

/// Fragmentation held by a running nb-fragment; release it with `release()`.
public final class FragmentationSession: Sendable {
    public let spec: FragmentationSpec
    public let ready: FragmenterEvent
    /// FMFI at the spec's order over the movable zones, read by NestBench when the target was reported reached.
    public let fmfiAtReady: Double
    let helper: LineProtocolHelper
    /// Where it runs (this machine or a guest layer).
    public var place: any Place { helper.place }
    /// The fragmenter's pid (its process group id too), in its place.
    public var pid: Int32 { helper.child.pid }

    init(spec: FragmentationSpec, ready: FragmenterEvent, fmfiAtReady: Double, helper: LineProtocolHelper) {
        self.spec = spec
        self.ready = ready
        self.fmfiAtReady = fmfiAtReady
        self.helper = helper
    }

    /// Every protocol event read so far.
    public var events: [FragmenterEvent] { helper.events }

    /// `fragmenter_exit`: its exit status, or unavailable when it ended by a signal or its end is
    /// not known (gone with its VM) — never a stand-in number.
    static func exitMetric(_ end: HelperEnd) -> Metric {
        guard let status = end.exitStatus else {
            return Metric.unavailable(
                "fragmenter_exit", unit: "status", polarity: .neutral, source: "fragmenter",
                reason: "unavailable: the fragmenter has no exit status (\(end.description))")
        }
        return Metric(
            name: "fragmenter_exit", value: Double(status), unit: "status", polarity: .neutral, source: "fragmenter",
            detail: end.description)
    }

    /// Stops the fragmenter (SIGTERM, then SIGKILL after 10 s), which gives all its memory back.
    @discardableResult
    public func release() async -> HelperEnd { await helper.terminate() }

    /// Metrics and timeline of the fragmentation around a workload: call after the workload ended,
    /// before `release()`; `release()` is then called here.
    public func finish() async -> (metrics: [Metric], samples: [TimelineSample], provenance: [String: String]) {
        let order = spec.order
        let after = await place.fmfi(order: order)
        let holds = helper.events.filter { $0.kind == "hold" }
        let outcome = await release()
        let released = await place.fmfi(order: order)
        var during = holds.compactMap { $0.double("fmfi") }
        during.append(fmfiAtReady)
        if let after { during.append(after) }
        // In band: the workload started within target ± tolerance. During the run FMFI moves with
        // the workload's own allocations (4 KiB faults fill holes first and lower it, huge pages take
        // the remaining big blocks and raise it): that drift is reported (fmfi_min/fmfi_max,
        // fragmentation.drift), not judged as the fragmenter failing.
        let lo = spec.targetFMFI - spec.tolerance
        let hi = spec.targetFMFI + spec.tolerance
        let inBand = (lo...hi).contains(fmfiAtReady)
        let drifted = !during.allSatisfy { (lo...hi).contains($0) }
        func m(_ name: String, _ value: Double?, _ unit: String, _ detail: String, reason: String = "") -> Metric {
            guard let value else {
                return Metric.unavailable(
                    name, unit: unit, polarity: .neutral, source: "fragmenter",
                    reason: "unavailable: \(reason.isEmpty ? "cannot read /proc/buddyinfo" : reason)")
            }
            return Metric(name: name, value: value, unit: unit, polarity: .neutral, source: "fragmenter", detail: detail)
        }
        let zones = await place.zones()
        var metrics = [
            m("fmfi_before", fmfiAtReady, "index", "FMFI(\(order)) over \(zones) when the workload started"),
            m("fmfi_after", after, "index", "FMFI(\(order)) over \(zones) when the workload ended, before release"),
            m("fmfi_min", during.min(), "index", "minimum over start, \(holds.count) samples during the run, end"),
            m("fmfi_max", during.max(), "index", "maximum over start, \(holds.count) samples during the run, end"),
            m(
                "fmfi_in_band", inBand ? 1 : 0, "bool",
                "1 when every FMFI reading stayed within \(spec.targetFMFI) ± \(spec.tolerance)"),
            m("fmfi_released", released, "index", "FMFI(\(order)) after the fragmenter gave its memory back"),
            m(
                "fragment_seconds", ready.double("seconds"), "s", "time the fragmenter took to reach its target",
                reason: "the fragmenter did not report it"),
            m(
                "fragmenter_held_bytes", ready.double("held"), "bytes", "memory the fragmenter held to keep the holes",
                reason: "the fragmenter did not report it"),
        ]
        metrics.append(Self.exitMetric(outcome))
        let samples = holds.compactMap { e in e.double("fmfi").map { TimelineSample(tMillis: e.tMillis, name: "fmfi", value: $0) }
        }
        var provenance = [
            "fragmentation.method": spec.method.rawValue, "fragmentation.target_fmfi": String(spec.targetFMFI),
            "fragmentation.order": String(order), "fragmentation.band": inBand ? "in" : "out",
            "fragmentation.drift": drifted ? "left the band during the run" : "stayed in the band",
            "fragmentation.free": spec.freeBytes.map { Units.formatBytes(Double($0)) } ?? "all",
            "fragmentation.keepers": helper.events.first { $0.kind == "keepers" }?.fields["mode"] ?? "?",
            "fragmentation.log": helper.logPath, "fragmentation.place": place.name,
        ]
        if ready.fields["reached"] == "0" { provenance["fragmentation.reached"] = "no" }
        return (metrics, samples, provenance)
    }
}

/// Starts nb-fragment and waits until it reports the target reached.
public struct Fragmenter: Sendable {
    public let harness: HarnessLocator
    public let journal: KnobJournal
    public let logger: Logger

    public init(harness: HarnessLocator = HarnessLocator(), journal: KnobJournal, logger: Logger) {
        self.harness = harness
        self.journal = journal
        self.logger = logger
    }

    /// The nb-fragment arguments for a spec.
    public static func arguments(for spec: FragmentationSpec, intervalMillis: Int = 500) -> [String] {
        var args = [
            "--target", String(spec.targetFMFI), "--order", String(spec.order), "--method", spec.method.rawValue,
            "--slack", String(spec.slackBytes), "--interval-ms", String(intervalMillis),
        ]
        if let free = spec.freeBytes { args += ["--free", String(free)] }
        if spec.hold { args.append("--hold") }
        if spec.mlock { args.append("--mlock") }
        return args
    }

    /// Fragments memory; returns once the fragmenter reports `ready` (holding, when `spec.hold`).
    /// `onEvent` sees every protocol line as it arrives (progress display).
    public func start(
        _ spec: FragmentationSpec, directory: String, place: (any Place)? = nil,
        onEvent: @escaping @Sendable (FragmenterEvent) -> Void = { _ in }
    ) async throws(FragmentationError) -> FragmentationSession {
        let place =
            place
            ?? LocalPlace(platform: LocalPlatform(journal: journal, logger: logger), collectors: [], runsDirectory: directory)
        let helper = try await LineProtocolHelper.start(
            "the fragmenter", source: "fragment/nb-fragment.c", program: "nb-fragment", arguments: Self.arguments(for: spec),
            file: "fragmenter", directory: directory, place: place, harness: harness, onEvent: onEvent)
        logger.info(
            "fragmenter started",
            metadata: [
                "fragmenter.pid": "\(helper.child.pid)", "fragmenter.target": "\(spec.targetFMFI)",
                "fragmenter.place": "\(place.name)",
            ])
        let ready = try await helper.ready(
            by: ContinuousClock.now + .seconds(spec.timeoutSeconds),
            timeout: "the fragmenter did not reach FMFI \(spec.targetFMFI) within \(Int(spec.timeoutSeconds))s (timeout)")
        let fmfi = await place.fmfi(order: spec.order) ?? ready.double("fmfi") ?? .nan
        return FragmentationSession(spec: spec, ready: ready, fmfiAtReady: fmfi, helper: helper)
    }
}
