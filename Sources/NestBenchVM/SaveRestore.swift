import Foundation
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess

/// Saving and restoring a running guest (`save_restore:`), eagerly: its agent detaches from its
/// 9p share (QEMU refuses to migrate while a 9p export is mounted in the guest), the VM is
/// stopped and migrated into an image file handed to QEMU with `getfd` (`migrate fd:NAME`), the
/// QEMU quits; a new QEMU with the same command line and `-incoming defer` loads the image
/// (`migrate-incoming fd:NAME`), its vCPUs are pinned again and it continues; the doorbell (a
/// virtio-serial port) tells the agent to mount its share again. Only for `detachable:` guests
/// whose QEMU runs on this machine.
extension GuestPlace: SaveRestorePlace {
    public func saveAndRestore(_ mode: SaveRestoreSpec.Mode) async throws(PlaceError) -> SaveRestoreTimes {
        guard let stack, let index = stack.layers.firstIndex(where: { $0.name == name }) else {
            throw .unsupported(place: name, what: "be saved and restored: it is not a layer of a booted stack")
        }
        let layer = stack.layers[index]
        guard layer.parent == nil, let bell = layer.doorbellSocket else {
            throw .unsupported(
                place: name,
                what:
                    "be saved and restored: it needs detachable: true and its QEMU on this machine (L1 with L0 this machine)")
        }
        let outcome: Result<SaveRestoreTimes, any Error> =
            switch mode {
            case .eager: await SaveRestore.run(stack: stack, index: index, doorbell: bell)
            case .lazy: await SaveRestore.runLazy(stack: stack, index: index, doorbell: bell)
            }
        switch outcome {
        case .success(let times): return times
        case .failure(let error):
            stack.markBroken("\(name): save/restore failed: \(error)")
            throw .failed(place: name, message: "save/restore: \(error)")
        }
    }
}

enum SaveRestore {
    struct MigrationInfo: Decodable {
        var status: String?
        struct Stats: Decodable { var transferred: UInt64? }
        var ram: Stats?
        enum CodingKeys: String, CodingKey {
            case status, ram
            case errorDescription = "error-desc"
        }
        var errorDescription: String?
    }
    struct URI: Encodable { var uri: String }

    static func seconds(since start: ContinuousClock.Instant) -> Double { (ContinuousClock.now - start).seconds }

