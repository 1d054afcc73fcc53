import Foundation
import Logging
import NestBenchAlignment
import NestBenchCollectors
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess
import NestBenchWorkloads
import Synchronization
import Testing

@testable import NestBenchVM

/// Replays a recorded QMP session: what the client sends must match the recording line by line.
final class TranscriptTransport: QMPTransport, @unchecked Sendable {
    var lines: [(outgoing: Bool, text: String)]
    var sent: [String] = []

    init(_ transcript: String) {
        lines = transcript.split(separator: "\n").map { line in
            (line.hasPrefix(">"), String(line.dropFirst(2)))
        }
    }

    func send(_ line: String) throws(QMPError) {
        guard let next = lines.first, next.outgoing else { throw QMPError("unexpected send: \(line)") }
        let a = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? NSDictionary
        let b = try? JSONSerialization.jsonObject(with: Data(next.text.utf8)) as? NSDictionary
        guard a == b else { throw QMPError("sent \(line), recording has \(next.text)") }
        lines.removeFirst()
        sent.append(line)
    }

    func receiveLine() throws(QMPError) -> String? {
        guard let next = lines.first else { return nil }
        guard !next.outgoing else { throw QMPError("the recording expects a send of \(next.text) first") }
        lines.removeFirst()
        return next.text
    }
}

@Suite("QMP client against recorded transcripts")
struct QMPClientTests {
    static let transcriptPath: String = {
        var dir = URL(fileURLWithPath: #filePath)
        dir.deleteLastPathComponent()
        return dir.appendingPathComponent("Transcripts/qmp-qemu7.2-tcg-2vcpu.txt").path
    }()

    @Test func handshakeVCPUThreadsEventsAndErrors() throws {
        let transport = TranscriptTransport(try String(contentsOfFile: Self.transcriptPath, encoding: .utf8))
        let client = QMPClient(transport: transport, name: "T")
        #expect(try client.handshake() == "7.2.22")
        let threads = try client.vcpuThreads()
        #expect(threads == [VCPUThread(cpuIndex: 0, threadID: 21319), VCPUThread(cpuIndex: 1, threadID: 21320)])
        // "cont" and "stop" are answered after a RESUME / STOP event line: the event is skipped.
        _ = try client.execute("cont")
        _ = try client.execute("stop")
        #expect(throws: QMPError.self) { _ = try client.execute("no-such-command") }
        do {
            _ = try client.execute("quit")
        }
        #expect(transport.lines.isEmpty, "the whole recording was replayed")
    }

    @Test func errorNamesTheCommandAndQEMUsDescription() throws {
        let transport = TranscriptTransport(
            """
            > {"execute":"no-such-command"}
            < {"error": {"class": "CommandNotFound", "desc": "The command no-such-command has not been found"}}
            """)
        let client = QMPClient(transport: transport, name: "L1")
        do {
            _ = try client.execute("no-such-command")
            Issue.record("no error thrown")
        } catch {
            #expect(error.description == "L1: no-such-command failed: The command no-such-command has not been found")
        }
    }

    @Test func missingGreetingAndClosedStreamAreErrors() {
        let closed = QMPClient(transport: TranscriptTransport(""), name: "L0")
        #expect(throws: QMPError.self) { try closed.handshake() }
        let wrong = QMPClient(transport: TranscriptTransport("< {\"return\": {}}"), name: "L0")
        #expect(throws: QMPError.self) { try wrong.handshake() }
    }
}

@Suite("QEMU command line builder")
struct QemuCommandLineTests {
    func machine(_ accel: QemuMachine.Accelerator, backing: MemoryBacking = .anonymous) -> QemuMachine {
        QemuMachine(
            name: "L1", accelerator: accel, vcpus: 2, memoryBytes: 1536 << 20, backing: backing, kernel: "/k/vmlinux",
            initrd: "/k/initrd.gz", kernelArguments: ["console=ttyS0", "nb.agent=/a"], share: "/nb/L1,x",
            consoleLog: "/nb/L1.console.log", qmpSocket: "/run/nb-L1.qmp")
    }

    func value(after flag: String, in args: [String]) -> [String] {
        args.indices.filter { args[$0] == flag && $0 + 1 < args.count }.map { args[$0 + 1] }
    }

    @Test func emulatedHostUsesMultiThreadedTCGAndMaxCPU() {
        let args = QemuCommandLine.arguments(for: machine(.tcg))
        #expect(value(after: "-accel", in: args) == ["tcg,thread=multi"])
        #expect(value(after: "-cpu", in: args) == ["max"])
        #expect(value(after: "-name", in: args) == ["L1,debug-threads=on"])
    }

