import Foundation
import Logging
import NestBenchCollectors
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess

/// The `qemu` platform: boots each configuration's stack once and keeps it booted for all the
/// runs of that configuration (stacks of different configurations stay up side by side so the
/// interleaved order costs no reboots); a stack that fails is torn down and booted afresh for the
/// next run. Everything is torn down by `teardownAll` (end of experiment, failure, signals).
public final class QemuPlatform: @unchecked Sendable {
    public let booter: StackBooter
    let logger: Logger
    private let lock = NSLock()
    private var stacks: [String: QemuStack] = [:]
    private var boots: [String: Int] = [:]
    /// Stacks still booting, by configuration: torn down too by `teardownAll`.
    private var booting: [String: QemuStack] = [:]

    public init(booter: StackBooter, logger: Logger) {
        self.booter = booter
        self.logger = logger
    }

    public var virtualization: HostVirtualization { booter.virtualization }

    /// The booted stack of a configuration, booting it if needed. Every other configuration's
    /// stack is paused first (QMP `stop`) and this one resumed: one stack runs at a time.
    public func stack(for configuration: Configuration, artifacts: String) async throws(BootFailure) -> QemuStack {
        let (existing, old, n, others) = lock.withLock { () -> (QemuStack?, QemuStack?, Int, [QemuStack]) in
            let others = stacks.filter { $0.key != configuration.name }.map(\.value)
            if let s = stacks[configuration.name], s.alive { return (s, nil, 0, others) }
            let old = stacks.removeValue(forKey: configuration.name)
            let n = (boots[configuration.name] ?? 0) + 1
            boots[configuration.name] = n
            return (nil, old, n, others)
        }
        for other in others where other.alive {
            do {
                try other.setRunning(false)
            } catch {
                logger.warning(
                    "cannot pause an idle stack", metadata: ["configuration": "\(other.configuration.name)", "error": "\(error)"])
            }
        }
        if let existing {
            do {
                try existing.setRunning(true)
            } catch {
                throw BootFailure(layer: configuration.name, message: "resuming the paused stack over QMP: \(error)")
            }
            return existing
        }
        old?.teardown()
        let name = configuration.name
        let stack: QemuStack
        do {
            stack = try await booter.boot(configuration, directory: "\(artifacts)/vm/\(name)-boot\(n)") { s in
                self.lock.withLock { self.booting[name] = s }
            }
        } catch {
            lock.withLock { _ = booting.removeValue(forKey: name) }
            throw error
        }
        lock.withLock {
            booting.removeValue(forKey: name)
            stacks[name] = stack
        }
        return stack
    }

    /// Tears down one configuration's stack (after a failure inside it).
    public func discard(_ configuration: String) {
        let s = lock.withLock { stacks.removeValue(forKey: configuration) }
        s?.teardown()
    }

    /// Tears down every stack: no QEMU survives.
    public func teardownAll() {
        let all = lock.withLock { () -> [QemuStack] in
            let all = Array(stacks.values) + Array(booting.values)
            stacks.removeAll()
            booting.removeAll()
            return all
        }
        for s in all { s.teardown() }
    }

