import Foundation
import Logging
import NestBenchCollectors
import NestBenchModel
import NestBenchProcess

/// Whether this machine can host L1 itself, or an emulated host must stand in for L0.
public enum HostVirtualization: Sendable, Hashable {
    /// /dev/kvm with hardware virtualization: L0 is this machine.
    case hardware
    /// No usable hardware virtualization: L0 is a TCG guest with emulated SVM + nested paging.
    case emulated(reason: String)

    public var isEmulated: Bool { if case .emulated = self { true } else { false } }

    /// The note every report of such a run carries.
    public static let emulatedNote =
        "functional only: emulated host (L0 is a TCG guest: no hardware virtualization here; timings are not performance numbers)"

    /// kvm_pvm (a paravirtual KVM with shadow paging only) cannot boot stock kernels; without
    /// /dev/kvm or the svm/vmx flag there is nothing to use either.
    public static func detect() -> HostVirtualization {
        if FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm") {
            return .emulated(reason: "/dev/kvm is kvm_pvm (paravirtual, shadow paging only): it cannot boot stock kernels")
        }
        guard FileManager.default.fileExists(atPath: "/dev/kvm") else {
            return .emulated(reason: "no /dev/kvm")
        }
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let flags = cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") } ?? ""
        let words = Set(flags.split(separator: " "))
        if !words.contains("svm") && !words.contains("vmx") {
            return .emulated(reason: "the CPU has no svm/vmx flag")
        }
        return .hardware
    }
}

/// A process running a layer's QEMU, in this machine or in a guest.
enum QemuProcess: Sendable {
    case host(RunningProcess, socketDirectory: String)
    case guest(pid: Int32, parent: GuestAgent, layer: String)

    var pid: Int32 {
        switch self {
        case .host(let r, _): r.pid
        case .guest(let pid, _, _): pid
        }
    }

    /// The spool of the agent that started it (nil: this machine).
    var parentSpool: String? { if case .guest(_, let parent, _) = self { parent.spool } else { nil } }

    /// Why this QEMU is gone, or nil while it runs. A guest's agent records how each process
    /// it spawned ended (SPOOL/exited/PID): a QEMU that exits without an error message most
    /// often means its guest reset (triple fault: -no-reboot turns a reset into an exit).
    var exitReason: String? {
        switch self {
        case .host(let r, _):
            return r.hasExited ? "the outermost QEMU exited" : nil
        case .guest(let pid, let parent, let layer):
            guard let data = FileManager.default.contents(atPath: "\(parent.spool)/exited/\(pid)") else { return nil }
            // The record's first line ("exit N" / "signal N"); its usage lines follow.
            let record = String(decoding: data, as: UTF8.self)
            let how = (record.split(separator: "\n").first.map(String.init) ?? "").trimmingCharacters(
                in: .whitespacesAndNewlines)
            return "\(layer)'s QEMU (pid \(pid) in \(parent.name)) ended (\(how)): the guest reset or crashed, or QEMU failed"
        }
    }
}

/// One booted VM of a stack.
public struct BootedLayer: Sendable {
    public var name: String
    public var agent: GuestAgent
    /// This machine's path of the console log.
    public var consoleLog: String
    /// QEMU's argv as started (in the parent layer).
    public var argv: [String]
    /// pid of QEMU in its parent layer.
    public var qemuPID: Int32
    /// vCPU → CPUs as read back after pinning.
    public var pinning: [Int: [Int]]
    /// Knob path → value read back after writing.
    public var knobs: [String: String]
    /// Index of the parent in the stack's layers; nil = this machine.
    public var parent: Int?
    public var kernelRelease: String
    /// The kernel command line the guest booted with (its /proc/cmdline); nil when unreadable.
    public var commandLine: String? = nil
    /// QEMU's version from its QMP greeting (the QEMUs this machine starts; inner layers run the
    /// same binary, from this machine's root); nil when not read.
    public var qemuVersion: String? = nil
    /// QEMU's QMP socket, as its parent layer sees it (this machine's path for an outermost VM).
    public var qmpSocket: String = ""
    /// The guest's memory as configured (what a deflated balloon gives back).
    public var memoryBytes: UInt64 = 0
    /// `detachable:` guests: the unix socket of the doorbell's virtio-serial port (this machine's path).
    public var doorbellSocket: String? = nil
    /// vCPU i → CPU `requestedPinning[i]` as configured (pinned again after a restore).
    public var requestedPinning: [Int] = []
    /// Where its QEMU writes stdout/stderr (this machine's path for an outermost VM).
    public var qemuLog: String = ""
}

