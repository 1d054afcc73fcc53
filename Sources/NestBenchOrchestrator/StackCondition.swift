import Foundation
import Logging
import NestBenchCollectors
import NestBenchFragmentation
import NestBenchModel
import NestBenchPlatforms
import NestBenchVM
import NestBenchWorkloads

/// A condition applied inside a VM layer of a stack: its sysctls written through the layer's
/// agent (originals read first and written back by `restore()`), a compacted start, and
/// nb-fragment run in the guest (the same binary: every layer sees this machine's root), its
/// protocol log on the layer's share, where this machine follows it.
struct GuestCondition {
    let layer: BootedLayer
    let stack: QemuStack
    private(set) var originals: [(path: String, value: String)] = []

    init(layer: BootedLayer, stack: QemuStack) {
        self.layer = layer
        self.stack = stack
    }

    /// The layer's /proc/buddyinfo, read now.
    static func buddyinfo(_ agent: GuestAgent, failure: @escaping @Sendable () -> String?) async -> Buddyinfo? {
        guard let (status, text) = try? await agent.output(["cat", "/proc/buddyinfo"], failure: failure), status == 0 else {
            return nil
        }
        return try? Buddyinfo.parse(text, path: "\(agent.name):/proc/buddyinfo")
    }

    /// The layer's FMFI(order) over its movable zones, read now.
    static func fmfi(_ agent: GuestAgent, order: Int, failure: @escaping @Sendable () -> String?) async -> Double? {
        await buddyinfo(agent, failure: failure)?.machineFMFI(order: order)
    }

    static func zones(_ agent: GuestAgent, failure: @escaping @Sendable () -> String?) async -> String {
        await buddyinfo(agent, failure: failure).map { "\(agent.name) " + $0.machineZonesDescription }
            ?? "\(agent.name)'s movable zones"
    }

    /// Writes a knob in the layer, keeping its original value (the first time) for `restore()`.
    mutating func apply(_ knob: Knob) async throws(VMError) -> String {
        if !originals.contains(where: { $0.path == knob.path }) {
            let (status, text) = try await layer.agent.output(["cat", knob.path], failure: stack.deadReason)
            guard status == 0 else { throw VMError("\(layer.name) has no \(knob.path)") }
            originals.append((knob.path, KernelFile.selectedValue(text)))
        }
        return try await write(knob.value, to: knob.path)
    }

    private func write(_ value: String, to path: String) async throws(VMError) -> String {
        try await layer.agent.write(value, to: path, failure: stack.deadReason)
    }

    /// Puts back every knob `apply` changed, newest first.
    func restore() async -> [String] {
        var failures: [String] = []
        for (path, value) in originals.reversed() {
            do {
                _ = try await write(value, to: path)
            } catch {
                failures.append("\(path): \(error)")
            }
        }
        return failures
    }

    /// sync, drop the page cache and compact all memory in the layer.
    func compact() async throws(VMError) {
        _ = try await layer.agent.output(["sync"], failure: stack.deadReason)
        _ = try await write("3", to: "/proc/sys/vm/drop_caches")
        _ = try await write("1", to: "/proc/sys/vm/compact_memory")
    }

    /// Where nb-fragment runs in this layer: spawned by its agent (its process group is signalled
    /// through the agent; the agent records its end in SPOOL/exited/PID).
    var place: FragmenterPlace {
        let agent = layer.agent
        let failure = stack.deadReason
        let name = layer.name
        return FragmenterPlace(
            name: name,
            start: { program, arguments, directory, stdout, stderr throws(FragmentationError) in
                var spawn = AgentRequest(verb: .spawn)
                spawn.argv = [program] + arguments
                spawn.environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
                spawn.workingDirectory = agent.guestPath(directory)
                spawn.stdoutPath = agent.guestPath(stdout)
                spawn.stderrPath = agent.guestPath(stderr)
                let response: AgentResponse
                do {
                    response = try await agent.send(spawn, timeout: 60, failure: failure)
                } catch {
                    throw FragmentationError("cannot start the fragmenter in \(name): \(error)")
                }
                guard let pid = response.int("pid").map(Int32.init) else {
                    throw FragmentationError(
                        "cannot start the fragmenter in \(name): \(response.error ?? "the agent returned no pid")")
                }
                let exited = "\(agent.spool)/exited/\(pid)"
                @Sendable func how() -> String? {
                    FileManager.default.contents(atPath: exited).map {
                        String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    }
                }
                return FragmenterChild(
                    pid: pid, hasExited: { how() != nil || failure() != nil },
                    signal: { sig in
                        var k = AgentRequest(verb: .kill)
                        k.pid = pid
                        k.signal = sig
                        _ = try? await agent.send(k, timeout: 30, failure: failure)
                    },
                    wait: {
                        while how() == nil && failure() == nil { try? await Task.sleep(for: .milliseconds(100)) }
                        guard let text = how() else { return (nil, "gone with its VM: \(failure() ?? "?")") }
                        let parts = text.split(separator: " ")
                        let status = parts.first == "exit" && parts.count > 1 ? Int32(parts[1]) : nil
                        return (status, "\(text) in \(name)")
                    })
            },
            fmfi: { order in await Self.fmfi(agent, order: order, failure: failure) },
            zones: { await Self.zones(agent, failure: failure) })
    }
}