    @Test func kvmGuestUsesHostCPUUnlessAModelIsGiven() {
        #expect(value(after: "-cpu", in: QemuCommandLine.arguments(for: machine(.kvm))) == ["host"])
        var m = machine(.kvm)
        m.cpuModel = "EPYC"
        #expect(value(after: "-cpu", in: QemuCommandLine.arguments(for: m)) == ["EPYC"])
    }

    @Test func bootsPausedWithQMPKernelSharesAndConsole() {
        let args = QemuCommandLine.arguments(for: machine(.kvm))
        #expect(args.contains("-S"))
        #expect(value(after: "-qmp", in: args) == ["unix:/run/nb-L1.qmp,server=on,wait=off"])
        #expect(value(after: "-kernel", in: args) == ["/k/vmlinux"])
        #expect(value(after: "-initrd", in: args) == ["/k/initrd.gz"])
        #expect(value(after: "-append", in: args) == ["console=ttyS0 nb.agent=/a"])
        #expect(value(after: "-serial", in: args) == ["file:/nb/L1.console.log"])
        #expect(value(after: "-bios", in: args) == ["/usr/share/qemu/qboot.rom"])
        #expect(value(after: "-smp", in: args) == ["2"])
        #expect(value(after: "-m", in: args) == ["1536M"])
        let fsdevs = value(after: "-fsdev", in: args)
        #expect(fsdevs.count == 2)
        #expect(fsdevs[0] == "local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap")
        // A comma in a path is doubled, as QEMU's option syntax requires.
        #expect(fsdevs[1] == "local,id=nbshare,path=/nb/L1,,x,security_model=none,multidevs=remap")
        #expect(value(after: "-device", in: args).contains("virtio-9p-pci,fsdev=nbshare,mount_tag=nbshare"))
    }

    @Test func memoryBackings() {
        #expect(QemuCommandLine.memoryBackend(.anonymous, bytes: 1 << 30) == "memory-backend-ram,id=ram0,size=1024M")
        #expect(
            QemuCommandLine.memoryBackend(.thp, bytes: 1 << 30) == "memory-backend-ram,id=ram0,size=1024M,prealloc=on")
        #expect(
            QemuCommandLine.memoryBackend(.hugetlb2M, bytes: 512 << 20)
                == "memory-backend-memfd,id=ram0,size=512M,hugetlb=on,hugetlbsize=2M,prealloc=on")
        #expect(
            QemuCommandLine.memoryBackend(.hugetlb1G, bytes: 2 << 30)
                == "memory-backend-memfd,id=ram0,size=2048M,hugetlb=on,hugetlbsize=1G,prealloc=on")
        let args = QemuCommandLine.arguments(for: machine(.kvm, backing: .hugetlb2M))
        #expect(value(after: "-machine", in: args) == ["pc,memory-backend=ram0"])
        #expect(value(after: "-object", in: args).first?.hasPrefix("memory-backend-memfd") == true)
    }
}

@Suite("guest agent protocol")
struct GuestAgentProtocolTests {
    @Test func requestEncodingIsLinesAndRejectsNewlines() throws {
        var r = AgentRequest.run(["nb-micro", "random", "--size", "1 GiB"], environment: ["PATH": "/bin", "A": "b=c"])
        r.cpus = [0, 2, 3]
        r.timeoutSeconds = 5
        r.stdoutPath = "/nb/runs/1/stdout.txt"
        #expect(
            try r.encoded()
                == "verb run\narg nb-micro\narg random\narg --size\narg 1 GiB\nenv A=b=c\nenv PATH=/bin\n"
                + "stdout /nb/runs/1/stdout.txt\ncpus 0,2,3\ntimeout 5.0\n")
        r.argv.append("two\nlines")
        #expect(throws: VMError.self) { try r.encoded() }
    }

    @Test func responseParsing() {
        let text = """
            ok 1
            pid 42
            exit 0
            timed_out 0
            wall_seconds 1.5
            metric anon_huge_bytes_max 4194304 bytes neutral
            vcpu 0 tid 1234 cpus 1
            vcpu 1 tid 1235 cpus 0-1
            error pinned 1 vCPUs of the 2 requested
            """
        let r = AgentResponse.parse(text)
        #expect(r.int("pid") == 42 && r.int("exit") == 0 && r.double("wall_seconds") == 1.5)
        #expect(r.metrics.map(\.name) == ["anon_huge_bytes_max"] && r.metrics[0].value == 4_194_304)
        #expect(r.vcpus.count == 2 && r.vcpus[1].thread == 1235 && r.vcpus[1].cpus == [0, 1])
        #expect(r.error == "pinned 1 vCPUs of the 2 requested")
    }

    @Test func sharePathsTranslateToTheGuestsNb() {
        let agent = GuestAgent(spool: "/r/vm/a-boot1/L0/L1", name: "L1")
        #expect(agent.guestPath("/r/vm/a-boot1/L0/L1/runs/0/stdout.txt") == "/nb/runs/0/stdout.txt")
        #expect(agent.guestPath("/r/vm/a-boot1/L0/L1") == "/nb")
        #expect(agent.guestPath("/r/vm/a-boot1/L0/L10/x") == "/r/vm/a-boot1/L0/L10/x")
        #expect(agent.guestPath("/root/.cache/nb-micro") == "/root/.cache/nb-micro")
    }

    @Test func bzImageVersionAndPayloadFromTheInstalledKernel() throws {
        let image = "/vmlinuz"
        guard let data = FileManager.default.contents(atPath: image) else { return }
        let release = try #require(GuestImages.bzImageVersion(data))
        #expect(FileManager.default.fileExists(atPath: "/lib/modules/\(release)"), "\(release)")
        #expect(GuestImages.xzPayloadOffset(data) != nil)
        #expect(GuestImages.bzImageVersion(Data(repeating: 0, count: 4096)) == nil)
    }
}

