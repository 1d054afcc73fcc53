import Foundation
import Testing

/// Pinned CPUs this machine cannot give: a preflight error (also with --dry-run); and a workload
/// whose pinning fails between fork and exec (its cpuset shrank after preflight) is a failed run
/// with the errno, the experiment goes on, the knobs are restored, nestbench does not die of SIGPIPE.
extension MachineSuite {
    @Suite("pre-exec failures")
    struct PreExecFailureTests {
        static let allowed: [Int] = {
            // The CPUs the test process may use, as `taskset -p` would say: a CPU beyond them is "missing".
            let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
            let line = text.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") } ?? ""
            let list = line.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            var cpus: [Int] = []
            for part in list.split(separator: ",") {
                let b = part.split(separator: "-").compactMap { Int($0) }
                if b.count == 2 { cpus += Array(b[0]...b[1]) } else if b.count == 1 { cpus.append(b[0]) }
            }
            return cpus
        }()

        static func experiment(cpus: String, min: Int = 2, knobs: [String]) -> String {
            """
            name: pinning
            baseline: a
            seed: 5
            configurations:
              a: {host: {sysctl: {kernel.printk_ratelimit: "\(knobs[0])"}}}
              b: {host: {sysctl: {kernel.printk_ratelimit: "\(knobs[1])"}}}
            workloads:
              - {name: random-access, suite: micro, params: {size: 4MiB, ops: 20000}, cpus: \(cpus), timeout: 30s}
            repetitions: {min: \(min), max: \(min)}
            """
        }

        static let knob = "/proc/sys/kernel/printk_ratelimit"
        static var canWrite: Bool { getuid() == 0 && FileManager.default.isWritableFile(atPath: knob) }