/// What a condition left in place for one run: metrics of its preparation (compaction), the
/// fragmenter holding memory, and a guest whose knobs go back after the run.
struct PreparedCondition {
    var metrics: [Metric] = []
    var provenance: [String: String] = [:]
    var fragmentation: FragmentationSession?
    var guest: GuestCondition?

    /// Puts a guest's condition knobs back; nil when no guest was changed (this machine's knobs
    /// go back with the next configuration's activation or at the end).
    func restore() async -> [String]? {
        guard let guest else { return nil }
        return await guest.restore()
    }

    /// `prefix.name`, or `name` when the prefix is empty.
    static func prefixed(_ name: String, _ prefix: String) -> String { prefix.isEmpty ? name : "\(prefix).\(name)" }

    /// FMFI around drop_caches + compact_memory.
    static func compactionMetrics(before: Double?, after: Double?, order: Int, in place: String) -> [Metric] {
        [("fmfi_before_compaction", before), ("fmfi_after_compaction", after)].map { name, value in
            value.map {
                Metric(
                    name: name, value: $0, unit: "index", polarity: .neutral, source: "condition",
                    detail: "FMFI(\(order)) over the movable zones of \(place) around drop_caches + compact_memory")
            }
                ?? Metric.unavailable(
                    name, unit: "index", polarity: .neutral, source: "condition",
                    reason: "unavailable: cannot read \(place)'s /proc/buddyinfo")
        }
    }
}

extension Orchestrator {
    /// The condition on this machine: compaction, the fragmentation's sysctls (journaled through
    /// the platform), nb-fragment started and holding.
    func prepareOnThisMachine(_ condition: Condition, configuration: Configuration, directory: String) async throws
        -> PreparedCondition
    {
        var prepared = PreparedCondition()
        let order = condition.fragmentation?.order ?? 9
        if condition.compact {
            let before = try? Buddyinfo.live().machineFMFI(order: order)
            try MemoryActions.dropCachesAndCompact()
            prepared.metrics += PreparedCondition.compactionMetrics(
                before: before, after: try? Buddyinfo.live().machineFMFI(order: order), order: order, in: "this machine")
        }
        guard let spec = condition.fragmentation else { return prepared }
        func applyCondition() throws {
            for (path, value) in try platform.apply(spec.knobs, owner: "condition \(condition.name)") {
                prepared.provenance["knob:\(path)"] = value
            }
        }
        try applyCondition()
        // The fragmenter tops up the slack with huge pages (they take big free blocks, never a
        // hole); under a THP-never configuration THP is madvise while it fills, then put back.
        let thpEnabled = "/sys/kernel/mm/transparent_hugepage/enabled"
        let raiseTHP = spec.method == .anonHoles && KnobWriter.read(thpEnabled) == "never"
        if raiseTHP {
            try platform.apply(
                [Knob(path: thpEnabled, value: "madvise")], owner: "condition \(condition.name) (fragmenter fill)")
            prepared.provenance["fragmentation.thp_during_fill"] =
                "madvise (the configuration's never restored before the workload)"
        }
        prepared.fragmentation = try await Fragmenter(harness: harness, journal: platform.journal, logger: logger)
            .start(spec, directory: directory)
        if raiseTHP {
            for (path, value) in try platform.activate(onThisMachine(configuration)) {
                prepared.provenance["knob:\(path)"] = value
            }
            try applyCondition()
        }
        return prepared
    }