/// The real agent (Harness/guest/nb-agent.c) run on this machine with a spool directory: a
/// spawned process's end is recorded, and the stack sees a guest's QEMU gone at once.
@Suite("guest agent on this machine")
struct GuestAgentLocalTests {
    /// Runs `body` with the real agent started on a fresh spool (killed and reaped afterwards) and
    /// its client, once ready; `mountedAtSpool`: the guest's paths are this machine's.
    func withAgent(
        mountedAtSpool: Bool = false, runDirectory: String? = nil, _ body: (GuestAgent, String) async throws -> Void
    ) async throws {
        let binary = try await HarnessLocator().program("guest/nb-agent.c", name: "nb-agent")
        let spool = Fixtures.temporaryDirectory()
        var environment = ["PATH": "/usr/bin:/bin"]
        if let runDirectory { environment["NB_AGENT_RUN_DIR"] = runDirectory }
        let agentProcess = try ProcessRunner.start(
            ProcessSpec(program: binary, arguments: [spool], environment: environment))
        try agentProcess.release()
        defer {
            agentProcess.kill()
            _ = agentProcess.waitBlocking()
        }
        let agent = GuestAgent(spool: spool, name: "L1", mount: mountedAtSpool ? spool : "/nb")
        for _ in 0..<600 where agent.ready == nil { try await Task.sleep(for: .milliseconds(50)) }
        #expect(agent.ready != nil)
        try await body(agent, spool)
    }

    @Test func spawnedProcessEndIsRecordedAndSeenAsAGoneQEMU() async throws {
        try await withAgent { agent, spool in try await spawnedProcessEnd(agent, spool: spool) }
    }

    func spawnedProcessEnd(_ agent: GuestAgent, spool: String) async throws {
        // The spawned process runs until the test creates the gate file (no sleep race on a loaded machine).
        let gate = spool + "/gate"
        var spawn = AgentRequest(verb: .spawn)
        spawn.argv = ["sh", "-c", "while [ ! -e \"$1\" ]; do sleep 0.05; done; exit 3", "sh", gate]
        spawn.environment = ["PATH": "/usr/bin:/bin"]
        let response = try await agent.send(spawn, timeout: 60)
        let pid = try #require(response.int("pid"))
        let qemu = QemuProcess.guest(pid: Int32(pid), parent: agent, layer: "L2")
        #expect(qemu.exitReason == nil)  // still running
        #expect(FileManager.default.createFile(atPath: gate, contents: Data()))
        var reason: String?
        for _ in 0..<200 where reason == nil {
            try await Task.sleep(for: .milliseconds(50))
            reason = qemu.exitReason
        }
        let text = try #require(reason)
        #expect(text.contains("L2's QEMU (pid \(pid) in L1) ended (exit 3)"))
    }

    /// `output` returns what the command wrote; an output file that is gone (here the command
    /// removes it) is an error naming it, never an empty output.
    @Test func outputIsTheCommandsOrAnError() async throws {
        try await withAgent(mountedAtSpool: true) { agent, _ in try await output(agent) }
    }

    func output(_ agent: GuestAgent) async throws {
        let (status, text) = try await agent.output(["echo", "hello"])
        #expect(status == 0 && text == "hello\n")
        do {
            _ = try await agent.output(["sh", "-c", "rm -f \"$(readlink /proc/$$/fd/1)\""])
            Issue.record("a removed output file was returned as output")
        } catch {
            #expect(error.message.contains("cannot be read"), "\(error)")
        }
    }

