import Foundation
import NestBenchAlignment
import NestBenchCollectors
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess
import Synchronization

/// Whether a stack's guests still answer: set by any place of the stack whose agent did not
/// answer, read by the orchestrator (through `Placement.lostReason`) to boot it afresh.
final class StackHealth: Sendable {
    /// Why the stack is dead (a QEMU exited), or nil.
    let dead: @Sendable () -> String?
    private let unanswered = Mutex<String?>(nil)

    init(stack: QemuStack) { dead = stack.deadReason }
    init(dead: @escaping @Sendable () -> String?) { self.dead = dead }

    func note(_ error: VMError) {
        if error.unreachable { unanswered.withLock { if $0 == nil { $0 = error.message } } }
    }

    var lostReason: String? { dead() ?? unanswered.withLock { $0 } }
}

/// A guest layer of a stack as a place: everything goes through its agent (Harness/guest/nb-agent.c);
/// its files are on its share, which this machine sees at `agent.spool`.
public final class GuestPlace: Place {
    public let layer: BootedLayer
    let health: StackHealth
    let monitor: MonitorSettings
    /// The stack's layers (for the alignment probe's layers below); nil: this guest alone.
    let stackLayers: [BootedLayer]?
    /// Knobs changed by `apply`, with their original values, oldest first.
    private let originals = Mutex<[(path: String, value: String)]>([])

    /// The stack the guest belongs to (for a save and restore of its QEMU); nil: none.
    let stack: QemuStack?
    /// `collectors.alignment.interval`: the stack probe also runs every this many ms while the
    /// workload runs (nil: once, at the end of its measured phase).
    let alignmentIntervalMillis: Int?

    init(
        layer: BootedLayer, health: StackHealth, monitor: MonitorSettings, stackLayers: [BootedLayer]? = nil,
        stack: QemuStack? = nil, alignmentIntervalMillis: Int? = nil
    ) {
        self.alignmentIntervalMillis = alignmentIntervalMillis
        self.stack = stack
        self.layer = layer
        self.health = health
        self.monitor = monitor
        self.stackLayers = stackLayers
    }

    public var name: String { layer.name }
    var agent: GuestAgent { layer.agent }
    var failure: @Sendable () -> String? { health.dead }

    func placeError(_ error: VMError) -> PlaceError {
        health.note(error)
        return error.unreachable ? .unreachable(place: name, reason: error.message) : .failed(place: name, message: error.message)
    }

    public func read(_ path: String) async throws(PlaceError) -> String {
        do {
            let (status, text) = try await agent.output(["cat", path], failure: failure)
            guard status == 0 else { throw PlaceError.missing(place: name, path: path) }
            return text
        } catch let error as VMError {
            throw placeError(error)
        } catch let error as PlaceError {
            throw error
        } catch {
            throw .failed(place: name, message: "\(error)")
        }
    }

    public func apply(_ knobs: [Knob], owner: String) async throws(PlaceError) -> [String: String] {
        var readBack: [String: String] = [:]
        for knob in knobs {
            if !originals.withLock({ $0.contains { $0.path == knob.path } }) {
                let current = KernelFile.selectedValue(try await read(knob.path))
                originals.withLock { $0.append((knob.path, current)) }
            }
            do {
                readBack[knob.path] = try await agent.write(knob.value, to: knob.path, failure: failure)
            } catch {
                throw placeError(error)
            }
        }
        return readBack
    }

    public func restoreKnobs() async -> [String] {
        let all = originals.withLock { list in
            defer { list.removeAll() }
            return list
        }
        var failures: [String] = []
        for (path, value) in all.reversed() {
            do {
                _ = try await agent.write(value, to: path, failure: failure)
            } catch {
                health.note(error)
                failures.append("\(name) \(path): \(error)")
            }
        }
        return failures
    }

    public func dropCachesAndCompact() async throws(PlaceError) {
        do {
            _ = try await agent.output(["sync"], failure: failure)
            _ = try await agent.write("3", to: "/proc/sys/vm/drop_caches", failure: failure)
            _ = try await agent.write("1", to: "/proc/sys/vm/compact_memory", failure: failure)
        } catch {
            throw placeError(error)
        }
    }

    public func runDirectory(_ tag: String) -> String { "\(agent.spool)/runs/\(tag)" }