    /// The condition of a run in a stack, in the layer it names (`fragmentation.layer`; default:
    /// the guests the workload runs in). `host`, and L0 when L0 is this machine, are this machine;
    /// a name of the innermost layer split into several guests (`L2` for `L2.0`, `L2.1`) means
    /// each of them. Returns each place's preparation with the prefix of its metrics (empty for
    /// a single place; else the guest's entry of `workloadLayers`, a member label or its name).
    func prepareInStack(
        _ condition: Condition, stack: QemuStack, workloadLayers: [(layer: String, prefix: String)],
        configuration: Configuration, runTag: String, artifacts: String
    ) async throws -> [(prefix: String, condition: PreparedCondition)] {
        guard condition.fragmentation != nil || condition.compact else { return [] }
        let names: [String]
        if let named = condition.fragmentation?.layer {
            let split = stack.layers.map(\.name).filter { $0.hasPrefix(named + ".") }
            names = stack.layers.contains { $0.name == named } || split.isEmpty ? [named] : split
        } else {
            names = workloadLayers.map(\.layer)
        }
        var done: [(prefix: String, condition: PreparedCondition)] = []
        do {
            for name in names {
                let prefix = names.count == 1 ? "" : workloadLayers.first { $0.layer == name }?.prefix ?? name
                done.append(
                    (
                        prefix,
                        try await prepare(
                            condition, stack: stack, layerName: name, configuration: configuration,
                            runTag: names.count == 1 ? runTag : "\(runTag)-\(name)", artifacts: artifacts)
                    ))
            }
        } catch {
            for (_, p) in done {
                if let session = p.fragmentation { await session.release() }
                _ = await p.restore()
            }
            throw error
        }
        return done
    }

    /// The condition in one place of a stack.
    func prepare(
        _ condition: Condition, stack: QemuStack, layerName name: String, configuration: Configuration, runTag: String,
        artifacts: String
    ) async throws -> PreparedCondition {
        guard let layer = stack.layers.first(where: { $0.name == name }) else {
            guard name == "host" || name == "L0" else {
                throw OrchestratorError(
                    "the stack of \(configuration.name) has no layer \(name) (it has \(stack.layers.map(\.name).joined(separator: ", ")))"
                )
            }
            var prepared = try await prepareOnThisMachine(
                condition, configuration: configuration, directory: "\(artifacts)/\(runTag)-fragment")
            prepared.provenance["condition.layer"] = "this machine"
            return prepared
        }
        var prepared = PreparedCondition()
        prepared.provenance["condition.layer"] = layer.name
        let order = condition.fragmentation?.order ?? 9
        let failure = stack.deadReason
        var guest = GuestCondition(layer: layer, stack: stack)
        if condition.compact {
            let before = await GuestCondition.fmfi(layer.agent, order: order, failure: failure)
            try await guest.compact()
            let after = await GuestCondition.fmfi(layer.agent, order: order, failure: failure)
            prepared.metrics += PreparedCondition.compactionMetrics(before: before, after: after, order: order, in: layer.name)
        }
        guard let spec = condition.fragmentation else { return prepared }
        do {
            for knob in spec.knobs { prepared.provenance["\(layer.name).knob:\(knob.path)"] = try await guest.apply(knob) }
            let thpEnabled = Knob(path: "/sys/kernel/mm/transparent_hugepage/enabled", value: "madvise")
            let (_, current) = try await layer.agent.output(["cat", thpEnabled.path], failure: failure)
            let raiseTHP = spec.method == .anonHoles && KernelFile.selectedValue(current) == "never"
            if raiseTHP {
                _ = try await guest.apply(thpEnabled)
                prepared.provenance["fragmentation.thp_during_fill"] =
                    "madvise in \(layer.name) (the configuration's never restored before the workload)"
            }
            prepared.guest = guest
            prepared.fragmentation = try await Fragmenter(harness: harness, journal: platform.journal, logger: logger)
                .start(spec, directory: "\(layer.agent.spool)/runs/\(runTag)-fragment", place: guest.place)
            if raiseTHP { _ = try await guest.apply(Knob(path: thpEnabled.path, value: "never")) }
            prepared.guest = guest
        } catch {
            if let session = prepared.fragmentation { await session.release() }
            _ = await guest.restore()
            throw error
        }
        return prepared
    }
}