    /// A workload that stops itself at the end of its measured phase while the share is detached
    /// (a save under way): the agent notes the stop only once the share is back — a note written
    /// to the unmounted share would be lost, and the workload left stopped until the run's deadline.
    @Test(.timeLimit(.minutes(2))) func aStopWhileDetachedIsNotedOnceTheShareIsBack() async throws {
        let runDirectory = Fixtures.temporaryDirectory()
        try await withAgent(mountedAtSpool: true, runDirectory: runDirectory) { agent, spool in
            let flag = runDirectory + "/nb-detached"
            #expect(FileManager.default.createFile(atPath: flag, contents: nil))
            let marker = "nb-stop-\(UUID().uuidString.prefix(8))"
            let stopFile = spool + "/stopped"
            var run = AgentRequest(verb: .run)
            run.argv = ["sh", "-c", "kill -STOP $$; echo went on", marker]
            run.environment = ["PATH": "/usr/bin:/bin"]
            run.stopFile = stopFile
            let running = Task { try await agent.send(run, timeout: 90) }
            // The process standing stopped (state T), found by its marker.
            var stopped: Int32?
            for _ in 0..<600 where stopped == nil {
                stopped = Self.stoppedProcess(marked: marker)
                if stopped == nil { try await Task.sleep(for: .milliseconds(50)) }
            }
            let pid = try #require(stopped, "the workload never stopped itself")
            try await Task.sleep(for: .milliseconds(800))  // the agent's loop looks every 200 ms
            #expect(!FileManager.default.fileExists(atPath: stopFile), "noted while the share was detached")
            try FileManager.default.removeItem(atPath: flag)
            var noted: String?
            for _ in 0..<600 where noted == nil {
                noted = try? String(contentsOfFile: stopFile, encoding: .utf8)
                if noted == nil { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(noted == "stopped \(pid)\n")
            var cont = AgentRequest(verb: .kill)
            cont.pid = pid
            cont.signal = SIGCONT
            _ = try await agent.send(cont, timeout: 30)
            let answer = try await running.value
            #expect(answer.int("exit") == 0, "\(answer.fields)")
        }
    }

    /// The alignment timeline's hook: the agent writes "started PID" to the start file once the
    /// process runs; the timeline learns the pid from it and probes every interval after, each
    /// fraction a point, a fraction without a value named in the metrics' detail.
    @Test func theStartFileGivesTheTimelineItsPid() async throws {
        try await withAgent(mountedAtSpool: true) { agent, spool in
            let startFile = spool + "/started"
            var run = AgentRequest(verb: .run)
            run.argv = ["sh", "-c", "sleep 0.2"]
            run.environment = ["PATH": "/usr/bin:/bin"]
            run.startFile = startFile
            let answer = try await agent.send(run, timeout: 60)
            let text = try String(contentsOfFile: startFile, encoding: .utf8)
            #expect(text == "started \(answer.int("pid") ?? -1)\n", "\(answer.fields)")

            var timeline = StackAlignmentTimeline(intervalMillis: 100)
            let probed = Mutex<[Int32]>([])
            let probe: (Int32) async -> [Metric] = { pid in
                probed.withLock { $0.append(pid) }
                return [
                    Metric(name: "align.well_aligned", value: 0.25, unit: "fraction", polarity: .higherIsBetter, source: "t"),
                    Metric(name: "align.regions", value: 16, unit: "regions", polarity: .neutral, source: "t"),
                    .unavailable(
                        "align.backed.L0", unit: "fraction", polarity: .higherIsBetter, source: "t", reason: "unavailable: x"),
                ]
            }
            await timeline.step(startFile: startFile, probe: probe)  // learns the pid
            await timeline.step(startFile: startFile, probe: probe)  // too early
            #expect(probed.withLock { $0 }.isEmpty)
            try await Task.sleep(for: .milliseconds(150))
            await timeline.step(startFile: startFile, probe: probe)
            #expect(probed.withLock { $0 } == [answer.int("pid").map(Int32.init) ?? -1])
            #expect(timeline.samples.map(\.name) == ["align.timeline.probe_ms", "align.well_aligned"])
            #expect(timeline.samples.last?.value == 0.25 && (timeline.samples.last?.tMillis ?? 0) >= 100)
            let metrics = timeline.metrics(layer: "L1")
            #expect(metrics.first { $0.name == "align.timeline_probes" }?.value == 1)
            #expect(metrics.first?.detail?.contains("align.backed.L0 at t=") == true, "\(metrics.first?.detail ?? "")")
        }
    }

    /// The pid of a process in state T (stopped) whose command line holds `marker`.
    static func stoppedProcess(marked marker: String) -> Int32? {
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
        for pid in pids {
            guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                String(decoding: cmdline, as: UTF8.self).contains(marker),
                let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            if stat[stat.index(after: close)...].split(separator: " ").first == "T" { return pid }
        }
        return nil
    }

    /// An agent that never takes a request: the timeout says so, and the request is withdrawn
    /// from the queue, so that an agent waking late cannot run it (start a QEMU nobody waits for).
    @Test func anUntakenRequestIsWithdrawnAtTheTimeout() async throws {
        let spool = Fixtures.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: spool + "/req", withIntermediateDirectories: true)
        let agent = GuestAgent(spool: spool, name: "L0")
        var spawn = AgentRequest(verb: .spawn)
        spawn.argv = ["qemu-system-x86_64"]
        do {
            _ = try await agent.send(spawn, timeout: 0.3)
            Issue.record("no agent, yet an answer")
        } catch {
            #expect(error.message.contains("never took the request (withdrawn) spawn qemu-system-x86_64"), "\(error)")
            #expect(error.unreachable)
        }
        let queued = try FileManager.default.contentsOfDirectory(atPath: spool + "/req")
        #expect(queued.isEmpty, "\(queued)")
    }
}

/// With hardware virtualization L0 is this machine: its settings become this machine's knobs and
/// its modules and required paths are checked here, not in a guest.
@Suite("L0 as this machine")
struct HostLayerTests {
    static func stack(l0: VMLayer) -> Configuration {
        Configuration(
            name: "vanilla", platform: .qemu,
            host: LayerSettings(sysctl: ["vm.nr_hugepages": "64"], sysfs: ["/sys/x": "1"]),
            layers: [l0, VMLayer(name: "L1", settings: LayerSettings(thp: THPSettings(enabled: "always")))])
    }

