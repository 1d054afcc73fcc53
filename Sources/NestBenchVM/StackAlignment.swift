import Foundation
import NestBenchAlignment
import NestBenchModel

/// The alignment probe across a stack: the measured process in its guest, then each QEMU below
/// (QMP `gpa2hva` for the guest-physical ranges, then the same pagemap/kpageflags test on that
/// QEMU process), down to this machine. Guests read their files through their agent (`probe`
/// verb) and reach their QEMUs' QMP sockets through it (`qmp` verb); this machine reads its own.
struct StackAlignment: Sendable {
    /// The measured guest and the layers of its stack (the guest's parents, by index).
    let guest: BootedLayer
    /// The stack's layers; nil: a guest place without its stack (the agent run on this machine in
    /// tests): only the guest's own layer is probed.
    let layers: [BootedLayer]?

    static func why(_ error: any Error) -> String { (error as? AlignmentUnavailable)?.reason ?? "\(error)" }

    /// This machine's layer name in the metrics (`align.backed.host`).
    static let thisMachine = "host"

    /// The layers below `guest`, top to bottom: (the VM whose QEMU it is, the layer running it).
    var chain: [(vm: BootedLayer, runner: BootedLayer?)] {
        guard let layers else { return [] }
        var result: [(BootedLayer, BootedLayer?)] = []
        var current = guest
        while true {
            let parent = current.parent.map { layers[$0] }
            result.append((current, parent))
            guard let parent else { break }
            current = parent
        }
        return result
    }

    var lowerNames: [String] { chain.map { $0.runner?.name ?? Self.thisMachine } }

    /// The metrics: the guest's own (`align.regions`, `align.huge.<guest>` …) and the cross-layer ones.
    func metrics(pid: Int32, when: String, failure: @escaping @Sendable () -> String?) async -> [Metric] {
        let guestResult: (ProcessAlignment, [UInt64]?)
        do {
            let snapshot = try await Self.snapshot(
                agent: guest.agent, pid: pid, ranges: [], pageTables: true, kvm: false, failure: failure)
            guestResult = (try AlignmentProbe(files: snapshot).probe(pid: pid), snapshot.pageTableFrames)
        } catch {
            return AlignmentMetrics.unavailable(layer: guest.name, reason: "in \(guest.name): \(Self.why(error))")
                + CrossLayer.unavailable(
                    guestLayer: guest.name, layers: lowerNames, pageTables: true, reason: "in \(guest.name): \(Self.why(error))")
        }
        let (alignment, pageTables) = guestResult
        var metrics = AlignmentMetrics.process(alignment, layer: guest.name, when: when)
        var below: [LowerLayer] = []
        var frames = CrossLayer.framesToTranslate(guest: alignment.regions, pageTableFrames: pageTables)
        for (vm, runner) in chain {
            let where_ = runner?.name ?? Self.thisMachine
            do {
                let translation = try await translate(frames, vm: vm, runner: runner, failure: failure)
                let starts = Array(Set(translation.values.map { $0 / PageGeometry.hugeSize * PageGeometry.hugeSize }))
                let (alignmentBelow, kvm) = try await probe(
                    pid: vm.qemuPID, starts: starts, runner: runner, failure: failure)
                metrics += KVMPageCounts.metrics(vm: vm.name, in: where_, qemuPID: vm.qemuPID, text: kvm)
                below.append(LowerLayer(name: where_, translate: { translation[$0] }, regions: alignmentBelow.regions))
                frames = alignmentBelow.regions.compactMap { $0.kind == .huge ? $0.physicalStart : nil }
            } catch {
                return metrics
                    + CrossLayer.unavailable(
                        guestLayer: guest.name, layers: lowerNames, pageTables: pageTables != nil,
                        reason: "\(vm.name)'s memory in \(where_): \(Self.why(error))")
            }
        }
        if below.isEmpty { return metrics }
        let result = CrossLayer.follow(
            guest: alignment.regions, guestLayer: guest.name, below: below, pageTableFrames: pageTables)
        let names = Set(metrics.map(\.name))
        metrics += CrossLayer.metrics(result, when: when).filter { !names.contains($0.name) }
        return metrics
    }

