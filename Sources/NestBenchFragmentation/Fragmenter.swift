import Foundation
import Logging
import NestBenchCollectors
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess
import NestBenchWorkloads
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

/// A running fragmenter, wherever it runs.
public struct FragmenterChild: Sendable {
    public var pid: Int32
    public var hasExited: @Sendable () -> Bool
    /// Sends a signal to the fragmenter's process group.
    public var signal: @Sendable (Int32) async -> Void
    /// Waits for its end: the exit status (nil after a signal) and a description.
    public var wait: @Sendable () async -> (exitStatus: Int32?, description: String)
    /// Called once it is gone (e.g. to forget it in the journal).
    public var forget: @Sendable () -> Void

    public init(
        pid: Int32, hasExited: @escaping @Sendable () -> Bool, signal: @escaping @Sendable (Int32) async -> Void,
        wait: @escaping @Sendable () async -> (exitStatus: Int32?, description: String),
        forget: @escaping @Sendable () -> Void = {}
    ) {
        self.pid = pid
        self.hasExited = hasExited
        self.signal = signal
        self.wait = wait
        self.forget = forget
    }
}

/// Where a fragmenter runs and how its memory is read: this machine (`thisMachine`), or a guest
/// layer through its agent (the orchestrator builds that one). Paths are this machine's; a guest
/// place translates them to its share.
public struct FragmenterPlace: Sendable {
    /// "this machine", "L2" …: used in messages, and as the metrics' prefix for a guest layer.
    public var name: String
    /// Starts `program arguments` in `directory` with stdout and stderr to the given files.
    public var start:
        @Sendable (_ program: String, _ arguments: [String], _ directory: String, _ stdout: String, _ stderr: String)
            async throws(FragmentationError) -> FragmenterChild
    /// FMFI(order) over the movable zones of that kernel, read now.
    public var fmfi: @Sendable (_ order: Int) async -> Double?
    /// Which zones that FMFI covers.
    public var zones: @Sendable () async -> String

    public init(
        name: String,
        start:
            @escaping @Sendable (String, [String], String, String, String) async throws(FragmentationError) ->
            FragmenterChild,
        fmfi: @escaping @Sendable (Int) async -> Double?, zones: @escaping @Sendable () async -> String
    ) {
        self.name = name
        self.start = start
        self.fmfi = fmfi
        self.zones = zones
    }

    /// This machine: a child in its own process group, journaled so that the next nestbench kills
    /// it after a kill -9 (it also watches its parent).
    public static func thisMachine(journal: KnobJournal) -> FragmenterPlace {
        FragmenterPlace(
            name: "this machine",
            start: { program, arguments, directory, stdout, stderr throws(FragmentationError) in
                let spec = ProcessSpec(
                    program: program, arguments: arguments, environment: ["PATH": "/usr/bin:/bin"],
                    workingDirectory: directory, stdoutPath: stdout, stderrPath: stderr)
                let child: RunningProcess
                do {
                    child = try ProcessRunner.start(spec)
                    try journal.recordProcessGroup(child.pid)
                    try child.release()
                } catch let error as ProcessError {
                    throw FragmentationError("cannot start the fragmenter: \(error)")
                } catch {
                    throw FragmentationError("cannot record the fragmenter in \(journal.path): \(error)")
                }
                return FragmenterChild(
                    pid: child.pid, hasExited: { child.hasExited },
                    signal: { sig in if sig == SIGKILL { child.kill() } else if !child.hasExited { kill(child.pid, sig) } },
                    wait: {
                        let outcome = await child.wait()
                        return (outcome.exitStatus, outcome.describe(timeout: nil))
                    },
                    forget: { try? journal.forgetProcessGroup(child.pid) })
            },
            fmfi: { order in try? Buddyinfo.live().machineFMFI(order: order) },
            zones: { (try? Buddyinfo.live().machineZonesDescription) ?? "movable zones" })
    }
}

/// Fragmentation held by a running nb-fragment; release it with `release()`.
public final class FragmentationSession: Sendable {
    public let spec: FragmentationSpec
    public let ready: FragmenterEvent
    /// FMFI at the spec's order over the movable zones, read by NestBench when the target was reported reached.
    public let fmfiAtReady: Double
    let child: FragmenterChild
    public let place: FragmenterPlace
    /// The fragmenter's pid (its process group id too), in its place.
    public var pid: Int32 { child.pid }
    let reader: LogTail
    let logPath: String

    init(
        spec: FragmentationSpec, ready: FragmenterEvent, fmfiAtReady: Double, child: FragmenterChild,
        place: FragmenterPlace, reader: LogTail, logPath: String
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
    public func release() async -> (exitStatus: Int32?, description: String) {
        if !child.hasExited() { await child.signal(SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(10)
        while !child.hasExited() && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if !child.hasExited() { await child.signal(SIGKILL) }
        let outcome = await child.wait()
        reader.stop()
        child.forget()
        return outcome
    }

    /// Metrics and timeline of the fragmentation around a workload: call after the workload ended,
    /// before `release()`; `release()` is then called here.
    public func finish() async -> (metrics: [Metric], samples: [TimelineSample], provenance: [String: String]) {
        let order = spec.order
        let after = await place.fmfi(order)
        let holds = reader.events.filter { $0.kind == "hold" }
        let outcome = await release()
        let released = await place.fmfi(order)
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
        _ spec: FragmentationSpec, directory: String, place: FragmenterPlace? = nil,
        onEvent: @escaping @Sendable (FragmenterEvent) -> Void = { _ in }
    ) async throws(FragmentationError) -> FragmentationSession {
        let place = place ?? .thisMachine(journal: journal)
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
        let child = try await place.start(binary, Self.arguments(for: spec), directory, log, err)
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
                let fmfi = await place.fmfi(spec.order) ?? ready.double("fmfi") ?? .nan
                return FragmentationSession(
                    spec: spec, ready: ready, fmfiAtReady: fmfi, child: child, place: place, reader: reader, logPath: log)
            }
            let failure: String?
            if let error = reader.events.first(where: { $0.kind == "error" }) {
                failure = "the fragmenter failed: \(error.fields["message"] ?? "")"
            } else if child.hasExited() {
                let outcome = await child.wait()
                let tail = MetricLines.tail(of: err, lines: 3) ?? ""
                failure = "the fragmenter exited before reaching its target (\(outcome.description)) \(tail)"
            } else if ContinuousClock.now > deadline {
                failure = "the fragmenter did not reach FMFI \(spec.targetFMFI) within \(Int(spec.timeoutSeconds))s (timeout)"
            } else {
                failure = nil
            }
            if let failure {
                await child.signal(SIGKILL)
                _ = await child.wait()
                reader.stop()
                child.forget()
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