    @Test func l0SettingsJoinTheHostKnobsOnlyWhenL0IsThisMachine() {
        let l0 = VMLayer(
            name: "L0", settings: LayerSettings(thp: THPSettings(enabled: "never"), sysctl: ["vm.nr_hugepages": "128"]))
        let c = Self.stack(l0: l0)
        let knobs = Dictionary(uniqueKeysWithValues: c.thisMachine(l0IsThisMachine: true).host.knobs.map { ($0.path, $0.value) })
        #expect(knobs["/sys/kernel/mm/transparent_hugepage/enabled"] == "never")
        #expect(knobs["/proc/sys/vm/nr_hugepages"] == "128", "L0's value wins over host:")
        #expect(knobs["/sys/x"] == "1", "host: knobs L0 does not set stay")
        #expect(knobs.count == 3, "L1's settings are the guest's, never this machine's: \(knobs)")
        #expect(c.thisMachine(l0IsThisMachine: false) == c, "an emulated L0 is a guest: its knobs are set inside it")
        let local = Configuration(name: "l", platform: .local, host: LayerSettings(thp: THPSettings(enabled: "always")))
        #expect(local.thisMachine(l0IsThisMachine: true) == local)
    }

    @Test func modulesAndRequiredPathsAreCheckedOnThisMachine() throws {
        let root = Fixtures.temporaryDirectory()
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/sys/module/kvm_amd/parameters", withIntermediateDirectories: true)
        #expect(fm.createFile(atPath: root + "/sys/module/kvm_amd/parameters/nested", contents: Data("1\n".utf8)))
        #expect(fm.createFile(atPath: root + "/sys/module/kvm_amd/parameters/npt", contents: Data("N\n".utf8)))
        try fm.createDirectory(atPath: root + "/sys/kernel/mm/present", withIntermediateDirectories: true)
        var l0 = VMLayer(name: "L0")
        l0.modules = [
            KernelModule(name: "kvm_amd", parameters: ["nested": "Y", "npt": "1"]),
            KernelModule(name: "kvm_intel", parameters: ["nested": "1"]),
        ]
        l0.requires = ["/sys/kernel/mm/present", "/sys/kernel/mm/gemini"]
        let problems = QemuPlatform.hostLayerProblems(l0, configuration: "g", root: root)
        #expect(problems.count == 3, "\(problems)")
        #expect(
            problems.contains {
                $0.hasPrefix("configurations.g.layers.L0.modules.kvm_amd.npt: is N on this machine, the configuration needs 1")
                    && $0.hasSuffix("run: modprobe -r kvm_amd && modprobe kvm_amd nested=Y npt=1")
            }, "Y and 1 are the same; N is not 1")
        #expect(problems.contains { $0.hasPrefix("configurations.g.layers.L0.modules.kvm_intel: not loaded on this machine") })
        #expect(problems.contains { $0 == "configurations.g.layers.L0.requires: this machine (L0) has no /sys/kernel/mm/gemini" })
    }