/// What went wrong booting a stack (a failed run, not a failed experiment).
public struct BootFailure: Error, Sendable, CustomStringConvertible {
    public var layer: String
    public var message: String
    public var consoleLog: String?
    public var description: String {
        "\(layer): \(message)" + (consoleLog.map { " (console log: \($0))" } ?? "")
    }
}

/// A booted stack of layers. Killing the outermost QEMU takes every inner VM with it.
public final class QemuStack: @unchecked Sendable {
    public let configuration: Configuration
    public let directory: String
    public private(set) var layers: [BootedLayer] = []
    /// Innermost instances (colocation): indices into `layers`.
    public private(set) var workloadLayers: [Int] = []
    var processes: [QemuProcess] = []
    /// Why the stack cannot be used although no QEMU exited (a restore that failed), or nil.
    var broken: String?
    let lock = NSLock()
    let logger: Logger

    init(configuration: Configuration, directory: String, logger: Logger) {
        self.configuration = configuration
        self.directory = directory
        self.logger = logger
    }

    /// Whether every QEMU of the stack is still running.
    public var alive: Bool { exitReason == nil }

    /// Why the stack is broken: the first QEMU (this machine's or a guest's) that is gone.
    var exitReason: String? {
        lock.lock()
        let all = processes
        let broken = broken
        lock.unlock()
        if let broken { return broken }
        for p in all {
            if let reason = p.exitReason { return reason }
        }
        return nil
    }

    /// Kills every QEMU of this stack (outermost ones on this machine) and waits for them.
    public func teardown() {
        lock.lock()
        let all = processes
        processes = []
        lock.unlock()
        for p in all.reversed() {
            if case .host(let r, let dir) = p {
                r.kill()
                _ = r.waitBlocking()
                try? FileManager.default.removeItem(atPath: dir)
            }
        }
        // Swap images (`swap:`) and saved images (`save_restore:`) go with the VMs that used
        // them; console logs stay.
        if let files = FileManager.default.enumerator(atPath: directory) {
            for case let file as String in files where file.hasSuffix(".swap.img") || file.hasSuffix(".save.img") {
                try? FileManager.default.removeItem(atPath: directory + "/" + file)
            }
        }
    }

    /// Pauses (QMP `stop`) or resumes (`cont`) the stack's outermost QEMU, and with it every
    /// inner VM. Stacks of other configurations are paused while one runs: an idle nested stack
    /// still burns a CPU on timer exits, which would slow or perturb the one being measured.
    public func setRunning(_ running: Bool) throws(QMPError) {
        lock.lock()
        let outer = processes.compactMap { p -> (String, String)? in
            if case .host(_, let dir) = p { return (dir + "/qmp", configuration.name) } else { return nil }
        }
        lock.unlock()
        for (socket, name) in outer {
            let client = QMPClient(transport: try UnixSocketTransport(path: socket, timeout: 20), name: name)
            try client.handshake()
            _ = try client.execute(running ? "cont" : "stop")
        }
    }

    func forget(_ p: QemuProcess) {
        lock.lock()
        processes.removeAll { $0.pid == p.pid && $0.parentSpool == p.parentSpool }
        lock.unlock()
    }

    /// The layers, read under the lock (a restore changes a layer's QEMU pid).
    var currentLayers: [BootedLayer] {
        lock.lock()
        defer { lock.unlock() }
        return layers
    }

    /// The QEMU with `pid` that runs on this machine, if the stack has it.
    func hostProcess(pid: Int32) -> QemuProcess? {
        lock.lock()
        defer { lock.unlock() }
        return processes.first { if case .host(let r, _) = $0 { r.pid == pid } else { false } }
    }

    /// Marks the stack unusable (the orchestrator then boots it afresh).
    func markBroken(_ reason: String) {
        lock.lock()
        if broken == nil { broken = reason }
        lock.unlock()
    }

