import Foundation
import Testing

/// docs/nightly.md's shell variant, run as the doc shows it (docs/nightly.sh, which the doc
/// includes verbatim) on five synthetic nights: a fake Tailbench app (Tests/FakeApps) whose
/// latencies are 10% higher on the fifth night.
@Suite("nightly recipe end to end", .serialized)
struct NightlyRecipeTests {
    static func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    static func experiment(scaleFile: String) -> String {
        """
        name: recipe
        baseline: stock
        configurations:
          stock: {}
        workloads:
          - {suite: tailbench, name: masstree, params: {mode: integrated, qps: 1000, requests: 300, warmup_requests: 10}, env: {FAKE_LATENCY_SCALE_FILE: \(scaleFile)}, timeout: 60s}
        repetitions: {min: 3, max: 3}
        collectors: {monitor: {interval: off}}
        """
    }

    /// Runs the script with the recipe's variables; returns its exit status and stderr.
    static func night(_ dir: String, tags: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = [CLI.packageRoot + "/docs/nightly.sh"] + tags
        p.currentDirectoryURL = URL(fileURLWithPath: CLI.packageRoot)
        var env = ProcessInfo.processInfo.environment
        env["NESTBENCH"] = CLI.binary
        env["NIGHTLY_EXPERIMENT"] = dir + "/recipe.yaml"
        env["NIGHTLY_STORE"] = dir + "/store"
        env["NIGHTLY_PUBLISH"] = dir + "/publish"
        env["NIGHTLY_MIN_HISTORY"] = "3"
        env["TAILBENCH_ROOT"] = dir + "/tailbench"
        env["NESTBENCH_STATE_DIR"] = dir + "/state"
        env["NESTBENCH_MACHINE_LOCK"] = CLI.machineLock(state: dir + "/state")
        env["NO_COLOR"] = "1"
        p.environment = env
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: e, as: UTF8.self))
    }

    @Test(.timeLimit(.minutes(10)))
    func fiveNightsWithAStepAtTheFifth() throws {
        let script = Self.read(CLI.packageRoot + "/docs/nightly.sh")
        #expect(!script.isEmpty && Self.read(CLI.packageRoot + "/docs/nightly.md").contains("```sh\n" + script + "```"))

        let dir = CLI.temporaryDirectory()
        let cc = Process()
        cc.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        try FileManager.default.createDirectory(atPath: dir + "/tailbench/masstree", withIntermediateDirectories: true)
        cc.arguments = [
            "cc", "-O2", "-o", dir + "/tailbench/masstree/mttest_integrated",
            CLI.packageRoot + "/Tests/FakeApps/fake_tailbench.c", "-lm",
        ]
        try cc.run()
        cc.waitUntilExit()
        try #require(cc.terminationStatus == 0, "cc builds the fake Tailbench app")
        CLI.write(Self.experiment(scaleFile: dir + "/scale"), to: dir + "/recipe.yaml")

        var statuses: [Int32] = []
        for night in 1...5 {
            CLI.write(night == 5 ? "1.1\n" : "1.0\n", to: dir + "/scale")
            let (status, stderr) = try Self.night(dir, tags: ["--tag", "night=\(night)"])
            statuses.append(status)
            if status != 0 && night < 5 { Issue.record("night \(night): exit \(status): \(stderr)") }
            try? FileManager.default.copyItem(atPath: dir + "/publish/run.json", toPath: dir + "/night\(night).json")
            if night == 1 { #expect(stderr.contains("no earlier runs")) }
            if night == 4 { #expect(!Self.read(dir + "/publish/junit.xml").contains("<failure")) }
        }
        #expect(statuses == [0, 0, 0, 0, 2], "the fifth night's 10% slower p99 is a regression")
        let junit = Self.read(dir + "/publish/junit.xml")
        #expect(junit.contains("failures=\"1\"") && junit.contains("<failure message=\"regression: sojourn_p99_ms +10."))
        let page = Self.read(dir + "/publish/history.html")
        let first = try #require(page.components(separatedBy: "<section ").dropFirst().first, "the page has series")
        #expect(first.contains("data-verdict=\"regression\"") && first.contains("sojourn_p99_ms"))
        #expect(first.components(separatedBy: "<circle class=\"point").count - 1 == 5, "one point per night")

        // Automatic tags, without any --tag: this machine's kernel for the local configuration,
        // NestBench's commit as --version prints it, the testbed; the user's night tag beside them.
        let state = dir + "/state"
        let store = dir + "/store"
        let history = try CLI.run(
            ["history", "--results", store, "--metric", "sojourn_p99_ms", "--format", "json"], state: state)
        let series = try #require(try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]])
        let points = try #require(series.first?["points"] as? [[String: Any]])
        let tags = try #require(points.last?["tags"] as? [String: String])
        let kernel = try #require(tags["kernel"])
        #expect(kernel == tags["host.kernel"] && tags["night"] == "5" && tags["testbed"]?.contains(kernel) == true)
        let version = try CLI.run(["--version"], state: state)
        #expect(version.stdout.contains("commit \(try #require(tags["nestbench.commit"]))"))
        #expect(tags["nestbench.commit"] != "unknown", "built from a git checkout")
        let filtered = try CLI.run(["history", "--results", store, "--tag", "night=5", "--format", "csv"], state: state)
        #expect(filtered.status == 0 && !filtered.stdout.contains("night=4"))

        // compare --by: one kernel only → nothing to compare (exit 5, naming it); by the user's tag → exit 2.
        let one = try CLI.run(["compare", "--by", "kernel", "recipe", "--results", store], state: state)
        #expect(one.status == 5 && one.stderr.contains(kernel), "\(one.stderr)")
        let nights = try CLI.run(["compare", "--by", "night", "--a", "4", "--b", "5", "--results", store], state: state)
        #expect(nights.status == 2 && nights.stdout.contains("regression"), "\(nights.stdout)\(nights.stderr)")

        // Kernel A/B: nights 1–4 as measured, night 5 as if measured a day later on the next kernel.
        let ab = dir + "/ab"
        for night in 1...4 {
            let r = try CLI.run(["import", dir + "/night\(night).json", "--results", ab], state: state)
            #expect(r.status == 0, "\(r.stderr)")
        }
        var json = try #require(
            try JSONSerialization.jsonObject(with: Data(Self.read(dir + "/night5.json").utf8)) as? [String: Any])
        var record = try #require(json["experimentRun"] as? [String: Any])
        var recordTags = try #require(record["tags"] as? [String: String])
        recordTags["kernel"] = kernel + "-next"
        record["tags"] = recordTags
        json["experimentRun"] = record
        CLI.write(String(decoding: try JSONSerialization.data(withJSONObject: json), as: UTF8.self), to: dir + "/next.json")
        let imported = try CLI.run(["import", dir + "/next.json", "--results", ab], state: state)
        #expect(imported.status == 0, "\(imported.stderr)")
        let byKernel = try CLI.run(["compare", "--by", "kernel", "recipe", "--results", ab], state: state)
        #expect(byKernel.status == 2, "\(byKernel.stdout)\(byKernel.stderr)")
        #expect(byKernel.stdout.contains("kernel=\(kernel) (") && byKernel.stdout.contains("kernel=\(kernel)-next ("))
        #expect(byKernel.stdout.contains("regression  masstree / clean / sojourn_p99_ms"))

        // Two more nights at the new level: the page now marks the change point at night 5.
        for night in 6...7 {
            let (status, stderr) = try Self.night(dir, tags: ["--tag", "night=\(night)"])
            #expect(status == 0, "night \(night) at the new level: \(stderr)")
        }
        let fifth = try #require(record["id"] as? String)
        let after = Self.read(dir + "/publish/history.html")
        #expect(after.components(separatedBy: "<line class=\"changepoint\"").count - 1 == 1)
        #expect(after.contains("<line class=\"changepoint\" data-index=\"4\" data-run=\"\(fifth)\""), "at night 5")
        #expect(after.contains("Change point +10.0%") && after.contains("night: 4 → 5"))
        let artifacts = CLI.packageRoot + "/.build/test-artifacts"
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        _ = try MachineSuite.AnalysisCLITests.chromium(
            ["--screenshot=\(artifacts)/history-recipe.png", "--window-size=1200,800", "file://" + dir + "/publish/history.html"])
    }
}