    /// Before any measurement: each distinct guest kernel boots (in a throwaway emulated VM) and
    /// has every path the layers using it need (required paths, knobs, module parameters after
    /// loading the modules). Returns one problem per missing thing, naming the configuration,
    /// layer and path.
    public func preflight(_ configurations: [Configuration], artifacts: String) async -> [String] {
        var problems: [String] = []
        struct Use {
            var configuration: String
            var layer: VMLayer
        }
        var groups: [String: [Use]] = [:]
        var order: [String] = []
        for c in configurations where c.platform == .qemu {
            for (i, layer) in c.layers.enumerated() {
                if i == 0 && (!virtualization.isEmulated || layer.thisMachine) {
                    // L0 is this machine: its knobs are preflighted with the local platform's;
                    // its modules and required paths are checked here, as they are now.
                    problems += Self.hostLayerProblems(layer, configuration: c.name)
                    continue
                }
                let key = "\(layer.kernel ?? "")|\(layer.initrd ?? "")|\(layer.modulesDirectory ?? "")"
                if groups[key] == nil { order.append(key) }
                groups[key, default: []].append(Use(configuration: c.name, layer: layer))
            }
        }
        for (n, key) in order.enumerated() {
            let uses = groups[key]!
            let first = uses[0].layer
            var probe = VMLayer(
                name: "L0", kernel: first.kernel, initrd: first.initrd, modulesDirectory: first.modulesDirectory, vcpus: 1,
                memoryBytes: 768 << 20, bootTimeoutSeconds: 180, bootRetries: 1)
            probe.cpuModel = "max"
            var emulated = booter
            emulated.virtualization = .emulated(reason: "preflight")
            let config = Configuration(name: "preflight\(n)", platform: .qemu, layers: [probe, probe])
            let stack: QemuStack
            do {
                // Only L0 of this two-entry list boots: emulated-host stacks boot every layer, so
                // boot a one-layer stack by hand.
                stack = QemuStack(configuration: config, directory: "\(artifacts)/preflight/\(n)", logger: logger)
                try FileManager.default.createDirectory(atPath: stack.directory, withIntermediateDirectories: true)
                let prepared = try await emulated.prepare(probe)
                _ = try await emulated.bootOnce(
                    probe, name: "probe", attempt: 0, prepared: prepared, stack: stack, parent: nil,
                    parentShare: stack.directory, hostsNext: false, emulatedHost: true)
            } catch let error as BootFailure {
                for use in uses {
                    problems.append(
                        "configurations.\(use.configuration).layers.\(use.layer.name): kernel \(use.layer.kernel ?? "?") does not boot: \(error)"
                    )
                }
                continue
            } catch {
                problems.append("preflight: \(error)")
                continue
            }
            defer { stack.teardown() }
            let agent = stack.layers[0].agent
            for use in uses {
                do {
                    let modules = try await StackBooter.resolve(use.layer.modules, agent: agent, failure: { nil })
                    for module in modules {
                        let (status, _) = try await agent.output(["modprobe"] + module.modprobeArguments)
                        if status != 0 {
                            problems.append(
                                "configurations.\(use.configuration).layers.\(use.layer.name).modules: modprobe \(module.name) failed in kernel \(use.layer.kernel ?? "?")"
                            )
                        }
                    }
                    let paths =
                        use.layer.requires + use.layer.settings.knobs.map(\.path) + modules.flatMap(\.parameterPaths)
                    for path in try await StackBooter.missingPaths(paths, agent: agent, failure: { nil }) {
                        problems.append(
                            "configurations.\(use.configuration).layers.\(use.layer.name): kernel \(use.layer.kernel ?? "?") has no \(path) (required by this configuration)"
                        )
                    }
                } catch {
                    problems.append("configurations.\(use.configuration).layers.\(use.layer.name): preflight: \(error)")
                }
            }
        }
        return problems
    }

    /// L0 as this machine (hardware virtualization): every module it names must be loaded here
    /// with the parameters it asks for (NestBench does not reload the host's KVM modules), and
    /// every required path must exist. `root` is where /sys lives (tests point it elsewhere).
    static func hostLayerProblems(
        _ layer: VMLayer, configuration: String, root: String = "", cpuVendor: String = CPUIdentity.local().vendor
    ) -> [String] {
        var problems: [String] = []
        let at = "configurations.\(configuration).layers.\(layer.name)"
        for named in layer.modules {
            guard let module = named.resolved(cpuVendor: cpuVendor) else {
                problems.append("\(at).modules.\(named.name): no KVM module for this machine's CPU vendor \(cpuVendor)")
                continue
            }
            let sysName = module.name.replacingOccurrences(of: "-", with: "_")
            let reload = "modprobe -r \(module.name) && modprobe " + module.modprobeArguments.joined(separator: " ")
            guard FileManager.default.fileExists(atPath: root + "/sys/module/\(sysName)") else {
                problems.append("\(at).modules.\(module.name): not loaded on this machine (L0 is this machine); run: \(reload)")
                continue
            }
            for (parameter, wanted) in module.parameters.sorted(by: { $0.key < $1.key }) {
                let path = root + "/sys/module/\(sysName)/parameters/\(parameter)"
                let have = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                guard let have else {
                    problems.append("\(at).modules.\(module.name).\(parameter): this machine has no \(path)")
                    continue
                }
                if !Self.sameParameter(have, wanted) {
                    problems.append(
                        "\(at).modules.\(module.name).\(parameter): is \(have) on this machine, the configuration needs \(wanted); run: \(reload)"
                    )
                }
            }
        }
        for path in layer.requires where !FileManager.default.fileExists(atPath: root + path) {
            problems.append("\(at).requires: this machine (L0) has no \(path)")
        }
        return problems
    }

    /// Module parameters as sysfs shows them: booleans are Y/N, the configuration may say 1/0.
    static func sameParameter(_ have: String, _ wanted: String) -> Bool {
        func normal(_ v: String) -> String {
            switch v.lowercased() {
            case "y", "1", "yes", "true", "on": "1"
            case "n", "0", "no", "false", "off": "0"
            default: v
            }
        }
        return normal(have) == normal(wanted)
    }