    /// The outermost QEMU of layer `index` after a restore: its new process and pid.
    func replaced(layer index: Int, by process: QemuProcess) {
        lock.lock()
        processes.append(process)
        layers[index].qemuPID = process.pid
        lock.unlock()
    }

    func add(_ p: QemuProcess) {
        lock.lock()
        processes.append(p)
        lock.unlock()
    }

    func record(_ layer: BootedLayer) -> Int {
        lock.lock()
        defer { lock.unlock() }
        layers.append(layer)
        return layers.count - 1
    }

    func markWorkload(_ index: Int) {
        lock.lock()
        workloadLayers.append(index)
        lock.unlock()
    }
}

/// Boots stacks: images prepared first (all layers see this machine's root), then each layer
/// started paused, pinned over QMP, continued, waited for (boot timeout, retries), configured
/// (modules, knobs, required paths, nested virtualization for the next layer).
public struct StackBooter: Sendable {
    public var images: GuestImages
    /// The guest agent binary (built by the harness locator), visible in guests at this path.
    public var agentBinary: String
    public var virtualization: HostVirtualization
    public var logger: Logger
    public var qemuBinary: String = "qemu-system-x86_64"
    /// For `detachable:` guests: statically linked programs (this machine's path) and where the
    /// guest runs them from (the agent's path, the micro's path): copied into the initramfs.
    public var standaloneFiles: [(source: String, destination: String)] = []

    public init(images: GuestImages, agentBinary: String, virtualization: HostVirtualization, logger: Logger) {
        self.images = images
        self.agentBinary = agentBinary
        self.virtualization = virtualization
        self.logger = logger
    }

    struct Prepared: Sendable {
        var kernel: String
        var initrd: String
        var release: String
    }

    func prepare(_ layer: VMLayer) async throws(BootFailure) -> Prepared {
        guard let image = layer.kernel else {
            throw BootFailure(layer: layer.name, message: "no kernel image (set kernel: for \(layer.name))")
        }
        // (Untyped throws in a helper: Swift 6.3's optimizer crashes splitting this coroutine
        // when the typed-throws version holds the do/catch.)
        let outcome: Result<Prepared, any Error> = await prepare(layer, image: image)
        switch outcome {
        case .success(let prepared): return prepared
        case .failure(let error): throw BootFailure(layer: layer.name, message: "\(error)")
        }
    }

    func prepare(_ layer: VMLayer, image: String) async -> Result<Prepared, any Error> {
        do {
            let (kernel, release) = try await images.bootable(image)
            if let initrd = layer.initrd { return .success(Prepared(kernel: kernel, initrd: initrd, release: release ?? "?")) }
            guard let moduleDir = layer.modulesDirectory ?? release.map({ "/lib/modules/\($0)" }) else {
                throw VMError("\(image): cannot tell the kernel release; set modules_dir: for \(layer.name)")
            }
            let initrd = try await images.initramfs(modulesDirectory: moduleDir)
            return .success(Prepared(kernel: kernel, initrd: initrd, release: release ?? "?"))
        } catch {
            return .failure(error)
        }
    }

    /// Boots the whole stack of `configuration` into `directory` (artifacts: shares, console logs).
    /// `starting` sees the stack before its first QEMU starts, so that a caller can tear down a
    /// stack still booting (Ctrl-C, SIGTERM).
    public func boot(
        _ configuration: Configuration, directory: String, starting: @Sendable (QemuStack) -> Void = { _ in }
    ) async throws(BootFailure) -> QemuStack {
        let stack = QemuStack(configuration: configuration, directory: directory, logger: logger)
        starting(stack)
        do {
            try await bootLayers(stack)
        } catch {
            stack.teardown()
            throw error
        }
        return stack
    }