    @Test func vendorKVMResolvesPerCPU() throws {
        let m = KernelModule(name: "kvm_vendor", parameters: ["nested": "1", "tdp": "1"])
        #expect(
            m.resolved(cpuVendor: "GenuineIntel") == KernelModule(name: "kvm_intel", parameters: ["nested": "1", "ept": "1"]))
        #expect(m.resolved(cpuVendor: "AuthenticAMD") == KernelModule(name: "kvm_amd", parameters: ["nested": "1", "npt": "1"]))
        #expect(m.resolved(cpuVendor: "CentaurHauls") == nil)
        let plain = KernelModule(name: "kvm_amd", parameters: ["nested": "1"])
        #expect(plain.resolved(cpuVendor: "GenuineIntel") == plain, "a module named directly stays as it is")
        // On this machine as L0: checked as the vendor's module.
        let root = Fixtures.temporaryDirectory()
        try FileManager.default.createDirectory(
            atPath: root + "/sys/module/kvm_intel/parameters", withIntermediateDirectories: true)
        #expect(
            FileManager.default.createFile(atPath: root + "/sys/module/kvm_intel/parameters/nested", contents: Data("Y\n".utf8)))
        #expect(FileManager.default.createFile(atPath: root + "/sys/module/kvm_intel/parameters/ept", contents: Data("Y\n".utf8)))
        var l0 = VMLayer(name: "L0")
        l0.modules = [m]
        #expect(QemuPlatform.hostLayerProblems(l0, configuration: "v", root: root, cpuVendor: "GenuineIntel").isEmpty)
        #expect(
            QemuPlatform.hostLayerProblems(l0, configuration: "v", root: root, cpuVendor: "AuthenticAMD")
                == [
                    "configurations.v.layers.L0.modules.kvm_amd: not loaded on this machine (L0 is this machine); run: modprobe -r kvm_amd && modprobe kvm_amd nested=1 npt=1"
                ])
    }

    @Test func vcpuThreadsAreFoundByName() throws {
        let proc = Fixtures.temporaryDirectory()
        for (tid, name) in [(700, "qemu-system-x86"), (702, "CPU 1/KVM"), (701, "CPU 0/KVM"), (703, "IO mon_iothread")] {
            try FileManager.default.createDirectory(atPath: "\(proc)/700/task/\(tid)", withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: "\(proc)/700/task/\(tid)/comm", contents: Data((name + "\n").utf8)))
        }
        #expect(GuestCounters.vcpuThreads(of: 700, proc: proc) == [701, 702])
        #expect(GuestCounters.vcpuThreads(of: 999, proc: proc).isEmpty)
    }
}

/// The collectors run where the workload runs: the same experiment's collector settings give the
/// same metric names on this machine (`LocalPlace`) and through a guest's agent (`GuestPlace`,
/// the real agent run here with a spool directory), one timeline sample per period with a
/// monitor interval, none with `off`; helpers start and stop through the agent.
@Suite("places: this machine and a guest agent measure alike", .serialized)
struct PlaceCollectorTests {
    static let sleepSeconds = 3.0