    /// Per-layer state after a run: FMFI (order 9), THP enabled, AnonHugePages and hugetlb use
    /// of each layer, and AnonHugePages of the QEMU process backing each guest.
    public static func layerState(_ stack: QemuStack) async -> (metrics: [Metric], provenance: [String: String]) {
        var metrics: [Metric] = []
        var provenance: [String: String] = [:]
        let thp = "/sys/kernel/mm/transparent_hugepage/enabled"
        for layer in stack.layers {
            var files = ["/proc/buddyinfo", thp, "/proc/meminfo"]
            // The QEMU processes this layer runs (its children in the stack).
            let children = stack.layers.filter { $0.parent.map { stack.layers[$0].name } == layer.name }
            files += children.map { "/proc/\($0.qemuPID)/smaps_rollup" }
            guard let (_, text) = try? await layer.agent.output(["grep", "-H", "", "--"] + files, failure: stack.deadReason)
            else {
                metrics.append(
                    Metric.unavailable(
                        "\(layer.name).fmfi", unit: "ratio", polarity: .neutral, source: "layer",
                        reason: "unavailable: \(layer.name)'s agent did not answer"))
                continue
            }
            var byFile: [String: String] = [:]
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                guard let colon = line.firstIndex(of: ":") else { continue }
                byFile[String(line[..<colon]), default: ""] += line[line.index(after: colon)...] + "\n"
            }
            metrics += state(of: layer.name, files: byFile, thpPath: thp, provenance: &provenance)
            for child in children {
                if let smaps = byFile["/proc/\(child.qemuPID)/smaps_rollup"],
                    let huge = KeyValueFile.meminfo(smaps)["AnonHugePages"]
                {
                    metrics.append(
                        Metric(
                            name: "\(child.name).qemu_anon_huge_bytes", value: Double(huge), unit: "bytes", polarity: .neutral,
                            source: "smaps", detail: "AnonHugePages of the QEMU process backing \(child.name), in \(layer.name)"))
                }
            }
        }
        // Guests whose QEMU runs on this machine.
        for layer in stack.layers where layer.parent == nil {
            if let smaps = KernelFile.read("/proc/\(layer.qemuPID)/smaps_rollup"),
                let huge = KeyValueFile.meminfo(smaps)["AnonHugePages"]
            {
                metrics.append(
                    Metric(
                        name: "\(layer.name).qemu_anon_huge_bytes", value: Double(huge), unit: "bytes", polarity: .neutral,
                        source: "smaps", detail: "AnonHugePages of the QEMU process backing \(layer.name), on this machine"))
            }
        }
        return (metrics, provenance)
    }

    static func state(of name: String, files: [String: String], thpPath: String, provenance: inout [String: String])
        -> [Metric]
    {
        var metrics: [Metric] = []
        if let text = files["/proc/buddyinfo"], let info = try? Buddyinfo.parse(text) {
            metrics.append(
                Metric(
                    name: "\(name).fmfi", value: info.machineFMFI(order: 9), unit: "ratio", polarity: .neutral,
                    source: "buddyinfo",
                    detail: "free memory fragmentation index at order 9 in \(name), after the run"))
        }
        if let text = files[thpPath] { provenance["\(name).thp_enabled"] = KernelFile.selectedValue(text) }
        if let text = files["/proc/meminfo"] {
            let m = KeyValueFile.meminfo(text)
            if let v = m["AnonHugePages"] {
                metrics.append(
                    Metric(
                        name: "\(name).anon_huge_bytes", value: Double(v), unit: "bytes", polarity: .neutral, source: "meminfo",
                        detail: "AnonHugePages of all of \(name), after the run"))
            }
            if let total = m["HugePages_Total"], let free = m["HugePages_Free"] {
                metrics.append(
                    Metric(
                        name: "\(name).hugetlb_used_pages", value: Double(total - free), unit: "pages", polarity: .neutral,
                        source: "meminfo", detail: "HugePages_Total - HugePages_Free in \(name)"))
            }
        }
        return metrics
    }
}

extension QemuPlatform: PlaceProvider {
    public var kind: PlatformKind { .qemu }

    /// With hardware virtualization (or `this_machine: true`) a stack's L0 is this machine: its
    /// settings are this machine's knobs.
    public func thisMachine(_ configuration: Configuration) -> Configuration {
        configuration.thisMachine(l0IsThisMachine: !virtualization.isEmulated || configuration.layers.first?.thisMachine == true)
    }

    public func describe(into extra: inout [String: String]) {
        if case .emulated(let reason) = virtualization {
            extra["warning"] = HostVirtualization.emulatedNote
            extra["virtualization"] = "emulated host: \(reason)"
        } else {
            extra["virtualization"] = "hardware"
        }
    }