    func bootLayers(_ stack: QemuStack) async throws(BootFailure) {
        let configuration = stack.configuration
        // L0 is a guest (an emulated host) only without hardware virtualization and unless the
        // configuration says L0 is this machine (`this_machine: true`: L1 runs under TCG here).
        let l0IsGuest = virtualization.isEmulated && configuration.layers.first?.thisMachine != true
        let vmLayers = l0IsGuest ? configuration.layers : Array(configuration.layers.dropFirst())
        var prepared: [String: Prepared] = [:]
        for layer in vmLayers { prepared[layer.name] = try await prepare(layer) }
        do {
            try FileManager.default.createDirectory(atPath: stack.directory, withIntermediateDirectories: true)
        } catch {
            throw BootFailure(layer: "stack", message: "\(stack.directory): cannot create (\(error))")
        }
        // (parent index or nil for this machine, parent's share on this machine)
        var parents: [(Int?, String)] = [(nil, stack.directory)]
        for (position, layer) in vmLayers.enumerated() {
            let isInnermost = position == vmLayers.count - 1
            var next: [(Int?, String)] = []
            for (parentIndex, parentShare) in parents {
                for instance in 0..<(isInnermost ? layer.instances : 1) {
                    let name = layer.instances > 1 ? "\(layer.name).\(instance)" : layer.name
                    let hostsNext = !isInnermost
                    var layer = layer
                    if let perInstance = layer.instancePinning, instance < perInstance.count {
                        layer.pinning = perInstance[instance]
                    }
                    let index = try await bootWithRetries(
                        layer, name: name, prepared: prepared[layer.name]!, stack: stack, parent: parentIndex,
                        parentShare: parentShare, hostsNext: hostsNext,
                        emulatedHost: parentIndex == nil && virtualization.isEmulated)
                    if isInnermost { stack.markWorkload(index) }
                    next.append((index, stack.layers[index].agent.spool))
                }
            }
            parents = next
        }
    }

    func bootWithRetries(
        _ layer: VMLayer, name: String, prepared: Prepared, stack: QemuStack, parent: Int?, parentShare: String,
        hostsNext: Bool, emulatedHost: Bool
    ) async throws(BootFailure) -> Int {
        var lastError: BootFailure?
        for attempt in 0...layer.bootRetries {
            do {
                return try await bootOnce(
                    layer, name: name, attempt: attempt, prepared: prepared, stack: stack, parent: parent,
                    parentShare: parentShare, hostsNext: hostsNext, emulatedHost: emulatedHost)
            } catch {
                lastError = error
                logger.warning(
                    "boot failed", metadata: ["layer": "\(name)", "attempt": "\(attempt + 1)", "error": "\(error.description)"])
            }
        }
        throw lastError!
    }