    /// The agent runs the process, with the run's collectors in the guest: rusage, the vmstat
    /// counters before and after, and the memory monitor at `monitor.interval` (none when off).
    /// A value the agent did not report is not made up: the answer is an error.
    public func launchMeasured(_ spec: ProcessSpec) async throws(ProcessError) -> MeasuredRun {
        let samplesFile = "\(agent.spool)/.samples-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: samplesFile) }
        var r = AgentRequest(verb: .run)
        r.argv = [spec.program] + spec.arguments
        r.environment = spec.environment
        r.workingDirectory = spec.workingDirectory.map(agent.guestPath)
        r.stdoutPath = spec.stdoutPath.map(agent.guestPath)
        r.stderrPath = spec.stderrPath.map(agent.guestPath)
        r.cpus = spec.cpus
        r.timeoutSeconds = spec.timeoutSeconds
        r.monitorMillis = monitor.intervalMillis
        r.samplesPath = agent.guestPath(samplesFile)
        // The alignment probe's hook: the workload stops itself at the end of its measured phase
        // (NB_PHASE_STOP), the agent says so in the stop file, the probe reads every layer while
        // it is stopped, and the agent continues it.
        let stopFile = "\(agent.spool)/.stopped-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: stopFile) }
        r.environment[AlignmentCollector.phaseStopVariable] = "1"
        r.stopFile = agent.guestPath(stopFile)
        // The alignment timeline: the agent says the process's pid once it runs.
        let startFile = "\(agent.spool)/.started-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: startFile) }
        var timeline = alignmentIntervalMillis.map { StackAlignmentTimeline(intervalMillis: $0) }
        if timeline != nil { r.startFile = agent.guestPath(startFile) }
        let finished = Mutex(false)
        let running = Task { [agent, failure, r] () -> Result<AgentResponse, VMError> in
            defer { finished.withLock { $0 = true } }
            do throws(VMError) {
                return .success(try await agent.send(r, timeout: (spec.timeoutSeconds ?? 3600) + 720, failure: failure))
            } catch {
                return .failure(error)
            }
        }
        var alignment: [Metric]?
        while !finished.withLock({ $0 }) {
            if let text = FileManager.default.contents(atPath: stopFile).map({ String(decoding: $0, as: UTF8.self) }),
                let pid = text.split(separator: " ").last.flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
            {
                let stoppedAt = ContinuousClock.now
                let probe = stackProbe()
                let first = await probe.metrics(
                    pid: pid,
                    when:
                        "probed once, at the end of the measured phase, while the process stood stopped in \(name) (\(probe.chain.count + 1) layer(s) read)",
                    failure: failure)
                var k = AgentRequest(verb: .kill)
                k.pid = pid
                k.signal = SIGCONT
                // Continued whatever the probe found; one retry (a workload left stopped would
                // only end at the run's deadline).
                for _ in 0..<2 {
                    if (try? await agent.send(k, timeout: 60, failure: failure)) != nil { break }
                }
                let held = (ContinuousClock.now - stoppedAt).seconds
                let heldText = String(format: " (held stopped %.1f s)", held)
                alignment = first.map { m in
                    var m = m
                    if m.value != nil { m.detail = (m.detail ?? "") + heldText }
                    return m
                }
                break
            }
            await timeline?.step(startFile: startFile) { pid in
                await self.stackProbe().metrics(pid: pid, when: "on the alignment timeline", failure: self.failure)
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        let response: AgentResponse
        switch await running.value {
        case .success(let answer): response = answer
        case .failure(let error):
            health.note(error)
            throw ProcessError(program: spec.program, message: "in \(name): \(error)", errno: nil)
        }
        let outcome: ProcessOutcome
        do throws(AgentAnswerError) {
            outcome = try Self.outcome(response, argv: r.argv)
        } catch {
            throw ProcessError(program: spec.program, message: "in \(name): \(error.message)", errno: nil)
        }
        let readings = AgentReadings.parse((try? String(contentsOfFile: samplesFile, encoding: .utf8)) ?? "")
        var (metrics, samples) = Self.collect(outcome, readings: readings, monitor: monitor)
        metrics = metrics.map { m in
            var m = m
            m.detail = "measured in \(name) by the guest agent" + (m.detail.map { " (\($0))" } ?? "")
            return m
        }
        let probed =
            alignment
            ?? AlignmentMetrics.unavailable(
                layer: name,
                reason:
                    "in \(name): the workload exited without stopping at the end of its measured phase (only nb-micro honours \(AlignmentCollector.phaseStopVariable))"
            )
        metrics += response.metrics.map { m in
            var m = m
            m.detail = "in \(name)"
            return m
        }
        metrics += probed.map { m in
            var m = m
            m.detail = "in \(name)" + (m.detail.map { ": \($0)" } ?? "")
            return m
        }
        if let timeline {
            samples += timeline.samples
            metrics += timeline.metrics(layer: name)
        }
        return MeasuredRun(outcome: outcome, metrics: metrics, samples: samples)
    }

    /// The alignment probe over the stack's layers as they are now (a restored guest has a new
    /// QEMU pid).
    func stackProbe() -> StackAlignment {
        let layers = stack?.currentLayers ?? stackLayers
        return StackAlignment(guest: layers?.first { $0.name == name } ?? layer, layers: layers)
    }

    struct AgentAnswerError: Error {
        var message: String
    }

    /// The process's end as the agent reported it; every field is required.
    static func outcome(_ response: AgentResponse, argv: [String]) throws(AgentAnswerError) -> ProcessOutcome {
        func int(_ key: String) throws(AgentAnswerError) -> Int {
            guard let v = response.int(key) else { throw AgentAnswerError(message: "the agent's answer has no \(key)") }
            return v
        }
        func double(_ key: String) throws(AgentAnswerError) -> Double {
            guard let v = response.double(key) else { throw AgentAnswerError(message: "the agent's answer has no \(key)") }
            return v
        }
        let usage = ResourceUsage(
            minorFaults: try int("minor_faults"), majorFaults: try int("major_faults"),
            userSeconds: try double("user_seconds"), systemSeconds: try double("system_seconds"),
            maxRSSKiB: try int("max_rss_kib"), voluntaryContextSwitches: try int("voluntary_context_switches"),
            involuntaryContextSwitches: try int("involuntary_context_switches"))
        let exit = response.int("exit").map(Int32.init)
        let signal = response.int("signal").map(Int32.init)
        if exit == nil && signal == nil { throw AgentAnswerError(message: "the agent's answer has neither exit nor signal") }
        return ProcessOutcome(
            pid: Int32(try int("pid")), exitStatus: exit, signal: signal, timedOut: try int("timed_out") == 1,
            usage: usage, wallSeconds: try double("wall_seconds"), argv: argv)
    }

    /// The same metrics and timeline as this machine's collectors (usage, vmstat deltas, the
    /// memory monitor), from what the agent measured in the guest.
    static func collect(_ outcome: ProcessOutcome, readings: [AgentReadings.Reading], monitor: MonitorSettings)
        -> (metrics: [Metric], samples: [TimelineSample])
    {
        var metrics = UsageCollector.metrics(outcome)
        guard let first = readings.first, let last = readings.last, readings.count >= 2 else {
            metrics.append(
                Metric.unavailable(
                    "thp_fault_alloc", unit: "events", polarity: .neutral, source: "vmstat",
                    reason: "unavailable: the agent recorded no /proc/vmstat readings before and after the run"))
            return (metrics, [])
        }
        metrics += VmstatCollector.metrics(before: first.reading.vmstat, after: last.reading.vmstat)
        guard let interval = monitor.intervalMillis else { return (metrics, []) }
        var timeline = MonitorTimeline(
            before: first.reading(order: monitor.order), order: monitor.order, intervalMillis: interval)
        for r in readings.dropFirst().dropLast() {
            timeline.record(r.reading(order: monitor.order), at: r.tMillis, includeProcess: true)
        }
        timeline.record(last.reading(order: monitor.order), at: last.tMillis, includeProcess: false)
        let zones = (try? Buddyinfo.parse(first.buddyinfo))?.machineZonesDescription ?? "?"
        metrics += timeline.summary(zones: zones)
        return (metrics, timeline.samples)
    }
}

/// The readings the agent writes to a run's samples file: blocks of
/// `t MILLIS`, `buddy <a /proc/buddyinfo line>`, `MemFree KIB`, `AnonHugePages KIB` (of the
/// process), `vmstat NAME VALUE`.
enum AgentReadings {
    struct Reading {
        var tMillis: Int64
        var buddyinfo = ""
        var memFreeKiB: Int?
        var anonHugeKiB: Int?
        var vmstat: [String: Int64] = [:]

        func reading(order: Int) -> MonitorReading {
            MonitorReading(
                fmfi: (try? Buddyinfo.parse(buddyinfo))?.machineFMFI(order: order),
                memFreeBytes: memFreeKiB.map { Double($0) * 1024 }, anonHugeBytes: anonHugeKiB.map { Double($0) * 1024 },
                vmstat: vmstat)
        }

        var reading: MonitorReading { reading(order: 9) }
    }

    static func parse(_ text: String) -> [Reading] {
        var all: [Reading] = []
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let value = String(parts[1])
            if parts[0] == "t" {
                if let t = Int64(value) { all.append(Reading(tMillis: t)) }
                continue
            }
            guard !all.isEmpty else { continue }
            switch parts[0] {
            case "buddy": all[all.count - 1].buddyinfo += value + "\n"
            case "MemFree": all[all.count - 1].memFreeKiB = Int(value)
            case "AnonHugePages": all[all.count - 1].anonHugeKiB = Int(value)
            case "vmstat":
                let f = value.split(separator: " ")
                if f.count == 2, let v = Int64(f[1]) { all[all.count - 1].vmstat[String(f[0])] = v }
            default: continue
            }
        }
        return all
    }
}

/// A process spawned by a guest's agent: signalled through the agent, its end read from
/// SPOOL/exited/PID (written by the agent when it reaps it).
final class GuestHelper: HelperProcess {
    let pid: Int32
    let agent: GuestAgent
    let layer: String
    let argv: [String]
    let failure: @Sendable () -> String?