    /// The agent's probe file for `pid` (whole process, or the regions at `ranges`).
    static func snapshot(
        agent: GuestAgent, pid: Int32, ranges: [(start: UInt64, length: UInt64)], pageTables: Bool, kvm: Bool,
        failure: @escaping @Sendable () -> String?
    ) async throws -> PageSnapshot {
        let file = "\(agent.spool)/.probe-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: file) }
        var r = AgentRequest(verb: .probe)
        r.pid = pid
        r.path = agent.guestPath(file)
        r.ranges = ranges
        r.pageTables = pageTables
        r.kvm = kvm
        _ = try await agent.send(r, timeout: 600, failure: failure)
        guard let data = FileManager.default.contents(atPath: file) else {
            throw AlignmentUnavailable("\(agent.name): the agent wrote no probe file")
        }
        return try PageSnapshot.parse([UInt8](data), pid: pid, origin: agent.name)
    }

    /// The QEMU process `pid` (in `runner`, or this machine) at the regions `starts`, and KVM's counts there.
    func probe(pid: Int32, starts: [UInt64], runner: BootedLayer?, failure: @escaping @Sendable () -> String?)
        async throws -> (ProcessAlignment, Result<String, AlignmentUnavailable>)
    {
        guard let runner else {
            return (try AlignmentProbe().probe(pid: pid, regionStarts: starts), KVMPageCounts.readLocal())
        }
        let snapshot = try await Self.snapshot(
            agent: runner.agent, pid: pid, ranges: Self.coalesced(starts), pageTables: false, kvm: true, failure: failure)
        return (try AlignmentProbe(files: snapshot).probe(pid: pid, regionStarts: starts), snapshot.kvmText)
    }

    /// 2 MiB region starts as (start, length) runs of adjacent regions, for the agent's request.
    static func coalesced(_ starts: [UInt64]) -> [(start: UInt64, length: UInt64)] {
        var runs: [(start: UInt64, length: UInt64)] = []
        for s in Set(starts).sorted() {
            if let last = runs.last, last.start + last.length == s {
                runs[runs.count - 1].length += PageGeometry.hugeSize
            } else {
                runs.append((s, PageGeometry.hugeSize))
            }
        }
        return runs
    }

    /// gpa → hva in `vm`'s QEMU for each 2 MiB guest-physical range, from QEMU (`gpa2hva`).
    func translate(_ frames: [UInt64], vm: BootedLayer, runner: BootedLayer?, failure: @escaping @Sendable () -> String?)
        async throws -> [UInt64: UInt64]
    {
        var result: [UInt64: UInt64] = [:]
        if frames.isEmpty { return result }
        let commands = frames.map { HMP.command("gpa2hva 0x" + String($0, radix: 16)) }
        if let runner {
            for batch in stride(from: 0, to: frames.count, by: 200) {
                let end = min(batch + 200, frames.count)
                var r = AgentRequest(verb: .qmp)
                r.qmpSocket = vm.qmpSocket
                r.argv = Array(commands[batch..<end])
                let response = try await runner.agent.send(r, timeout: 300, failure: failure)
                for i in batch..<end {
                    guard let line = response.fields["reply.\(i - batch)"] else {
                        throw AlignmentUnavailable("\(runner.name): no QMP reply to gpa2hva from \(vm.name)'s QEMU")
                    }
                    if let hva = HMP.gpa2hva(reply: line) { result[frames[i]] = hva }
                }
            }
        } else {
            let client = QMPClient(transport: try UnixSocketTransport(path: vm.qmpSocket, timeout: 30), name: vm.name)
            try client.handshake()
            for frame in frames {
                let text = try client.execute(
                    "human-monitor-command", arguments: HMP.Arguments(commandLine: "gpa2hva 0x" + String(frame, radix: 16)),
                    returning: String.self)
                if let (_, hva) = QEMUMonitorText.gpa2hva(text) { result[frame] = hva }
            }
        }
        if result.isEmpty {
            throw AlignmentUnavailable("\(vm.name)'s QEMU translated none of \(frames.count) guest-physical ranges (gpa2hva)")
        }
        return result
    }
}

/// QMP's `human-monitor-command`, as the agent passes it through.
enum HMP {
    struct Arguments: Encodable {
        var commandLine: String
        enum CodingKeys: String, CodingKey { case commandLine = "command-line" }
    }

    static func command(_ line: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        struct Request: Encodable {
            var execute = "human-monitor-command"
            var arguments: Arguments
        }
        let data = (try? encoder.encode(Request(arguments: Arguments(commandLine: line)))) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// `{"return": "Host virtual address for 0x200000 (pc.ram) is 0x7f…\r\n"}` → the address.
    static func gpa2hva(reply: String) -> UInt64? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any],
            let text = object["return"] as? String
        else { return nil }
        return QEMUMonitorText.gpa2hva(text)?.hva
    }
}