    /// The real agent on a spool directory, as a guest place.
    static func guestPlace(monitor: MonitorSettings, spool: String) async throws -> (GuestPlace, RunningProcess) {
        let binary = try await HarnessLocator().program("guest/nb-agent.c", name: "nb-agent")
        try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: true)
        let process = try ProcessRunner.start(
            ProcessSpec(program: binary, arguments: [spool], environment: ["PATH": "/usr/bin:/bin"]))
        try process.release()
        let agent = GuestAgent(spool: spool, name: "L2", mount: spool)
        for _ in 0..<200 where agent.ready == nil { try await Task.sleep(for: .milliseconds(50)) }
        let layer = BootedLayer(
            name: "L2", agent: agent, consoleLog: "", argv: [], qemuPID: 0, pinning: [:], knobs: [:], parent: nil,
            kernelRelease: "")
        return (GuestPlace(layer: layer, health: StackHealth(dead: { nil }), monitor: monitor), process)
    }

    static func sleeper(_ directory: String) -> ProcessSpec {
        ProcessSpec(
            program: "/bin/sleep", arguments: [String(sleepSeconds)], environment: ["PATH": "/usr/bin:/bin"],
            workingDirectory: directory)
    }

    /// Metric names, with the layer a per-layer name carries (`align.huge.host`, `align.huge.L2`) as `<layer>`.
    static func names(_ run: MeasuredRun) -> Set<String> {
        Set(
            run.metrics.filter { $0.source != "perf" }.map { m in
                m.name.hasPrefix("align.huge.") ? "align.huge.<layer>" : m.name
            })
    }

    @Test(arguments: [1000, nil] as [Int?])
    func sameNamesAndSamplesPerSecond(interval: Int?) async throws {
        let directory = Fixtures.temporaryDirectory()
        let settings = CollectorSettings(
            perf: PerfSettings(defaultEvents: false, proxies: false), monitor: MonitorSettings(intervalMillis: interval))
        let platform = LocalPlatform(journal: KnobJournal(path: directory + "/journal.json"), logger: Logger(label: "test"))
        let local = LocalPlace(platform: platform, collectors: StandardCollectors.make(settings), runsDirectory: directory)
        let localRun = try await local.launchMeasured(Self.sleeper(directory))

        let (guest, agentProcess) = try await Self.guestPlace(monitor: settings.monitor, spool: directory + "/spool")
        defer {
            agentProcess.kill()
            _ = agentProcess.waitBlocking()
        }
        let guestRun = try await guest.launchMeasured(Self.sleeper(directory))
        #expect(guestRun.outcome.exitStatus == 0)
        #expect(
            Self.names(localRun) == Self.names(guestRun),
            "local only: \(Self.names(localRun).subtracting(Self.names(guestRun))), guest only: \(Self.names(guestRun).subtracting(Self.names(localRun)))"
        )
        #expect(guestRun.metrics.allSatisfy { $0.detail?.contains("L2") == true }, "each guest metric says where it was measured")
        for run in [localRun, guestRun] {
            let times = run.samples.filter { $0.name == "mem_free_bytes" }.map(\.tMillis)
            if interval == nil {
                #expect(run.samples.isEmpty, "monitor off: no timeline")
                #expect(!run.metrics.contains { $0.name == "anon_huge_bytes_max" }, "monitor off: no sampler at all")
            } else {
                // Before, one per second while it runs, after: about the run's measured wall time + 2
                // (±1), counted up to a second past the process's end (with parallel suites the
                // monitor can be stopped seconds after the end; those later samples are not counted).
                let wall = try #require(run.metrics.first { $0.name == "wall_seconds" }?.value)
                let during = times.filter { Double($0) <= wall * 1000 + 1000 }
                #expect(abs(Double(during.count) - wall.rounded(.down) - 2) <= 1, "\(times) over \(wall) s")
            }
        }
    }

    @Test func helperStartsAndStopsThroughTheAgent() async throws {
        let directory = Fixtures.temporaryDirectory()
        let (guest, agentProcess) = try await Self.guestPlace(monitor: MonitorSettings(), spool: directory + "/spool")
        defer {
            agentProcess.kill()
            _ = agentProcess.waitBlocking()
        }
        let helper = try await guest.startHelper(
            ProcessSpec(program: "sleep", arguments: ["600"], environment: ["PATH": "/usr/bin:/bin"]))
        #expect(!helper.hasExited)
        let end = await helper.stop()
        #expect(helper.hasExited)
        #expect(end.description.contains("signal 9"), "\(end.description)")
        #expect(end.outcome?.signal == 9, "the usage the agent recorded when it reaped the helper")
        // A helper that ends on its own: its usage as the agent measured it (a Tailbench client's
        // `client.*` metrics in a guest).
        let busy = try await guest.startHelper(
            ProcessSpec(
                program: "sh", arguments: ["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exit 4"],
                environment: ["PATH": "/usr/bin:/bin"]))
        let busyEnd = await busy.ended()
        #expect(busyEnd.exitStatus == 4 && busyEnd.description == "exit 4 in L2", "\(busyEnd.description)")
        let outcome = try #require(busyEnd.outcome, "the agent's record carries the helper's usage")
        #expect(outcome.exitStatus == 4)
        #expect(outcome.usage.userSeconds + outcome.usage.systemSeconds > 0, "\(outcome.usage)")
        #expect(outcome.wallSeconds >= outcome.usage.userSeconds, "\(outcome)")
        #expect(outcome.usage.maxRSSKiB > 0)
        let text = try await guest.read("/proc/self/status")
        #expect(text.contains("Name:"))
        await #expect(throws: PlaceError.missing(place: "L2", path: "/proc/no-such-file")) {
            try await guest.read("/proc/no-such-file")
        }
    }
}