    init(pid: Int32, agent: GuestAgent, layer: String, argv: [String], failure: @escaping @Sendable () -> String?) {
        self.pid = pid
        self.agent = agent
        self.layer = layer
        self.argv = argv
        self.failure = failure
    }

    /// SPOOL/exited/PID: "exit N" or "signal N", then the helper's usage (an older agent: none).
    var exitedRecord: String? {
        FileManager.default.contents(atPath: "\(agent.spool)/exited/\(pid)").map { String(decoding: $0, as: UTF8.self) }
    }

    /// How it ended: the record's first line.
    var exitedText: String? {
        exitedRecord.map { $0.split(separator: "\n").first.map(String.init) ?? "" }.map {
            $0.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    var hasExited: Bool { exitedText != nil || failure() != nil }

    func signal(_ signal: Int32) async {
        var k = AgentRequest(verb: .kill)
        k.pid = pid
        k.signal = signal
        _ = try? await agent.send(k, timeout: 30, failure: failure)
    }

    func ended() async -> HelperEnd {
        while exitedText == nil && failure() == nil { try? await Task.sleep(for: .milliseconds(100)) }
        guard let text = exitedText else {
            return HelperEnd(exitStatus: nil, description: "gone with its VM: \(failure() ?? "?")")
        }
        let parts = text.split(separator: " ")
        let status = parts.first == "exit" && parts.count > 1 ? Int32(parts[1]) : nil
        // Its usage as the agent measured it when reaping it; none when the record lacks it.
        let outcome = exitedRecord.flatMap { try? GuestPlace.outcome(AgentResponse.parse($0), argv: argv) }
        return HelperEnd(exitStatus: status, description: "\(text) in \(layer)", outcome: outcome)
    }
}

extension GuestPlace {
    public func startHelper(_ spec: ProcessSpec) async throws(ProcessError) -> any HelperProcess {
        var spawn = AgentRequest(verb: .spawn)
        spawn.argv = [spec.program] + spec.arguments
        spawn.environment = spec.environment
        spawn.workingDirectory = spec.workingDirectory.map(agent.guestPath)
        spawn.stdoutPath = spec.stdoutPath.map(agent.guestPath)
        spawn.stderrPath = spec.stderrPath.map(agent.guestPath)
        spawn.cpus = spec.cpus
        let response: AgentResponse
        do {
            response = try await agent.send(spawn, timeout: 60, failure: failure)
        } catch {
            health.note(error)
            throw ProcessError(program: spec.program, message: "in \(name): \(error)", errno: nil)
        }
        guard let pid = response.int("pid").map(Int32.init) else {
            throw ProcessError(
                program: spec.program, message: "in \(name): \(response.error ?? "the agent returned no pid")", errno: nil)
        }
        return GuestHelper(pid: pid, agent: agent, layer: name, argv: spawn.argv, failure: failure)
    }
}

extension GuestPlace: BalloonPlace {
    struct BalloonValue: Encodable { var value: UInt64 }
    struct BalloonInfo: Decodable { var actual: UInt64 }

    /// QMP `balloon` on this layer's QEMU (on this machine), then `query-balloon` until the guest
    /// has given (or taken back) the memory — within 4 MiB of the target, at most 120 s.
    public func balloon(to bytes: UInt64?) async throws(PlaceError) -> UInt64 {
        guard layer.parent == nil else {
            throw .unsupported(
                place: name, what: "balloon: its QEMU runs in a guest (use memory_pressure method: hold there)")
        }
        let target = bytes ?? layer.memoryBytes
        do {
            let client = QMPClient(transport: try UnixSocketTransport(path: layer.qmpSocket, timeout: 20), name: name)
            _ = try client.handshake()
            _ = try client.execute("balloon", arguments: BalloonValue(value: target), returning: QMPMessage.Ignored.self)
            let deadline = ContinuousClock.now + .seconds(120)
            var actual = try client.execute("query-balloon", arguments: QMPMessage.NoArguments?.none, returning: BalloonInfo.self)
                .actual
            while actual.distance(to: target).magnitude > 4 << 20 && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(500))
                actual = try client.execute("query-balloon", arguments: QMPMessage.NoArguments?.none, returning: BalloonInfo.self)
                    .actual
            }
            if actual.distance(to: target).magnitude > 4 << 20 {
                throw PlaceError.failed(
                    place: name, message: "the balloon reached \(actual) bytes, not \(target), within 120 s")
            }
            return actual
        } catch let error as QMPError {
            throw .failed(place: name, message: "balloon over QMP: \(error)")
        } catch let error as PlaceError {
            throw error
        } catch {
            throw .failed(place: name, message: "balloon: \(error)")
        }
    }
}
