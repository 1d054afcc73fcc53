import Foundation
import TestSupport
import Testing

/// Runs the built `nestbench` binary as a user would and checks stdout, stderr and exit codes.
enum CLI {
    static let packageRoot: String = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { dir.deleteLastPathComponent() }
        return dir.path
    }()

    static var binary: String {
        ProcessInfo.processInfo.environment["NESTBENCH_BIN"] ?? packageRoot + "/.build/debug/nestbench"
    }

    /// Why the binary must not be run: missing, or older than an object file it is linked from
    /// (a module rebuilt since, e.g. `swift build --target X` then `swift test --skip-build`).
    /// nil when current. `swift test` and `swift build --build-tests` build it first (this target
    /// depends on it); sources edited but not built at all are not built into the tests either.
    static let stale: String? = {
        let fm = FileManager.default
        func date(_ path: String) -> Date? { (try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date }
        guard let built = date(binary) else {
            return "\(binary) does not exist: run `swift build --build-tests` (or `swift test` without --skip-build)"
        }
        // The objects the binary is linked from, as SwiftPM's link file list names them (not the
        // benchmark's or the fuzzer's modules, which the binary does not link).
        let list = binary + ".product/Objects.LinkFileList"
        guard let linked = try? String(contentsOfFile: list, encoding: .utf8) else {
            return "\(list) does not exist: run `swift build --build-tests` (or `swift test` without --skip-build)"
        }
        var newest: (Date, String)?
        for path in linked.split(separator: "\n").map(String.init) where path.hasSuffix(".o") {
            if let d = date(path), d > (newest?.0 ?? .distantPast) { newest = (d, path) }
        }
        guard let (object, path) = newest, object > built else { return nil }
        return
            "\(binary) is older than \(path), built since: a stale binary would test old code; run `swift build --build-tests` (or `swift test` without --skip-build)"
    }()

    struct StaleBinary: Error, CustomStringConvertible {
        var description: String
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func temporaryDirectory() -> String {
        let dir = NSTemporaryDirectory() + "nestbench-e2e-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// The machine lock a test's nestbench takes: its own, beside its state directory, so suites
    /// that run experiments in parallel do not refuse each other; the lock tests share one on
    /// purpose (`environment`).
    static func machineLock(state: String) -> String { state + "-machine.lock" }

    static func start(_ arguments: [String], state: String, environment: [String: String] = [:]) throws -> (
        Process, Pipe, Pipe
    ) {
        if ProcessInfo.processInfo.environment["NESTBENCH_BIN"] == nil, let stale { throw StaleBinary(description: stale) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = arguments
        p.currentDirectoryURL = URL(fileURLWithPath: packageRoot)
        var env = ProcessInfo.processInfo.environment
        env["NESTBENCH_STATE_DIR"] = state
        env["NESTBENCH_MACHINE_LOCK"] = machineLock(state: state)
        env["NO_COLOR"] = "1"
        env.merge(environment) { $1 }
        p.environment = env
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        return (p, out, err)
    }

    static func run(_ arguments: [String], state: String, environment: [String: String] = [:]) throws -> Result {
        let (p, out, err) = try start(arguments, state: state, environment: environment)
        // Read before waiting so a full pipe cannot block the child.
        let (o, e) = readAll(out, err)
        p.waitUntilExit()
        return Result(
            status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
            stderr: String(decoding: e, as: UTF8.self))
    }

    /// Both pipes read to their ends at the same time: a child blocked writing one full pipe while
    /// the other is read first never ends (a long run's stderr passes 64 KiB).
    static func readAll(_ out: Pipe, _ err: Pipe) -> (Data, Data) {
        final class Box: @unchecked Sendable { var data = Data() }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let handle = err.fileHandleForReading
        Thread {
            box.data = handle.readDataToEndOfFile()
            done.signal()
        }.start()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        return (o, box.data)
    }

    static func write(_ text: String, to path: String) {
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
    }

    static let thpEnabled = "/sys/kernel/mm/transparent_hugepage/enabled"

    static func thp() -> String {
        let text = (try? String(contentsOfFile: thpEnabled, encoding: .utf8)) ?? ""
        guard let o = text.firstIndex(of: "["), let c = text.firstIndex(of: "]") else { return text }
        return String(text[text.index(after: o)..<c])
    }

    static var canChangeTHP: Bool { getuid() == 0 && FileManager.default.isWritableFile(atPath: thpEnabled) }

    /// A small THP never-vs-always experiment of the micro.
    static func smallExperiment(size: String = "256MiB", ops: Int = 3_000_000, min: Int = 3, extra: String = "") -> String {
        """
        name: e2e
        baseline: thp-never
        seed: 11
        configurations:
          thp-never:
            host: {thp: {enabled: never}}
          thp-always:
            host: {thp: {enabled: always}}
        workloads:
          - {name: random-access, suite: micro, label: micro, params: {size: \(size), ops: \(ops)}, cpus: [0], timeout: 120s}
        conditions:
          clean: {compact: true}
        repetitions: {min: \(min), max: \(min)}
        \(extra)
        """
    }
}

/// Every test that changes machine state (THP knobs, memory, VMs) lives in a sub-suite of this one
/// (`extension MachineSuite { @Suite struct … }`), so that they never run at the same time; each
/// also holds `MachineStateLock`, which CoreTests' knob tests take too.
@Suite("changes machine state", .serialized, .machineStateLock)
enum MachineSuite {}

/// Holds `MachineStateLock` around each test of the suite it is applied to (and its sub-suites).
struct MachineStateLockTrait: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // Suites pass through; each test function (case) holds the lock while it runs.
        guard testCase != nil else { return try await function() }
        try await MachineStateLock.withLock { try await function() }
    }
}

extension Trait where Self == MachineStateLockTrait {
    static var machineStateLock: Self { Self() }
}

extension MachineSuite {
    @Suite("nestbench end to end")
    struct EndToEndTests {
        @Test(.timeLimit(.minutes(5)), .enabled(if: CLI.canChangeTHP, "writes THP knobs: needs root"))
        func microRunStoresReportsAndRestores() throws {
            let dir = CLI.temporaryDirectory()
            CLI.write(CLI.smallExperiment(), to: dir + "/e.yaml")
            let before = CLI.thp()
            let r = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/res", "--format", "json"], state: dir + "/state")
            #expect(r.status == 0, "stderr: \(r.stderr)")
            #expect(CLI.thp() == before, "THP knob not restored")
            #expect(r.stderr.contains("[6/6]"), "progress on stderr")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let runs = try #require(json["runs"] as? [[String: Any]])
            #expect(runs.count == 6)
            for run in runs {
                let metrics = try #require(run["metrics"] as? [String: Any])
                let huge = try #require(metrics["anon_huge_bytes"] as? Double)
                if run["configuration"] as? String == "thp-always" {
                    #expect(huge >= 0.9 * 256 * 1024 * 1024, "THP backs the buffer")
                } else {
                    #expect(huge == 0)
                }
                #expect(metrics["minor_faults"] is Double && metrics["wall_seconds"] is Double)
            }
            // report latest reads the same store.
            let again = try CLI.run(["report", "latest", "--results", dir + "/res", "--format", "json"], state: dir + "/state")
            #expect(again.status == 0)
            let j2 = try #require(try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])
            #expect(j2["run_id"] as? String == json["run_id"] as? String)
            let comparisons = try #require(j2["comparisons"] as? [[String: Any]])
            #expect(comparisons.contains { $0["metric"] as? String == "minor_faults" && $0["verdict"] as? String == "better" })
            let table = try CLI.run(["report", "--results", dir + "/res"], state: dir + "/state")
            #expect(table.stdout.contains("ops_per_sec") && table.stdout.contains("thp-always"))
        }

        @Test(.timeLimit(.minutes(2)))
        func badFilesGiveOneLineErrorsAndChangeNothing() throws {
            let dir = CLI.temporaryDirectory()
            let before = CLI.thp()
            let cases: [(String, String, String)] = [
                (CLI.smallExperiment().replacingOccurrences(of: "seed: 11", with: "seeed: 11"), "seeed", ":3:"),
                (
                    CLI.smallExperiment().replacingOccurrences(of: "{enabled: never}", with: "{enabled: 3}"),
                    "configurations.thp-never.host.thp.enabled", ":6:"
                ),
                (CLI.smallExperiment().replacingOccurrences(of: "baseline: thp-never\n", with: ""), "baseline", ":1:"),
                (
                    CLI.smallExperiment().replacingOccurrences(of: "random-access", with: "random-acces"),
                    "workloads[0].name", ":10:"
                ),
            ]
            for (index, (yaml, key, line)) in cases.enumerated() {
                let file = "\(dir)/bad\(index).yaml"
                CLI.write(yaml, to: file)
                let r = try CLI.run(["run", file, "--results", dir + "/res"], state: dir + "/state")
                #expect(r.status == 1, "\(key): \(r.stderr)")
                let lines = r.stderr.split(separator: "\n")
                #expect(lines.count == 1, "one line: \(r.stderr)")
                #expect(r.stderr.contains(file + line) && r.stderr.contains(key), "\(r.stderr)")
                #expect(r.stdout.isEmpty)
            }
            #expect(CLI.thp() == before)
            #expect(!FileManager.default.fileExists(atPath: dir + "/res/nestbench.sqlite"), "nothing stored")
        }

        @Test(.timeLimit(.minutes(3)), .enabled(if: CLI.canChangeTHP, "writes THP knobs: needs root"))
        func ctrlCRestoresKnobsAndKeepsCompletedRuns() async throws {
            let dir = CLI.temporaryDirectory()
            CLI.write(CLI.smallExperiment(size: "512MiB", ops: 40_000_000, min: 20), to: dir + "/e.yaml")
            let before = CLI.thp()
            let (p, out, err) = try CLI.start(["run", dir + "/e.yaml", "--results", dir + "/res"], state: dir + "/state")
            // Wait until at least two runs are stored, then interrupt.
            let deadline = ContinuousClock.now + .seconds(90)
            while ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                let list = try CLI.run(
                    ["report", "--results", dir + "/res", "--format", "json", "--include-incomplete"], state: dir + "/other")
                if let j = try? JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [String: Any],
                    let runs = j["runs"] as? [Any], runs.count >= 2
                {
                    break
                }
            }
            #expect(CLI.thp() == "never" || CLI.thp() == "always", "an experiment configuration is active")
            p.interrupt()
            let stderr = String(decoding: CLI.readAll(out, err).1, as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 130, "\(stderr)")
            #expect(CLI.thp() == before, "THP knob restored on Ctrl-C")
            let r = try CLI.run(
                ["report", "--results", dir + "/res", "--format", "json", "--include-incomplete"], state: dir + "/state")
            let j = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            #expect(j["status"] as? String == "interrupted")
            #expect((j["runs"] as? [Any])?.count ?? 0 >= 2)
            #expect(!FileManager.default.fileExists(atPath: dir + "/state/knob-journal.json"))
        }

        @Test(.timeLimit(.minutes(3)), .enabled(if: CLI.canChangeTHP, "writes THP knobs: needs root"))
        func killNineKeepsRunsAndNextInvocationRestores() async throws {
            let dir = CLI.temporaryDirectory()
            CLI.write(CLI.smallExperiment(size: "512MiB", ops: 40_000_000, min: 20), to: dir + "/e.yaml")
            let before = CLI.thp()
            let (p, _, _) = try CLI.start(["run", dir + "/e.yaml", "--results", dir + "/res"], state: dir + "/state")
            var stored = 0
            let deadline = ContinuousClock.now + .seconds(90)
            while ContinuousClock.now < deadline && stored < 2 {
                try await Task.sleep(for: .milliseconds(200))
                let list = try CLI.run(
                    ["report", "--results", dir + "/res", "--format", "json", "--include-incomplete"], state: dir + "/other")
                if let j = try? JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [String: Any] {
                    stored = (j["runs"] as? [Any])?.count ?? 0
                }
            }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            #expect(stored >= 2)
            let r = try CLI.run(
                ["report", "--results", dir + "/res", "--format", "json", "--include-incomplete"], state: dir + "/state")
            let j = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            #expect((j["runs"] as? [Any])?.count ?? 0 >= stored, "completed runs survive kill -9")
            #expect(j["status"] as? String == "killed", "the next invocation marks the experiment run killed")
            let plain = try CLI.run(["report", "--results", dir + "/res"], state: dir + "/state")
            #expect(plain.status == 1 && plain.stderr.contains("killed") && plain.stderr.contains("--include-incomplete"))
            if CLI.thp() != before {
                let restore = try CLI.run(["restore"], state: dir + "/state")
                #expect(restore.status == 0, "\(restore.stderr)")
                #expect(restore.stdout.contains(CLI.thpEnabled))
            }
            #expect(CLI.thp() == before, "THP knob restored by the next invocation")
        }

        @Test func reportOfMissingRunExits5() throws {
            let dir = CLI.temporaryDirectory()
            let r = try CLI.run(["report", "nope", "--results", dir], state: dir + "/state")
            #expect(r.status == 5)
            #expect(r.stderr.contains("nestbench.sqlite"))
        }
    }
}
