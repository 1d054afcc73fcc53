import Foundation
import Testing

/// `run --resume` after a kill -9, and the store and machine locks. The experiments here change
/// no knob (two configurations of the micro with no settings), so they need no root.
@Suite("resume and locks", .serialized)
struct ResumeAndLockTests {
    /// A 12-run experiment (2 configurations × 6 repetitions, fixed) whose runs take about a second.
    static func experiment(ops: Int = 12_000_000, min: Int = 6, max: Int = 6) -> String {
        """
        name: e2e-resume
        baseline: a
        seed: 11
        configurations:
          a: {}
          b: {}
        workloads:
          - {name: random-access, suite: micro, label: micro, params: {size: 64MiB, ops: \(ops)}, timeout: 120s}
        conditions:
          clean: {}
        repetitions: {min: \(min), max: \(max)}
        """
    }

    static func json(_ text: String) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
    }

    /// The holder a lock file names once it has written its experiment run in (within 60 s),
    /// as JSON; empty if it never did.
    static func holder(of lockFile: String) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let data = FileManager.default.contents(atPath: lockFile), let j = json(String(decoding: data, as: UTF8.self)),
                j["run"] != nil
            {
                return j
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return [:]
    }

    /// The stored runs of the latest experiment run (all statuses), or nil before there is one.
    static func storedRuns(_ results: String, state: String) throws -> [[String: Any]]? {
        let r = try CLI.run(["report", "--results", results, "--format", "json", "--include-incomplete"], state: state)
        return json(r.stdout)?["runs"] as? [[String: Any]]
    }

    /// (configuration, repetition) of a JSON run.
    static func key(_ run: [String: Any]) -> String {
        "\(run["configuration"] as? String ?? "?")#\(run["repetition"] as? Int ?? -1)"
    }

    /// The shape of a JSON report: every comparison's (workload, condition, configuration, metric).
    static func shape(_ report: [String: Any]) -> Set<String> {
        Set(
            (report["comparisons"] as? [[String: Any]] ?? []).map { c in
                ["workload", "condition", "configuration", "metric"].map { k in "\(c[k] ?? "-")" }.joined(separator: "|")
            })
    }

    @Test(.timeLimit(.minutes(6)))
    func killNineThenResumeLatestRunsEachPlannedRunOnce() async throws {
        let dir = CLI.temporaryDirectory()
        CLI.write(Self.experiment(ops: 60_000_000), to: dir + "/e.yaml")
        // The uninterrupted run: the shape a resumed run's report must have.
        let whole = try CLI.run(
            ["run", dir + "/e.yaml", "--results", dir + "/whole", "--format", "json"], state: dir + "/state")
        #expect(whole.status == 0, "\(whole.stderr)")
        let wholeReport = try #require(Self.json(whole.stdout))
        #expect((wholeReport["runs"] as? [Any])?.count == 12)

        let (p, out, err) = try CLI.start(["run", dir + "/e.yaml", "--results", dir + "/res"], state: dir + "/state")
        // Its progress on stderr, read as it comes: "[5/12] …" is printed as the 5th run starts.
        let progress = StreamText(err.fileHandleForReading)
        let drain = StreamText(out.fileHandleForReading)
        // In the middle of the 5th run (each takes about a second or more), killed from a thread of
        // its own: a test task starved on a loaded machine once killed after the last run.
        progress.kill(p.processIdentifier, whenSeen: "[5/12]", afterMillis: 150, timeoutSeconds: 180)
        p.waitUntilExit()
        _ = drain.text
        #expect(progress.markerSeen, "the 5th run started: \(progress.text)")
        let atKill = try #require(try Self.storedRuns(dir + "/res", state: dir + "/other"))
        // At least the 4 runs before the 5th; the killing thread may be scheduled a little late,
        // but not by a whole run (the exactly-once checks below hold wherever the kill lands).
        #expect((4..<12).contains(atKill.count), "killed in the middle of the experiment: \(atKill.count) runs stored")

        let listed = try CLI.run(["list", "--results", dir + "/res"], state: dir + "/state")
        #expect(listed.stdout.contains("killed") && listed.stdout.contains("--resume"), "\(listed.stdout)")

        let resumed = try CLI.run(
            ["run", dir + "/e.yaml", "--results", dir + "/res", "--resume", "latest", "--format", "json"],
            state: dir + "/state")
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("resuming experiment run"))
        let report = try #require(Self.json(resumed.stdout))
        #expect(report["status"] as? String == "completed")
        let runs = try #require(report["runs"] as? [[String: Any]])
        let interrupted = runs.filter { $0["status"] as? String == "interrupted" }
        let others = runs.filter { $0["status"] as? String != "interrupted" }
        // Each planned run exactly once, plus the one in flight, marked interrupted.
        #expect(interrupted.count == 1, "the run in flight is stored interrupted: \(runs.map { $0["status"] ?? "-" })")
        #expect(others.count == 12)
        #expect(Set(others.map(Self.key)).count == 12, "no planned run twice: \(others.map(Self.key))")
        #expect(others.allSatisfy { $0["status"] as? String == "ok" })
        if let lost = interrupted.first { #expect(others.contains { Self.key($0) == Self.key(lost) }, "run again") }
        // The run in flight carries the testbed its attempt ran on: one testbed with every run.
        func testbed(_ run: [String: Any]) -> String? { (run["provenance"] as? [String: String])?["testbed"] }
        #expect(interrupted.allSatisfy { testbed($0) != nil && testbed($0) == testbed(others[0]) }, "\(interrupted)")
        let testbeds = try #require(report["testbeds"] as? [[String: Any]])
        #expect(testbeds.count == 1 && testbeds.first?["runs"] as? Int == runs.count, "\(testbeds)")
        // The runs stored before the kill are kept as they were.
        #expect(Set(atKill.map(Self.key)).isSubset(of: Set(runs.map(Self.key))))
        #expect(!Self.shape(report).isEmpty)
        #expect(Self.shape(report) == Self.shape(wholeReport), "the same report shape as an uninterrupted run")
        #expect(
            (report["comparisons"] as? [[String: Any]])?.count == (wholeReport["comparisons"] as? [[String: Any]])?.count)

        // Nothing left to resume: a completed run is refused.
        let again = try CLI.run(
            ["run", dir + "/e.yaml", "--results", dir + "/res", "--resume", "latest"], state: dir + "/state")
        #expect(again.status == 1 && again.stderr.contains("completed: nothing to resume"), "\(again.stderr)")
    }

    @Test(.timeLimit(.minutes(4)))
    func resumeRefusesAChangedExperimentNamingTheChange() async throws {
        let dir = CLI.temporaryDirectory()
        CLI.write(Self.experiment(ops: 40_000_000, min: 4, max: 4), to: dir + "/e.yaml")
        let (p, out, err) = try CLI.start(["run", dir + "/e.yaml", "--results", dir + "/res"], state: dir + "/state")
        let progress = StreamText(err.fileHandleForReading)
        let drain = StreamText(out.fileHandleForReading)
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline && !progress.text.contains("[2/8]") {
            try await Task.sleep(for: .milliseconds(20))
        }
        _ = drain.text
        p.interrupt()
        p.waitUntilExit()
        #expect(p.terminationStatus == 130, "\(progress.text)")
        CLI.write(
            Self.experiment(ops: 40_000_000, min: 4, max: 4).replacingOccurrences(of: "size: 64MiB", with: "size: 32MiB"),
            to: dir + "/e.yaml")
        let r = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/res", "--resume", "latest"], state: dir + "/state")
        #expect(r.status == 1)
        #expect(r.stderr.contains("changed since experiment run") && r.stderr.contains("workloads[0].params"), "\(r.stderr)")
        #expect(r.stderr.contains("64MiB") && r.stderr.contains("32MiB"), "names what changed: \(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
    }

    @Test(.timeLimit(.minutes(4)))
    func aSecondRunOnTheSameResultsRefusesWithTheHoldersPid() async throws {
        let dir = CLI.temporaryDirectory()
        CLI.write(Self.experiment(ops: 40_000_000, min: 2, max: 2), to: dir + "/e.yaml")
        let (p, out, err) = try CLI.start(["run", dir + "/e.yaml", "--results", dir + "/res"], state: dir + "/state")
        // Until the holder has written itself into the lock file.
        _ = try await Self.holder(of: dir + "/res/nestbench.sqlite.lock")
        // Another state directory and machine lock: only the store lock stands in the way.
        let second = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/res"], state: dir + "/state2")
        #expect(second.status == 1)
        #expect(second.stderr.contains("pid \(p.processIdentifier)"), "names the holder: \(second.stderr)")
        #expect(second.stderr.contains("--wait"))
        // Reading never blocks.
        let list = try CLI.run(["list", "--results", dir + "/res"], state: dir + "/state2")
        #expect(list.status == 0 && list.stdout.contains("running"))
        p.interrupt()
        _ = CLI.readAll(out, err)
        p.waitUntilExit()
    }

    @Test(.timeLimit(.minutes(5)))
    func theMachineLockExcludesRunsWithOtherStoresAndWaitWaits() async throws {
        let dir = CLI.temporaryDirectory()
        CLI.write(Self.experiment(ops: 20_000_000, min: 2, max: 2), to: dir + "/e.yaml")
        // One machine lock for both, as two users' nestbench on one machine.
        let shared = ["NESTBENCH_MACHINE_LOCK": dir + "/machine.lock"]
        let (p, out, err) = try CLI.start(
            ["run", dir + "/e.yaml", "--results", dir + "/res1", "--format", "json"], state: dir + "/state1",
            environment: shared)
        _ = try await Self.holder(of: dir + "/machine.lock")
        let refused = try CLI.run(
            ["run", dir + "/e.yaml", "--results", dir + "/res2"], state: dir + "/state2", environment: shared)
        #expect(refused.status == 1)
        #expect(
            refused.stderr.contains("this machine") && refused.stderr.contains("pid \(p.processIdentifier)"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/res2/nestbench.sqlite"), "nothing measured or stored")
        // --wait: starts when the first has finished, and then runs. The first's output is read
        // meanwhile (a full pipe would keep it, and the lock, forever).
        let reading = Task.detached { CLI.readAll(out, err) }
        let waited = try CLI.run(
            ["run", dir + "/e.yaml", "--results", dir + "/res2", "--wait", "--format", "json"], state: dir + "/state2",
            environment: shared)
        let first = await reading.value
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(String(decoding: first.1, as: UTF8.self))")
        #expect(waited.status == 0, "\(waited.stderr)")
        #expect(waited.stderr.contains("waiting for this machine"))
        #expect((Self.json(String(decoding: first.0, as: UTF8.self))?["runs"] as? [Any])?.count == 4)
        #expect((Self.json(waited.stdout)?["runs"] as? [Any])?.count == 4)
    }

    /// `fragment` and `restore` change this machine too: refused while a measurement holds the
    /// machine's lock, naming it in one line; after that holder's kill -9 its lock file still names
    /// it, but the lock went with it: `restore` works.
    @Test(.timeLimit(.minutes(4)))
    func fragmentAndRestoreRefuseWhileTheMachineIsHeldAndRestoreWorksAfterTheHoldersKill() async throws {
        let dir = CLI.temporaryDirectory()
        CLI.write(Self.experiment(ops: 60_000_000, min: 3, max: 3), to: dir + "/e.yaml")
        let shared = ["NESTBENCH_MACHINE_LOCK": dir + "/machine.lock"]
        let (p, out, err) = try CLI.start(
            ["run", dir + "/e.yaml", "--results", dir + "/res"], state: dir + "/state", environment: shared)
        let drain = Task.detached { CLI.readAll(out, err) }
        let holder = try await Self.holder(of: dir + "/machine.lock")
        let run = try #require(holder["run"] as? String, "the run wrote itself into the machine lock")
        let host = try #require(holder["host"] as? String)
        // Another state directory: only the machine lock stands in the way (not the knob journal).
        // No harness for the fragmenter: had it not been refused, it would fail before changing memory.
        for arguments in [["fragment", "--target", "0.5", "--allow-compaction"], ["restore"]] {
            let r = try CLI.run(
                arguments, state: dir + "/state2",
                environment: shared.merging(["NESTBENCH_HARNESS": dir + "/no-harness"]) { $1 })
            #expect(r.status == 1, "\(arguments[0]): \(r.stderr)")
            #expect(
                r.stderr.contains("this machine") && r.stderr.contains("pid \(p.processIdentifier) on \(host)")
                    && r.stderr.contains("experiment run \(run)") && r.stderr.contains("since "),
                "\(arguments[0]) names the holder: \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
            #expect(r.stdout.isEmpty)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        _ = await drain.value
        let stale = String(decoding: FileManager.default.contents(atPath: dir + "/machine.lock") ?? Data(), as: UTF8.self)
        #expect(stale.contains("\"pid\":\(p.processIdentifier)"), "the lock file still names the killed holder: \(stale)")
        let restored = try CLI.run(["restore"], state: dir + "/state", environment: shared)
        #expect(restored.status == 0, "a killed holder's lock does not block restore: \(restored.stderr)")
        #expect(
            restored.stderr.contains("experiment run \(run)") && restored.stderr.contains("marked killed"), "\(restored.stderr)")
    }

    @Test(.timeLimit(.minutes(4)))
    func twoShardsImportedIntoOneStoreAreReportedAsOneCampaign() throws {
        let dir = CLI.temporaryDirectory()
        CLI.write(Self.experiment(ops: 3_000_000, min: 4, max: 4), to: dir + "/e.yaml")
        let tooMany = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/x", "--shard", "0/3"], state: dir + "/state")
        #expect(tooMany.status == 1 && tooMany.stderr.contains("at least 6"), "\(tooMany.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/x/nestbench.sqlite"), "refused before anything ran")
        for k in 0..<2 {
            let r = try CLI.run(
                [
                    "run", dir + "/e.yaml", "--results", dir + "/s\(k)", "--shard", "\(k)/2", "--campaign", "c1",
                    "--fixed-repetitions", "--format", "json",
                ],
                state: dir + "/state")
            #expect(r.status == 0, "\(r.stderr)")
            let j = try #require(Self.json(r.stdout))
            #expect(j["shard"] as? String == "\(k)/2" && j["campaign"] as? String == "c1")
            #expect((j["runs"] as? [Any])?.count == 4, "2 of the 4 blocks × 2 configurations")
            #expect((j["adaptive_repetitions"] as? String)?.hasPrefix("off") == true)
            let runs = try #require(j["runs"] as? [[String: Any]])
            #expect(runs.allSatisfy { (($0["provenance"] as? [String: String])?["testbed.fingerprint"]) != nil })
            let export = try CLI.run(["export", "latest", "--results", dir + "/s\(k)"], state: dir + "/state")
            CLI.write(export.stdout, to: dir + "/s\(k).json")
        }
        // A shard of the campaign run again with --resume auto (a requeued job) measures nothing twice.
        let again = try CLI.run(
            [
                "run", dir + "/e.yaml", "--results", dir + "/s0", "--shard", "0/2", "--campaign", "c1", "--resume", "auto",
                "--format", "json",
            ], state: dir + "/state")
        #expect(again.status == 0 && again.stderr.contains("already completed"), "\(again.stderr)")
        let s0 = try CLI.run(["list", "--results", dir + "/s0"], state: dir + "/state")
        #expect(s0.stdout.split(separator: "\n").count == 1, "still one experiment run: \(s0.stdout)")
        let imported = try CLI.run(
            ["import", dir + "/s0.json", dir + "/s1.json", "--results", dir + "/all"], state: dir + "/state")
        #expect(imported.status == 0, "\(imported.stderr)")
        let list = try CLI.run(["list", "--results", dir + "/all"], state: dir + "/state")
        #expect(list.stdout.contains("campaign c1, shard 0/2") && list.stdout.contains("campaign c1, shard 1/2"))
        let r = try CLI.run(["report", "--campaign", "c1", "--results", dir + "/all", "--format", "json"], state: dir + "/state")
        #expect(r.status == 0, "\(r.stderr)")
        let j = try #require(Self.json(r.stdout))
        #expect((j["runs"] as? [Any])?.count == 8, "both shards' runs")
        let testbeds = try #require(j["testbeds"] as? [[String: Any]])
        #expect(testbeds.count == 1 && (testbeds[0]["experiment_runs"] as? [Any])?.count == 2)
        let missing = try CLI.run(["report", "--campaign", "nope", "--results", dir + "/all"], state: dir + "/state")
        #expect(missing.status == 5)
        let html = try CLI.run(
            ["report", "--campaign", "c1", "--results", dir + "/all", "--html", dir + "/c1.html"], state: dir + "/state")
        #expect(html.status == 0 && html.stdout.contains("testbeds"), "\(html.stderr)")
        #expect((try? String(contentsOfFile: dir + "/c1.html", encoding: .utf8))?.contains("id=\"testbeds\"") == true)
        // compare and history take the campaign too.
        let compare = try CLI.run(
            ["compare", "--campaign", "c1", "--results", dir + "/all", "--format", "json"], state: dir + "/state")
        #expect([0, 2, 4].contains(compare.status), "\(compare.stderr)")
        #expect(compare.stdout.contains("campaign c1:a") && compare.stdout.contains("campaign c1:b"))
        let history = try CLI.run(["history", "--campaign", "c1", "--results", dir + "/all"], state: dir + "/state")
        #expect(history.status == 0, "\(history.stderr)")
        let noHistory = try CLI.run(["history", "--campaign", "nope", "--results", dir + "/all"], state: dir + "/state")
        #expect(noHistory.status == 5)
    }
}

/// Everything a pipe delivers, read on a thread of its own as it comes.
final class StreamText: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()

    init(_ handle: FileHandle) {
        Thread {
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                self.lock.withLock { self.data.append(chunk) }
            }
        }.start()
    }

    var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }

    /// Whether `kill(_:whenSeen:…)` saw its marker.
    var markerSeen: Bool { lock.withLock { seenMarker } }
    private var seenMarker = false

    /// Sends SIGKILL to `pid` `afterMillis` after `marker` appears in the text (or at the timeout),
    /// from a thread of its own (`markerSeen` says whether the marker came).
    func kill(_ pid: Int32, whenSeen marker: String, afterMillis: UInt32, timeoutSeconds: Double) {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        Thread {
            while Date() < deadline && !self.text.contains(marker) { usleep(10_000) }
            if self.text.contains(marker) {
                self.lock.withLock { self.seenMarker = true }
                usleep(afterMillis * 1000)
            }
            Foundation.kill(pid, SIGKILL)
        }.start()
    }
}