    public func open(_ configuration: Configuration, host: any Place, collectors: CollectorSettings, artifacts: String)
        async throws(PlaceError) -> any Placement
    {
        let stack: QemuStack
        do {
            stack = try await self.stack(for: configuration, artifacts: artifacts)
        } catch {
            throw .unreachable(place: configuration.name, reason: "VM boot failed: \(error.description)")
        }
        return StackPlacement(stack: stack, host: host, collectors: collectors, virtualization: virtualization)
    }

    public func discard(_ configuration: Configuration) { discard(configuration.name) }
}

/// A booted stack as a placement: its innermost guests run the workload; `host` (and L0 when L0
/// is this machine) is this machine; each guest layer is a `GuestPlace`.
struct StackPlacement: Placement {
    let stack: QemuStack
    let host: any Place
    let collectors: CollectorSettings
    let guests: [String: GuestPlace]
    let health: StackHealth
    let virtualization: HostVirtualization
    /// Each layer's console log size when this placement opened (the run's start): what the
    /// console holds before it (the boot, earlier runs) is not this run's kernel log.
    let consoleBytesAtOpen: [String: UInt64]

    init(stack: QemuStack, host: any Place, collectors: CollectorSettings, virtualization: HostVirtualization) {
        self.stack = stack
        self.host = host
        self.collectors = collectors
        self.virtualization = virtualization
        var sizes: [String: UInt64] = [:]
        for layer in stack.layers {
            var st = stat()
            if stat(layer.consoleLog, &st) == 0 { sizes[layer.name] = UInt64(st.st_size) }
        }
        consoleBytesAtOpen = sizes
        let health = StackHealth(stack: stack)
        self.health = health
        var guests: [String: GuestPlace] = [:]
        for layer in stack.layers {
            guests[layer.name] = GuestPlace(
                layer: layer, health: health, monitor: collectors.monitor, stackLayers: stack.layers, stack: stack,
                alignmentIntervalMillis: collectors.alignment?.intervalMillis)
        }
        self.guests = guests
    }

    var workloadPlaces: [any Place] { stack.workloadLayers.compactMap { guests[stack.layers[$0].name] } }

    func places(forLayer name: String) -> [any Place]? {
        if let guest = guests[name] { return [guest] }
        let split = stack.layers.map(\.name).filter { $0.hasPrefix(name + ".") }
        if !split.isEmpty { return split.compactMap { guests[$0] } }
        if name == "host" || name == "L0" { return [host] }
        return nil
    }

    var provenance: [String: String] {
        // The boot runs happened in (its directory is unique per boot): runs sharing it are
        // resampled together by the hierarchical bootstrap (boot → run).
        var p: [String: String] = ["stack_directory": stack.directory, RunRecord.bootProvenanceKey: stack.directory]
        if case .emulated(let reason) = virtualization { p["virtualization"] = "emulated host (\(reason)): functional only" }
        for layer in stack.layers {
            p["\(layer.name).console"] = layer.consoleLog
            if let bytes = consoleBytesAtOpen[layer.name] { p["\(layer.name).console_from"] = String(bytes) }
            p["\(layer.name).kernel"] = layer.kernelRelease
            if let cmdline = layer.commandLine { p["\(layer.name).cmdline"] = cmdline }
            if let version = layer.qemuVersion { p["qemu_version"] = version }
            for (vcpu, cpus) in layer.pinning { p["\(layer.name).vcpu\(vcpu).cpus"] = CPUList.format(cpus) }
            for (path, value) in layer.knobs { p["\(layer.name).knob:\(path)"] = value }
        }
        return p
    }

    var invocations: [Invocation] {
        stack.layers.map { layer in
            Invocation(
                argv: layer.argv, environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"],
                workingDirectory: layer.parent.map { stack.layers[$0].name } ?? "host", cpus: [])
        }
    }

    var lostReason: String? { health.lostReason }

    func beginRun() async -> any PlacementRun {
        let before = await LayerCounters.read(stack)
        return StackRun(stack: stack, counters: GuestCounters(stack: stack, settings: collectors.perf), before: before)
    }

    func state() async -> (metrics: [Metric], provenance: [String: String]) { await QemuPlatform.layerState(stack) }
}

/// Host-side counters on the outermost guest's vCPU threads during a run.
struct StackRun: PlacementRun {
    let stack: QemuStack
    let counters: GuestCounters
    /// Each layer's vmstat and KSM reading as the run began.
    let before: [String: Result<LayerCounters.Reading, LayerCounters.ReadFailure>]

    func finish() async -> [Metric] {
        let perf = counters.finish()
        let after = await LayerCounters.read(stack)
        let layers = stack.layers.indices.map { (stack.layers[$0].name, LayerCounters.children(of: $0, in: stack)) }
        let metrics =
            perf
            + LayerCounters.metrics(
                layers: layers, host: LayerCounters.children(of: nil, in: stack), before: before, after: after)
        return metrics
    }
}