        static func current() -> String {
            ((try? String(contentsOfFile: knob, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        }

        @Test(.timeLimit(.minutes(2)))
        func missingCPUIsAPreflightErrorAlsoInDryRun() throws {
            let missing = (Self.allowed.max() ?? 0) + 5
            let dir = CLI.temporaryDirectory()
            let before = Self.current()
            CLI.write(Self.experiment(cpus: "[\(missing)]", knobs: ["6", "7"]), to: dir + "/e.yaml")
            for extra in [[], ["--dry-run"]] {
                let r = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/res"] + extra, state: dir + "/state")
                #expect(r.status == 1, "\(extra): \(r.stderr)")
                #expect(r.stderr.contains("workloads[0]") && r.stderr.contains("CPU \(missing)"), "\(extra): \(r.stderr)")
                #expect(r.stderr.contains("affinity mask"), "names where the allowed CPUs come from: \(r.stderr)")
                if extra.isEmpty {
                    #expect(!FileManager.default.fileExists(atPath: dir + "/res/nestbench.sqlite"), "nothing stored")
                } else {
                    #expect(r.stderr.contains("preflight (as run would check it on this machine)"))
                }
            }
            #expect(Self.current() == before)
        }

        /// The cgroup v1 cpuset hierarchy (this machine's layout); skipped where there is none.
        static let cpusetRoot = "/sys/fs/cgroup/cpuset"
        static var canUseCpuset: Bool {
            canWrite && allowed.count >= 2 && FileManager.default.isWritableFile(atPath: cpusetRoot + "/cgroup.procs")
        }

        static func write(_ value: String, _ path: String) -> Bool {
            guard let h = FileHandle(forWritingAtPath: path) else { return false }
            defer { try? h.close() }
            return (try? h.write(contentsOf: Data(value.utf8))) != nil
        }

        @Test(.timeLimit(.minutes(3)), .enabled(if: canUseCpuset, "needs root, two CPUs and a cgroup v1 cpuset hierarchy"))
        func pinningFailingAtRunTimeIsAFailedRunAndTheExperimentGoesOn() async throws {
            let dir = CLI.temporaryDirectory()
            let before = Self.current()
            let pinned = Self.allowed[1]
            CLI.write(Self.experiment(cpus: "[\(pinned)]", min: 8, knobs: ["6", "7"]), to: dir + "/e.yaml")
            let (p, out, err) = try CLI.start(
                ["run", dir + "/e.yaml", "--results", dir + "/res", "--fixed-repetitions", "--format", "json"],
                state: dir + "/state")
            // After the first stored run (preflight passed), the cpuset shrinks to the other CPU.
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
                let r = try CLI.run(
                    ["report", "--results", dir + "/res", "--format", "json", "--include-incomplete"], state: dir + "/other")
                if let j = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
                    let runs = j["runs"] as? [Any], runs.count >= 1
                {
                    break
                }
            }
            let group = Self.cpusetRoot + "/nestbench-test-\(getpid())-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: group, withIntermediateDirectories: false)
            defer {
                _ = Self.write("\(p.processIdentifier)", Self.cpusetRoot + "/cgroup.procs")
                try? FileManager.default.removeItem(atPath: group)
            }
            let other = Self.allowed.first { $0 != pinned }!
            #expect(Self.write("\(other)", group + "/cpuset.cpus"))
            let mems = (try? String(contentsOfFile: Self.cpusetRoot + "/cpuset.mems", encoding: .utf8)) ?? "0"
            #expect(Self.write(mems.trimmingCharacters(in: .whitespacesAndNewlines), group + "/cpuset.mems"))
            #expect(Self.write("\(p.processIdentifier)", group + "/cgroup.procs"), "moved nestbench into the cpuset")
            let (stdout, errData) = CLI.readAll(out, err)
            let stderr = String(decoding: errData, as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationReason == .exit, "not killed by a signal (SIGPIPE): \(stderr)")
            #expect(p.terminationStatus == 3, "some runs failed: \(stderr)")
            #expect(Self.current() == before, "knob restored")
            let j = try #require(try JSONSerialization.jsonObject(with: stdout) as? [String: Any], "\(stderr)")
            #expect(j["status"] as? String == "completed")
            let runs = try #require(j["runs"] as? [[String: Any]])
            #expect(runs.count == 16, "every planned run is recorded")
            let failed = runs.filter { $0["status"] as? String == "failed" }
            #expect(!failed.isEmpty)
            for run in failed {
                let reason = run["reason"] as? String ?? ""
                #expect(reason.contains("pinning to CPUs \(pinned)") && reason.contains("Invalid argument"), "\(reason)")
            }
        }
    }
}

@Suite("experiment-run statuses")
struct StatusTests {
    /// Every run unavailable at run time (a colocated pair needs a stack's guests; these
    /// configurations are this machine), though preflight found each workload runnable: the
    /// experiment run is `nothing-ran`, not `completed`, and report leaves it out unless asked.
    /// (A workload unavailable at preflight — PARSEC not fetched — stops the run before it starts.)
    @Test(.timeLimit(.minutes(2)))
    func nothingRanIsNotCompleted() throws {
        let dir = CLI.temporaryDirectory()
        CLI.write(
            """
            name: none
            baseline: a
            configurations:
              a: {host: {}}
              b: {host: {}}
            workloads:
              - {label: pair, colocate: [{name: compute, suite: micro, params: {ops: 1000}}, {name: compute, suite: micro, params: {ops: 1000}}]}
            repetitions: {min: 2, max: 2}
            """, to: dir + "/e.yaml")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = ["run", dir + "/e.yaml", "--results", dir + "/res"]
        var env = ProcessInfo.processInfo.environment
        env["NESTBENCH_STATE_DIR"] = dir + "/state"
        env["NESTBENCH_MACHINE_LOCK"] = CLI.machineLock(state: dir + "/state")
        env["NESTBENCH_CACHE"] = dir + "/cache"
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        let list = try CLI.run(["list", "--results", dir + "/res"], state: dir + "/state")
        #expect(list.stdout.contains("\tnothing-ran\t4 runs"), "\(list.stdout)")
        let report = try CLI.run(["report", "--results", dir + "/res"], state: dir + "/state")
        #expect(report.status == 1 && report.stderr.contains("nothing-ran, not completed"), "\(report.stderr)")
        let forced = try CLI.run(["report", "--results", dir + "/res", "--include-incomplete"], state: dir + "/state")
        #expect(forced.status == 0, "\(forced.stderr)")
    }
}
