import Foundation
import Logging
import NestBenchCollectors
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess
import Synchronization

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
    let child: any HelperProcess
    /// Where it runs (this machine or a guest layer).
    public let place: any Place
    /// The fragmenter's pid (its process group id too), in its place.
    public var pid: Int32 { child.pid }
    let reader: LogTail
    let logPath: String

    init(
        spec: FragmentationSpec, ready: FragmenterEvent, fmfiAtReady: Double, child: any HelperProcess,
        place: any Place, reader: LogTail, logPath: String
    ) {
        self.spec = spec
        self.ready = ready
        self.fmfiAtReady = fmfiAtReady
        self.child = child
        self.place = place
        self.reader = reader
        self.logPath = logPath
    }

    /// Every protocol event read so far.
    public var events: [FragmenterEvent] { reader.events }

    /// Stops the fragmenter (SIGTERM, then SIGKILL after 10 s), which gives all its memory back.
    @discardableResult
    public func release() async -> HelperEnd {
        let outcome = await child.terminate()
        reader.stop()
        return outcome
    }

    /// Metrics and timeline of the fragmentation around a workload: call after the workload ended,
    /// before `release()`; `release()` is then called here.
    public func finish() async -> (metrics: [Metric], samples: [TimelineSample], provenance: [String: String]) {
        let order = spec.order
        let after = await place.fmfi(order: order)
        let holds = reader.events.filter { $0.kind == "hold" }
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
        metrics.append(
            Metric(
                name: "fragmenter_exit", value: Double(outcome.exitStatus ?? -1), unit: "status", polarity: .neutral,
                source: "fragmenter", detail: outcome.description))
        let samples = holds.compactMap { e in e.double("fmfi").map { TimelineSample(tMillis: e.tMillis, name: "fmfi", value: $0) }
        }
        var provenance = [
            "fragmentation.method": spec.method.rawValue, "fragmentation.target_fmfi": String(spec.targetFMFI),
            "fragmentation.order": String(order), "fragmentation.band": inBand ? "in" : "out",
            "fragmentation.drift": drifted ? "left the band during the run" : "stayed in the band",
            "fragmentation.free": spec.freeBytes.map { Units.formatBytes(Double($0)) } ?? "all",
            "fragmentation.keepers": reader.events.first { $0.kind == "keepers" }?.fields["mode"] ?? "?",
            "fragmentation.log": logPath, "fragmentation.place": place.name,
        ]
        if ready.fields["reached"] == "0" { provenance["fragmentation.reached"] = "no" }
        return (metrics, samples, provenance)
    }
}

extension HelperProcess {
    /// Stops a holding helper (nb-fragment, nb-hold): SIGTERM, then SIGKILL after `grace`; its end.
    func terminate(grace: Duration = .seconds(10)) async -> HelperEnd {
        if !hasExited { await signal(SIGTERM) }
        let deadline = ContinuousClock.now + grace
        while !hasExited && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if !hasExited { await signal(SIGKILL) }
        return await ended()
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
        let binary: String
        do {
            binary = try await harness.program("fragment/nb-fragment.c", name: "nb-fragment")
        } catch {
            throw FragmentationError("cannot build the fragmenter: \(error)")
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FragmentationError("\(directory): cannot create (\(error))")
        }
        let log = directory + "/fragmenter.log"
        let err = directory + "/fragmenter.stderr"
        let child: any HelperProcess
        do {
            child = try await place.startHelper(
                ProcessSpec(
                    program: binary, arguments: Self.arguments(for: spec), environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"],
                    workingDirectory: directory, stdoutPath: log, stderrPath: err))
        } catch {
            throw FragmentationError("cannot start the fragmenter in \(place.name): \(error)")
        }
        logger.info(
            "fragmenter started",
            metadata: [
                "fragmenter.pid": "\(child.pid)", "fragmenter.target": "\(spec.targetFMFI)", "fragmenter.place": "\(place.name)",
            ])
        let reader = LogTail(path: log, onEvent: onEvent)
        reader.start()
        let deadline = ContinuousClock.now + .seconds(spec.timeoutSeconds)
        while true {
            if let ready = reader.events.first(where: { $0.kind == "ready" }) {
                let fmfi = await place.fmfi(order: spec.order) ?? ready.double("fmfi") ?? .nan
                return FragmentationSession(
                    spec: spec, ready: ready, fmfiAtReady: fmfi, child: child, place: place, reader: reader, logPath: log)
            }
            let failure: String?
            if let error = reader.events.first(where: { $0.kind == "error" }) {
                failure = "the fragmenter failed: \(error.fields["message"] ?? "")"
            } else if child.hasExited {
                let outcome = await child.ended()
                let tail =
                    FileManager.default.contents(atPath: err).map {
                        String(decoding: $0.suffix(600), as: UTF8.self).split(separator: "\n").suffix(3).joined(separator: "\n")
                    } ?? ""
                failure = "the fragmenter exited before reaching its target (\(outcome.description)) \(tail)"
            } else if ContinuousClock.now > deadline {
                failure = "the fragmenter did not reach FMFI \(spec.targetFMFI) within \(Int(spec.timeoutSeconds))s (timeout)"
            } else {
                failure = nil
            }
            if let failure {
                await child.stop()
                reader.stop()
                throw FragmentationError(failure + " (in \(place.name); log: \(log))")
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// Follows a growing protocol log file, parsing complete lines.
final class LogTail: Sendable {
    let path: String
    let onEvent: @Sendable (FragmenterEvent) -> Void
    private let state = Mutex<(events: [FragmenterEvent], stop: Bool)>(([], false))
    private let done = DispatchSemaphore(value: 0)
    private let start0 = ContinuousClock.now

    init(path: String, onEvent: @escaping @Sendable (FragmenterEvent) -> Void) {
        self.path = path
        self.onEvent = onEvent
    }

    var events: [FragmenterEvent] { state.withLock { $0.events } }

    func start() {
        let thread = Thread { [self] in
            var offset: UInt64 = 0
            var partial = ""
            while true {
                let stopping = state.withLock { $0.stop }
                if let handle = FileHandle(forReadingAtPath: path) {
                    try? handle.seek(toOffset: offset)
                    if let data = try? handle.readToEnd(), !data.isEmpty {
                        offset += UInt64(data.count)
                        partial += String(decoding: data, as: UTF8.self)
                        while let newline = partial.firstIndex(of: "\n") {
                            let line = partial[..<newline]
                            let t = Int64((ContinuousClock.now - start0).seconds * 1000)
                            if let event = FragmenterEvent.parse(line, tMillis: t) {
                                state.withLock { $0.events.append(event) }
                                onEvent(event)
                            }
                            partial = String(partial[partial.index(after: newline)...])
                        }
                    }
                    try? handle.close()
                }
                if stopping { break }
                usleep(100_000)
            }
            done.signal()
        }
        thread.name = "nestbench-fragmenter-log"
        thread.start()
    }

    func stop() {
        let already = state.withLock { s -> Bool in
            let was = s.stop
            s.stop = true
            return was
        }
        if !already { done.wait() }
    }
}