    func bootOnce(
        _ layer: VMLayer, name: String, attempt: Int, prepared: Prepared, stack: QemuStack, parent: Int?,
        parentShare: String, hostsNext: Bool, emulatedHost: Bool
    ) async throws(BootFailure) -> Int {
        let suffix = attempt == 0 ? "" : ".retry\(attempt)"
        let share = "\(parentShare)/\(name)\(suffix)"
        let consoleHost = "\(parentShare)/\(name)\(suffix).console.log"
        let qemuLogHost = "\(parentShare)/\(name)\(suffix).qemu.log"
        do {
            try FileManager.default.createDirectory(atPath: share + "/req", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: share + "/resp", withIntermediateDirectories: true)
        } catch {
            throw BootFailure(layer: name, message: "\(share): cannot create the share (\(error))")
        }
        let parentAgent = parent.map { stack.layers[$0].agent }
        func seen(_ path: String) -> String { parentAgent?.guestPath(path) ?? path }
        let socketDirectory = parent == nil ? NSTemporaryDirectory() + "nbq-\(getpid())-\(UUID().uuidString.prefix(8))" : ""
        let qmp = parent == nil ? socketDirectory + "/qmp" : "/run/nb-\(name).qmp"
        var arguments = ["console=ttyS0", "panic=-1", "nb.agent=\(agentBinary)"]
        if layer.detachable {
            guard parent == nil, !hostsNext else {
                throw BootFailure(
                    layer: name,
                    message:
                        "detachable: only a guest whose QEMU runs on this machine and that hosts no other layer can be saved and restored (L1 with L0 this machine: hardware virtualization or this_machine: true)"
                )
            }
            guard !standaloneFiles.isEmpty else {
                throw BootFailure(
                    layer: name,
                    message:
                        "detachable: the statically linked agent and micro could not be built (cc -static needs libc.a: apt-get install libc6-dev)"
                )
            }
            arguments += [
                "nb.standalone=1", "nb.files=" + standaloneFiles.map { "\($0.source):\($0.destination)" }.joined(separator: ","),
            ]
        }
        arguments += layer.cmdline
        var machine = QemuMachine(
            name: name, binary: qemuBinary, accelerator: emulatedHost ? .tcg : .kvm, cpuModel: layer.cpuModel,
            vcpus: layer.vcpus, memoryBytes: layer.memoryBytes, backing: layer.backing, kernel: prepared.kernel,
            initrd: prepared.initrd, kernelArguments: arguments, share: seen(share), consoleLog: seen(consoleHost),
            qmpSocket: qmp)
        machine.balloon = layer.balloon
        if layer.detachable { machine.doorbellSocket = socketDirectory + "/bell" }
        if let bytes = layer.swapBytes {
            // A sparse image on this machine's disk (the share is a directory here), seen by the
            // layer that runs this QEMU through its share; enabled in the guest after boot.
            let image = "\(parentShare)/\(name)\(suffix).swap.img"
            guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, off_t(bytes)) == 0 else {
                throw BootFailure(
                    layer: name, message: "\(image): cannot create the swap image (\(String(cString: strerror(errno))))")
            }
            machine.disks = [seen(image)]
        }
        let argv = [qemuBinary] + QemuCommandLine.arguments(for: machine)
        let agent = GuestAgent(spool: share, name: name)
        let process: QemuProcess
        var pinning: [Int: [Int]] = [:]
        var qemuVersion: String?
        let started = ContinuousClock.now
        var cap: String?
        logger.info("booting", metadata: ["layer": "\(name)", "console": "\(consoleHost)"])
        if let parentAgent {
            var spawn = AgentRequest(verb: .spawn)
            spawn.argv = argv
            spawn.environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
            spawn.stdoutPath = seen(qemuLogHost)
            spawn.stderrPath = seen(qemuLogHost)
            let response: AgentResponse
            do {
                // Part of the boot, bounded by the layer's boot timeout: exec'ing QEMU in an
                // emulated layer reads its binary through the share and can take long.
                response = try await parentAgent.send(
                    spawn, timeout: max(60, layer.bootTimeoutSeconds), failure: stack.deadReason)
            } catch {
                throw BootFailure(layer: name, message: "starting QEMU: \(error)", consoleLog: nil)
            }
            guard let pid = response.int("pid") else {
                throw BootFailure(layer: name, message: "the agent did not report QEMU's pid")
            }
            process = .guest(pid: Int32(pid), parent: parentAgent, layer: name)
            if let max = layer.qemuMemoryMaxBytes {
                do {
                    try await Self.capMemory(
                        pid: Int32(pid), bytes: max, name: name, agent: parentAgent, failure: stack.deadReason)
                    cap = "\(max) bytes: memory.max of /sys/fs/cgroup/nb-\(name) in \(parentAgent.name)"
                } catch {
                    await kill(process, in: stack)
                    throw BootFailure(layer: name, message: "qemu_memory_max: \(error)")
                }
            }
            var pin = AgentRequest(verb: .pin)
            pin.qmpSocket = qmp
            pin.vcpuCPUs = layer.pinning
            do {
                let r = try await parentAgent.send(pin, timeout: layer.bootTimeoutSeconds, failure: stack.deadReason)
                if let error = r.error { throw VMError(error) }
                for v in r.vcpus { pinning[v.index] = v.cpus }
            } catch {
                await kill(process, in: stack)
                throw BootFailure(
                    layer: name, message: "pinning/continuing over QMP: \(error) — \(tail(qemuLogHost))", consoleLog: consoleHost)
            }
        } else {
            if layer.qemuMemoryMaxBytes != nil {
                throw BootFailure(
                    layer: name,
                    message:
                        "qemu_memory_max: \(name)'s QEMU runs on this machine, whose cgroups NestBench does not manage; cap a guest layer's QEMU (e.g. L1 under an emulated L0)"
                )
            }
            do {
                try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true)
            } catch {
                throw BootFailure(layer: name, message: "\(socketDirectory): \(error)")
            }
            let running: RunningProcess
            do {
                running = try ProcessRunner.start(
                    ProcessSpec(
                        program: qemuBinary, arguments: Array(argv.dropFirst()),
                        environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], stdoutPath: qemuLogHost,
                        stderrPath: qemuLogHost))
                try running.release()
            } catch {
                throw BootFailure(layer: name, message: "starting \(qemuBinary): \(error); install qemu-system-x86")
            }
            process = .host(running, socketDirectory: socketDirectory)
            stack.add(process)
            do {
                (pinning, qemuVersion) = try Self.pinOnHost(socket: qmp, name: name, cpus: layer.pinning)
            } catch {
                await kill(process, in: stack)
                throw BootFailure(
                    layer: name, message: "pinning/continuing over QMP: \(error) — \(tail(qemuLogHost))", consoleLog: consoleHost)
            }
        }
        if case .guest = process { stack.add(process) }
        // Wait for the agent.
        let deadline = started + .milliseconds(Int(layer.bootTimeoutSeconds * 1000))
        while agent.ready == nil {
            if ContinuousClock.now > deadline {
                await kill(process, in: stack)
                throw BootFailure(
                    layer: name,
                    message: "did not come up within the boot timeout of \(Int(layer.bootTimeoutSeconds))s; QEMU killed",
                    consoleLog: consoleHost)
            }
            if let gone = process.exitReason {
                await kill(process, in: stack)
                throw BootFailure(
                    layer: name, message: "QEMU exited during boot (\(gone)): \(tail(qemuLogHost)) \(tail(consoleHost))",
                    consoleLog: consoleHost)
            }
            if let dead = stack.deadReason() {
                await kill(process, in: stack)
                throw BootFailure(layer: name, message: dead, consoleLog: consoleHost)
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
        let bootSeconds = (ContinuousClock.now - started).seconds
        let release = agent.ready?["kernel"] ?? prepared.release
        logger.info("booted", metadata: ["layer": "\(name)", "seconds": "\(Int(bootSeconds))"])
        // Configure: modules, knobs, required paths, nested virtualization.
        var knobs: [String: String] = ["boot_seconds": String(format: "%.1f", bootSeconds)]
        if let cap { knobs["qemu_memory_max"] = cap }
        do {
            let modules = try await Self.resolve(layer.modules, agent: agent, failure: stack.deadReason)
            for module in modules {
                // Under emulation a module load can take minutes: allow the layer's boot timeout.
                let (status, _) = try await agent.output(
                    ["modprobe"] + module.modprobeArguments, timeout: layer.bootTimeoutSeconds, failure: stack.deadReason)
                if status != 0 {
                    throw VMError(
                        "modprobe \(module.modprobeArguments.joined(separator: " ")) failed "
                            + (status.map { "(exit \($0))" } ?? "(killed after \(Int(layer.bootTimeoutSeconds))s)"))
                }
            }
            for knob in layer.settings.knobs {
                let back = try await agent.write(knob.value, to: knob.path, failure: stack.deadReason)
                if back != knob.value {
                    throw VMError("\(knob.path): wrote \"\(knob.value)\" but the kernel reports \"\(back)\"")
                }
                knobs[knob.path] = back
            }
            let missing = try await Self.missingPaths(
                layer.requires + modules.flatMap(\.parameterPaths), agent: agent, failure: stack.deadReason)
            if let first = missing.first {
                throw VMError(
                    "this kernel (\(release)) has no \(first)\(missing.count > 1 ? " (and \(missing.count - 1) more)" : "")")
            }
            if let bytes = layer.swapBytes {
                knobs["swap"] = try await Self.enableSwap(bytes: bytes, agent: agent, failure: stack.deadReason)
            }
            if layer.balloon {
                let (status, _) = try await agent.output(["modprobe", "virtio_balloon"], timeout: 120, failure: stack.deadReason)
                if status != 0 { throw VMError("balloon: modprobe virtio_balloon failed in \(name)") }
                knobs["balloon"] = "virtio-balloon-pci"
            }
            if hostsNext {
                let (status, _) = try await agent.output(["test", "-c", "/dev/kvm"], failure: stack.deadReason)
                if status != 0 {
                    throw VMError(
                        "nested virtualization is not available (no /dev/kvm): load kvm_vendor (kvm_amd or kvm_intel) with nested=1 here and in the layer below"
                    )
                }
                knobs["paging"] = try await Self.pagingMode(modules, agent: agent, failure: stack.deadReason)
            }
        } catch {
            await kill(process, in: stack)
            throw BootFailure(layer: name, message: "\(error)", consoleLog: consoleHost)
        }
        // What the guest kernel booted with, for the run's tags (a failure here fails nothing).
        let commandLine = try? await agent.output(["cat", "/proc/cmdline"], failure: stack.deadReason)
        let pid: Int32
        switch process {
        case .host(let r, _): pid = r.pid
        case .guest(let p, _, _): pid = p
        }
        return stack.record(
            BootedLayer(
                name: name, agent: agent, consoleLog: consoleHost, argv: argv, qemuPID: pid, pinning: pinning, knobs: knobs,
                parent: parent, kernelRelease: release,
                commandLine: commandLine.flatMap { $0.0 == 0 ? $0.1.trimmingCharacters(in: .whitespacesAndNewlines) : nil },
                qemuVersion: qemuVersion, qmpSocket: qmp, memoryBytes: layer.memoryBytes, doorbellSocket: machine.doorbellSocket,
                requestedPinning: layer.pinning, qemuLog: qemuLogHost))
    }

    /// The paging mode this layer's KVM runs its guests with (EPT/NPT read back, `NestedPaging`);
    /// an error when the configuration asked for nested paging (npt/ept = 1) and it is off.
    static func pagingMode(_ modules: [KernelModule], agent: GuestAgent, failure: @escaping @Sendable () -> String?)
        async throws(VMError) -> String
    {
        var files: [String: String] = [:]
        for path in NestedPaging.files {
            let (status, text) = try await agent.output(["cat", path], failure: failure)
            if status == 0 { files[path] = text }
        }
        guard let mode = NestedPaging.mode(files: files) else { return "unknown (no kvm_intel/kvm_amd parameters)" }
        let asked = modules.contains { m in
            ["npt", "ept"].contains { ["1", "Y", "y"].contains(m.parameters[$0] ?? "") }
        }
        if asked && mode.contains(" off") {
            throw VMError("nested paging was asked for (npt/ept=1) but this layer's KVM reports \(mode)")
        }
        return mode
    }

    /// The swap image (the guest's first virtio disk, /dev/vda) made swap and enabled; what
    /// `/proc/swaps` then says.
    static func enableSwap(bytes: UInt64, agent: GuestAgent, failure: @escaping @Sendable () -> String?)
        async throws(VMError) -> String
    {
        _ = try await agent.output(["modprobe", "virtio_blk"], timeout: 120, failure: failure)
        var present = false
        for _ in 0..<60 where !present {
            present = try await agent.output(["test", "-b", "/dev/vda"], failure: failure).status == 0
            if !present { try? await Task.sleep(for: .seconds(1)) }
        }
        guard present else { throw VMError("swap: no /dev/vda in the guest (virtio_blk missing from its kernel?)") }
        for argv in [["mkswap", "/dev/vda"], ["swapon", "/dev/vda"]] {
            let (status, out) = try await agent.output(argv, timeout: 120, failure: failure)
            if status != 0 {
                throw VMError(
                    "swap: \(argv.joined(separator: " ")) failed (exit \(status.map(String.init) ?? "?")): \(out.suffix(200))")
            }
        }
        let (_, swaps) = try await agent.output(["cat", "/proc/swaps"], failure: failure)
        guard let line = swaps.split(separator: "\n").first(where: { $0.hasPrefix("/dev/vda") }) else {
            throw VMError("swap: /dev/vda is not in /proc/swaps after swapon")
        }
        return
            "/dev/vda \(Units.formatBytes(Double(bytes))) (\(line.split(separator: " ", omittingEmptySubsequences: true).prefix(3).joined(separator: " ")))"
    }

    /// Puts a QEMU process of a guest layer into its own cgroup v2 group with `memory.max` (cgroup2
    /// mounted at /sys/fs/cgroup first if it is not); the group goes with the guest.
    static func capMemory(
        pid: Int32, bytes: UInt64, name: String, agent: GuestAgent, failure: @escaping @Sendable () -> String?
    ) async throws(VMError) {
        let root = "/sys/fs/cgroup"
        if try await agent.output(["test", "-e", "\(root)/cgroup.controllers"], failure: failure).status != 0 {
            let (status, out) = try await agent.output(["mount", "-t", "cgroup2", "cgroup2", root], failure: failure)
            if status != 0 { throw VMError("cannot mount cgroup2 at \(root) in \(agent.name): \(out.suffix(200))") }
        }
        let group = "\(root)/nb-\(name)"
        if try await agent.output(["mkdir", "-p", group], failure: failure).status != 0 {
            throw VMError("cannot create \(group) in \(agent.name)")
        }
        _ = try await agent.write("+memory", to: "\(root)/cgroup.subtree_control", failure: failure)
        let max = try await agent.write(String(bytes), to: "\(group)/memory.max", failure: failure)
        guard let limit = UInt64(max.trimmingCharacters(in: .whitespacesAndNewlines)), limit <= bytes else {
            throw VMError("\(group)/memory.max reads \"\(max)\" after writing \(bytes)")
        }
        let procs = try await agent.write(String(pid), to: "\(group)/cgroup.procs", failure: failure)
        guard procs.split(whereSeparator: \.isWhitespace).contains(Substring(String(pid))) else {
            throw VMError("QEMU (pid \(pid)) is not in \(group) after moving it (cgroup.procs: \(procs.prefix(80)))")
        }
    }

    /// The modules as the guest's CPU vendor needs them (`kvm_vendor` → kvm_intel or kvm_amd).
    static func resolve(_ modules: [KernelModule], agent: GuestAgent, failure: @escaping @Sendable () -> String?)
        async throws(VMError) -> [KernelModule]
    {
        guard modules.contains(where: { $0.name == KernelModule.vendorKVM }) else { return modules }
        let (_, cpuinfo) = try await agent.output(["head", "-n", "40", "/proc/cpuinfo"], failure: failure)
        let vendor = CPUIdentity.parse(cpuinfo).vendor
        return try modules.map { module throws(VMError) in
            guard let m = module.resolved(cpuVendor: vendor) else {
                throw VMError("\(KernelModule.vendorKVM): no KVM module for CPU vendor \(vendor) in \(agent.name)")
            }
            return m
        }
    }

    /// The paths of `paths` that do not exist in the guest (one `stat` for all).
    static func missingPaths(_ paths: [String], agent: GuestAgent, failure: @escaping @Sendable () -> String?)
        async throws(VMError) -> [String]
    {
        guard !paths.isEmpty else { return [] }
        var missing: [String] = []
        for path in paths {
            let (status, _) = try await agent.output(["test", "-e", path], failure: failure)
            if status != 0 { missing.append(path) }
        }
        return missing
    }

    /// Kills one QEMU of `stack` (a failed boot attempt) and forgets it, so that a retry is not
    /// judged dead because of it.
    func kill(_ process: QemuProcess, in stack: QemuStack) async {
        stack.forget(process)
        switch process {
        case .host(let r, let dir):
            r.kill()
            _ = await r.wait()
            try? FileManager.default.removeItem(atPath: dir)
        case .guest(let pid, let parent, _):
            var k = AgentRequest(verb: .kill)
            k.pid = pid
            k.signal = SIGKILL
            _ = try? await parent.send(k, timeout: 30)
        }
    }

    func tail(_ path: String) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        return String(decoding: data.suffix(300), as: UTF8.self).replacingOccurrences(of: "\n", with: " | ")
    }

    /// QMP on this machine: handshake (QEMU's version), vCPU threads pinned and read back, `cont`.
    static func pinOnHost(socket: String, name: String, cpus: [Int]) throws(QMPError) -> ([Int: [Int]], String?) {
        let client = QMPClient(transport: try UnixSocketTransport(path: socket, timeout: 20), name: name)
        let version = try client.handshake()
        var result: [Int: [Int]] = [:]
        for thread in try client.vcpuThreads() {
            if thread.cpuIndex < cpus.count {
                let cpu = cpus[thread.cpuIndex]
                if !Affinity.set(thread.threadID, to: [cpu]) {
                    throw QMPError(
                        "\(name): pinning vCPU \(thread.cpuIndex) (thread \(thread.threadID)) to CPU \(cpu): \(String(cString: strerror(errno)))"
                    )
                }
            }
            result[thread.cpuIndex] = Affinity.of(thread.threadID) ?? []
        }
        _ = try client.execute("cont")
        return (result, version == "?" ? nil : version)
    }
}

extension QemuStack {
    /// Why the stack is dead, if an outer QEMU exited.
    @Sendable public func deadReason() -> String? {
        exitReason.map { "\($0) (see the console logs in \(directory))" }
    }
}