    /// `query-migrate` until it reports `completed` (an error for `failed`/`cancelled`, or after
    /// `timeout` seconds).
    static func waitForMigration(_ client: QMPClient, what: String, timeout: Double) async throws -> MigrationInfo {
        let deadline = ContinuousClock.now + .seconds(timeout)
        while true {
            let info = try client.execute(
                "query-migrate", arguments: QMPMessage.NoArguments?.none, returning: MigrationInfo.self)
            switch info.status {
            case "completed": return info
            case "failed", "cancelled":
                throw VMError("\(what): migration \(info.status ?? "?"): \(info.errorDescription ?? "no description")")
            default:
                if ContinuousClock.now > deadline {
                    throw VMError("\(what): not done within \(Int(timeout)) s (status \(info.status ?? "none"))")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// `migrate fd:nbsave`; while QEMU still refuses for the 9p export (the agent is unmounting
    /// it right after its answer), the guest runs 100 ms more and it is tried again (30 s at most).
    static func startMigration(_ client: QMPClient, to uri: String = "fd:nbsave") async throws {
        var attempt = 0
        while true {
            let refused: QMPError
            do {
                _ = try client.execute("migrate", arguments: URI(uri: uri), returning: QMPMessage.Ignored.self)
                return
            } catch {
                refused = error
            }
            attempt += 1
            guard refused.message.contains("VirtFS"), attempt < 300 else { throw refused }
            try client.execute("cont")
            try await Task.sleep(for: .milliseconds(100))
            try client.execute("stop")
        }
    }

    static func open(_ path: String, writing: Bool) throws -> Int32 {
        let fd =
            writing
            ? Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) : Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw VMError("\(path): \(String(cString: strerror(errno)))") }
        return fd
    }

    /// Opens `path` and hands the descriptor to QEMU as `name` (QMP `getfd`); ours is closed
    /// either way (QEMU holds its own copy).
    static func handOver(_ path: String, writing: Bool, to client: QMPClient, as name: String) throws {
        let fd = try open(path, writing: writing)
        defer { close(fd) }
        try client.getfd(fd, name: name)
    }

    /// The doorbell: the agent mounts its share again and says when it heard it (the guest's
    /// clock then).
    static func ringDoorbell(_ doorbell: String, name: String, resumed: String) async throws -> Double {
        let bell = try UnixSocketTransport(path: doorbell, timeout: 20)
        try bell.send("r")
        let deadline = ContinuousClock.now + .seconds(120)
        var text: String?
        while text == nil {
            if let data = FileManager.default.contents(atPath: resumed) { text = String(decoding: data, as: UTF8.self) }
            if text == nil && ContinuousClock.now > deadline {
                throw VMError("\(name): the agent did not come back within 120 s of the doorbell (\(resumed))")
            }
            if text == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        try? FileManager.default.removeItem(atPath: resumed)
        let fields = AgentResponse.parse(text ?? "")
        if let error = fields.error { throw VMError("\(name): after the restore: \(error)") }
        guard let guestResumed = fields.double("clock") else { throw VMError("\(name): \(resumed) has no clock") }
        _ = bell
        return guestResumed
    }

    /// Starts the restoring QEMU (`argv`, its output in the layer's `.restore.qemu.log`) and makes it
    /// the layer's QEMU in the stack, which then kills it with the stack; killed here if that fails.
    static func startRestoring(_ argv: [String], stack: QemuStack, index: Int, socketDirectory: String) throws
        -> RunningProcess
    {
        let qemuLog = stack.layers[index].qemuLog
        let log = qemuLog.isEmpty ? "/dev/null" : qemuLog.replacingOccurrences(of: ".qemu.log", with: ".restore.qemu.log")
        let running = try ProcessRunner.start(
            ProcessSpec(
                program: argv[0], arguments: Array(argv.dropFirst()),
                environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], stdoutPath: log, stderrPath: log))
        do {
            try running.release()
        } catch {
            running.kill()
            _ = running.waitBlocking()
            throw error
        }
        stack.replaced(layer: index, by: .host(running, socketDirectory: socketDirectory))
        return running
    }

    /// Connects to the layer's QMP, sets the `postcopy-ram` capability as asked and stops the VM;
    /// the client and the instant of the stop.
    static func stop(_ layer: BootedLayer, postcopy: Bool) throws -> (QMPClient, ContinuousClock.Instant) {
        let client = QMPClient(transport: try UnixSocketTransport(path: layer.qmpSocket, timeout: 20), name: layer.name)
        try client.handshake()
        _ = try client.execute(
            "migrate-set-capabilities", arguments: Capabilities.postcopy(postcopy), returning: QMPMessage.Ignored.self)
        try client.execute("stop")
        return (client, ContinuousClock.now)
    }

    /// The agent detached from its share (it answers, then unmounts it and waits on the doorbell);
    /// the guest's clock then.
    static func detach(_ layer: BootedLayer, stack: QemuStack) async throws -> Double {
        var detach = AgentRequest(verb: .detach)
        detach.path = QemuCommandLine.doorbellPort
        let answer = try await layer.agent.send(detach, timeout: 60, failure: stack.deadReason)
        guard let clock = answer.double("clock") else { throw VMError("\(layer.name): detach: no clock in the answer") }
        return clock
    }

    /// Pins the vCPU threads QMP reports to the layer's requested CPUs.
    static func pin(_ client: QMPClient, _ layer: BootedLayer, after what: String) throws {
        for thread in try client.vcpuThreads() where thread.cpuIndex < layer.requestedPinning.count {
            let cpu = layer.requestedPinning[thread.cpuIndex]
            if !Affinity.set(thread.threadID, to: [cpu]) {
                throw VMError("\(layer.name): pinning vCPU \(thread.cpuIndex) to CPU \(cpu) after \(what) failed")
            }
        }
    }

    static func run(stack: QemuStack, index: Int, doorbell: String) async -> Result<SaveRestoreTimes, any Error> {
        let layer = stack.layers[index]
        let name = layer.name
        let image = "\(stack.directory)/\(name).save.img"
        let resumed = "\(layer.agent.spool)/resumed"
        defer { try? FileManager.default.removeItem(atPath: image) }
        var restored: RunningProcess?
        // The QMP/doorbell sockets' directory while no QEMU of the stack holds it (the stack's
        // teardown removes it with the QEMU that does).
        var orphaned: String?
        do {
            guard let old = stack.hostProcess(pid: layer.qemuPID), case .host(let oldRunning, let socketDirectory) = old
            else { throw VMError("\(name): its QEMU (pid \(layer.qemuPID)) is not one NestBench runs on this machine") }
            try? FileManager.default.removeItem(atPath: resumed)
            let guestDetached = try await detach(layer, stack: stack)
            // Save: stop, migrate into the image, quit.
            // The agent unmounts its share right after answering: give it until QEMU lifts its
            // migration blocker (a `migrate` refused for the 9p export is tried again). Into a
            // file: no postcopy (a QEMU restored lazily before may still have it on).
            let (client, stopped) = try stop(layer, postcopy: false)
            try handOver(image, writing: true, to: client, as: "nbsave")
            try await startMigration(client)
            _ = try await waitForMigration(client, what: "\(name): saving to \(image)", timeout: 600)
            stack.forget(old)
            orphaned = socketDirectory
            _ = try? client.execute("quit")
            _ = await oldRunning.wait()
            let saveSeconds = seconds(since: stopped)
            guard let imageBytes = (try? FileManager.default.attributesOfItem(atPath: image))?[.size] as? UInt64 else {
                throw VMError("\(image): cannot read the saved image's size")
            }
            for socket in [layer.qmpSocket, doorbell] { try? FileManager.default.removeItem(atPath: socket) }

            // Restore (eager): the same command line, waiting for the image.
            let restoreBegan = ContinuousClock.now
            let restoreStart = (restoreBegan - stopped).seconds
            restored = try startRestoring(
                QemuCommandLine.restoring(layer.argv), stack: stack, index: index, socketDirectory: socketDirectory)
            orphaned = nil
            let incoming = QMPClient(transport: try UnixSocketTransport(path: layer.qmpSocket, timeout: 60), name: name)
            try incoming.handshake()
            try handOver(image, writing: false, to: incoming, as: "nbimg")
            _ = try incoming.execute("migrate-incoming", arguments: URI(uri: "fd:nbimg"), returning: QMPMessage.Ignored.self)
            _ = try await waitForMigration(incoming, what: "\(name): restoring from \(image)", timeout: 600)
            try pin(incoming, layer, after: "the restore")
            try incoming.execute("cont")
            let restoreSeconds = seconds(since: restoreBegan)
            restored = nil  // the stack owns it now
            let guestResumed = try await ringDoorbell(doorbell, name: name, resumed: resumed)
            return .success(
                SaveRestoreTimes(
                    guestDetached: guestDetached, guestResumed: guestResumed, saveSeconds: saveSeconds,
                    restoreStart: restoreStart, restoreSeconds: restoreSeconds, imageBytes: imageBytes))
        } catch {
            // The restored QEMU, when it did not get to run: killed (the stack is marked broken
            // and torn down by its owner, which reaps what it still holds).
            if let restored {
                restored.kill()
                _ = await restored.wait()
            }
            if let orphaned { try? FileManager.default.removeItem(atPath: orphaned) }
            return .failure(error)
        }
    }

    struct Capabilities: Encodable {
        struct Capability: Encodable {
            var capability: String
            var state: Bool
        }
        var capabilities: [Capability]
        static func postcopy(_ on: Bool) -> Capabilities {
            Capabilities(capabilities: [Capability(capability: "postcopy-ram", state: on)])
        }
    }
    struct RunState: Decodable { var status: String }

    /// Lazy: the guest moves to a new QEMU (same command line, `-incoming defer`, its QMP and
    /// doorbell sockets beside the old ones) by postcopy migration over a unix socket: the old VM
    /// is stopped, its device state moved, the new one pinned and continued at once, and its pages
    /// come over on demand (userfaultfd) and in the background until the migration completes;
    /// then the old QEMU quits and the new one's sockets take the old paths.
    static func runLazy(stack: QemuStack, index: Int, doorbell: String) async -> Result<SaveRestoreTimes, any Error> {
        let layer = stack.layers[index]
        let name = layer.name
        let resumed = "\(layer.agent.spool)/resumed"
        // Names of their own: a QEMU removes its sockets' paths when it quits, and the old one may
        // itself be a lazy restore's, started with temporary names.
        let suffix = ".lazy-" + UUID().uuidString.prefix(8)
        let qmpNew = layer.qmpSocket + suffix
        let bellNew = doorbell + suffix
        var stream = ""
        do {
            guard let old = stack.hostProcess(pid: layer.qemuPID), case .host(let oldRunning, let socketDirectory) = old
            else { throw VMError("\(name): its QEMU (pid \(layer.qemuPID)) is not one NestBench runs on this machine") }
            // Beside the QMP socket: a short path (a unix socket's is at most 107 bytes).
            stream = "\(socketDirectory)/migrate"
            try? FileManager.default.removeItem(atPath: resumed)
            try? FileManager.default.removeItem(atPath: stream)
            let guestDetached = try await detach(layer, stack: stack)
            // Both QEMUs are the stack's from now on: a teardown (Ctrl-C, failure) kills both.
            _ = try startRestoring(
                QemuCommandLine.movingSockets(
                    QemuCommandLine.restoring(layer.argv), qmp: (layer.qmpSocket, qmpNew), doorbell: (doorbell, bellNew)),
                stack: stack, index: index, socketDirectory: socketDirectory)
            let incoming = QMPClient(transport: try UnixSocketTransport(path: qmpNew, timeout: 60), name: name)
            try incoming.handshake()
            _ = try incoming.execute(
                "migrate-set-capabilities", arguments: Capabilities.postcopy(true), returning: QMPMessage.Ignored.self)
            _ = try incoming.execute(
                "migrate-incoming", arguments: URI(uri: "unix:\(stream)"), returning: QMPMessage.Ignored.self)
            let (client, stopped) = try stop(layer, postcopy: true)
            try await startMigration(client, to: "unix:\(stream)")
            try client.execute("migrate-start-postcopy")
            // The new VM has the device state (paused: its command line has -S) once its runstate
            // leaves `inmigrate`.
            let deadline = ContinuousClock.now + .seconds(300)
            while try incoming.execute("query-status", arguments: QMPMessage.NoArguments?.none, returning: RunState.self)
                .status == "inmigrate"
            {
                let info = try client.execute(
                    "query-migrate", arguments: QMPMessage.NoArguments?.none, returning: MigrationInfo.self)
                if ["failed", "cancelled"].contains(info.status ?? "") {
                    throw VMError(
                        "\(name): postcopy migration \(info.status ?? "?"): \(info.errorDescription ?? "no description")")
                }
                if ContinuousClock.now > deadline { throw VMError("\(name): the new QEMU did not take over within 300 s") }
                try await Task.sleep(for: .milliseconds(20))
            }
            try pin(incoming, layer, after: "the lazy restore")
            try incoming.execute("cont")
            let restoreSeconds = seconds(since: stopped)
            let guestResumed = try await ringDoorbell(bellNew, name: name, resumed: resumed)
            // Every page over: the old QEMU has nothing left to give and quits.
            let done = try await waitForMigration(client, what: "\(name): postcopy to the new QEMU", timeout: 600)
            let postcopySeconds = seconds(since: stopped)
            stack.forget(old)
            _ = try? client.execute("quit")
            _ = await oldRunning.wait()
            try? FileManager.default.removeItem(atPath: stream)
            // The new QEMU migrates with its defaults next time (an eager save into a file has no
            // return path for postcopy).
            _ = try incoming.execute(
                "migrate-set-capabilities", arguments: Capabilities.postcopy(false), returning: QMPMessage.Ignored.self)
            for (socket, moved) in [(layer.qmpSocket, qmpNew), (doorbell, bellNew)] {
                try? FileManager.default.removeItem(atPath: socket)
                guard rename(moved, socket) == 0 else {
                    throw VMError("\(name): \(moved) → \(socket): \(String(cString: strerror(errno)))")
                }
            }
            return .success(
                SaveRestoreTimes(
                    guestDetached: guestDetached, guestResumed: guestResumed, saveSeconds: nil, restoreStart: 0,
                    restoreSeconds: restoreSeconds, imageBytes: nil, postcopySeconds: postcopySeconds,
                    transferredBytes: done.ram?.transferred))
        } catch {
            if !stream.isEmpty { try? FileManager.default.removeItem(atPath: stream) }
            return .failure(error)
        }
    }
}