/// The guest side of the alignment probe with the real agent on this machine: the agent's probe
/// file (pagemap in large reads, kpageflags only for candidate frames) gives the same verdicts as
/// reading this machine's files directly, and a guest place probes nb-micro at its phase stop.
@Suite("alignment probe through the agent", .serialized)
struct AgentAlignmentTests {
    @Test(.enabled(if: getuid() == 0), .timeLimit(.minutes(3)))
    func agentProbeFileMatchesTheDirectProbeAndTheMicroIsProbedAtItsStop() async throws {
        let directory = Fixtures.temporaryDirectory()
        let (guest, agentProcess) = try await PlaceCollectorTests.guestPlace(
            monitor: MonitorSettings(intervalMillis: nil), spool: directory + "/spool")
        defer {
            agentProcess.kill()
            _ = agentProcess.waitBlocking()
        }
        // The agent's own process: heap, stacks, anonymous memory.
        let pid = agentProcess.pid
        let snapshot = try await StackAlignment.snapshot(
            agent: guest.agent, pid: pid, ranges: [], pageTables: true, kvm: true, failure: { nil })
        let viaAgent = try AlignmentProbe(files: snapshot).probe(pid: pid)
        let direct = try AlignmentProbe().probe(pid: pid)
        #expect(viaAgent.regions.map(\.virtualStart) == direct.regions.map(\.virtualStart))
        #expect(viaAgent.summary == direct.summary)
        #expect((snapshot.pageTableFrames?.count ?? 0) > 0, "this machine has page-table pages")
        // The same regions by their starts (the lower-layer form).
        let starts = direct.regions.map(\.virtualStart)
        let ranged = try await StackAlignment.snapshot(
            agent: guest.agent, pid: pid, ranges: StackAlignment.coalesced(starts), pageTables: false, kvm: false,
            failure: { nil })
        #expect(try AlignmentProbe(files: ranged).probe(pid: pid, regionStarts: starts).summary == direct.summary)

        // nb-micro through the guest place: stopped at its phase end, probed, continued.
        let binary = try await HarnessLocator().program("micro/nb-micro.c", name: "nb-micro")
        let run = try await guest.launchMeasured(
            ProcessSpec(
                program: binary, arguments: ["random", "--size", String(32 << 20), "--ops", "100000", "--thp", "nohuge"],
                environment: ["PATH": "/usr/bin:/bin"], workingDirectory: directory, stdoutPath: directory + "/out",
                timeoutSeconds: 60))
        #expect(run.outcome.exitStatus == 0)
        let stdout = (try? String(contentsOfFile: directory + "/out", encoding: .utf8)) ?? ""
        #expect(stdout.contains("info phase_stop 1"), "\(stdout)")
        let metrics = Dictionary(run.metrics.map { ($0.name, $0) }) { a, _ in a }
        let regions = try #require(metrics["align.regions"]?.value, "\(metrics["align.regions"]?.unavailable ?? "")")
        #expect(regions >= 16, "the 32 MiB buffer's regions")
        #expect(metrics["align.huge.L2"]?.value == 0, "MADV_NOHUGEPAGE: \(metrics["align.huge.L2"].debugDescription)")
        #expect(metrics["align.huge.L2"]?.detail?.contains("end of the measured phase") == true)
    }
}

@Suite("alignment across a stack: QMP pieces (pure)")
struct StackAlignmentPureTests {
    @Test func gpa2hvaThroughTheAgentsPassThrough() {
        #expect(
            HMP.command("gpa2hva 0x200000")
                == #"{"arguments":{"command-line":"gpa2hva 0x200000"},"execute":"human-monitor-command"}"#)
        #expect(
            HMP.gpa2hva(reply: #"{"return": "Host virtual address for 0x200000 (pc.ram) is 0x7fb2a8000000\r\n"}"#)
                == 0x7fb2_a800_0000)
        #expect(HMP.gpa2hva(reply: #"{"return": "Memory at address 0x10000000000 is not RAM\r\n"}"#) == nil)
        #expect(HMP.gpa2hva(reply: #"{"error": {"class": "GenericError", "desc": "x"}}"#) == nil)
    }

    @Test func regionStartsGoToTheAgentAsRuns() throws {
        let mb2: UInt64 = 2 << 20
        let runs = StackAlignment.coalesced([4 * mb2, 0, mb2, 4 * mb2, 7 * mb2])
        #expect(runs.map(\.start) == [0, 4 * mb2, 7 * mb2] && runs.map(\.length) == [2 * mb2, mb2, mb2])
        var r = AgentRequest(verb: .probe)
        r.pid = 7
        r.path = "/nb/.probe"
        r.ranges = runs
        r.pageTables = true
        r.kvm = true
        let text = try r.encoded()
        #expect(text.contains("verb probe\n") && text.contains("range 0x0 4194304\n") && text.contains("pgtable 1\nkvm 1\n"))
    }
}
