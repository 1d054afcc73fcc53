import Foundation
import NestBenchAnalysis
import NestBenchModel
import NestBenchStore
import Testing

@testable import NestBenchCLI

/// Runs `nestbench` command lines in this process (ArgumentParser parse + run through
/// `NestBenchCommand.main`), with stdout and stderr captured: no binary, no machine state.
enum InProcess {
    static let packageRoot: String = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { dir.deleteLastPathComponent() }
        return dir.path
    }()

    /// The checkout's suite files, for commands that fill in declarations of old stores.
    static let suites: Void = { setenv("NESTBENCH_SUITES", packageRoot + "/Suites", 1) }()

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ arguments: [String]) async -> Result {
        _ = suites
        let capture = Console.Capture()
        let status = await Console.$capture.withValue(capture) { await NestBenchCommand.main(arguments) }
        return Result(status: status, stdout: capture.stdout, stderr: capture.stderr)
    }

    static func temporaryDirectory() -> String {
        let dir = NSTemporaryDirectory() + "nestbench-cmd-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static let machine = MachineDescription(hostname: "tb", cpuModel: "cpu", cores: 2, memoryBytes: 1, kernel: "6.1", thp: [:])

    /// A results directory with one stored experiment run of `workload` (base vs cand, 4
    /// repetitions each, cand 1.5× the ops and 0.8× the p99), stored the way experiments were
    /// before metric declarations existed (none in the stored experiment).
    static func store(
        workload: WorkloadSpec = WorkloadSpec(suite: "micro", name: "random-access"), tags: [String: String] = [:],
        samples: (PlannedRun) -> [(tMillis: Int64, name: String, value: Double)] = { _ in [] }
    ) throws -> String {
        let dir = temporaryDirectory()
        let store = try Store(path: Store.path(inResults: dir))
        let experiment = Experiment(
            name: "cmd", baseline: "base", configurations: [Configuration(name: "base"), Configuration(name: "cand")],
            workloads: [workload])
        var runs: [RunRecord] = []
        for rep in 1...4 {
            for config in ["base", "cand"] {
                let f = config == "cand" ? 1.5 : 1.0
                let jitter = Double(rep)
                runs.append(
                    RunRecord(
                        experimentRunID: "r1",
                        planned: PlannedRun(
                            sequence: runs.count, configuration: config, workload: workload.label, condition: "clean",
                            repetition: rep),
                        status: .ok, startedAt: Date(), endedAt: Date(),
                        metrics: [
                            Metric(
                                name: "ops_per_sec", value: 100 * f + jitter, unit: "ops/s", polarity: .higherIsBetter,
                                source: "workload"),
                            Metric(
                                name: "sojourn_p99_ms", value: (config == "cand" ? 8 : 10) + jitter / 10, unit: "ms",
                                polarity: .lowerIsBetter, source: "workload"),
                        ]))
            }
        }
        try store.begin(
            ExperimentRunRecord(
                id: "r1", experiment: experiment, filePath: "cmd.yaml", contentHash: "h", content: "name: cmd", seed: 1,
                plan: runs.map(\.planned), startedAt: Date(), status: .running, machine: machine, tags: tags))
        for r in runs { try store.record(r, samples: samples(r.planned)) }
        try store.finish("r1", status: .completed)
        return dir
    }
}

@Suite("Commands in process")
struct CommandTests {
    @Test func reportFormatsAreTypedChoices() async throws {
        let results = try InProcess.store()
        let csv = await InProcess.run(["report", "latest", "--results", results, "--format", "csv"])
        #expect(csv.status == 0, "\(csv.stderr)")
        let lines = csv.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("workload,condition,configuration,metric,unit,mean,") == true)
        #expect(lines.contains { $0.hasPrefix("random-access,clean,cand,ops_per_sec,ops/s,") })

        let bad = await InProcess.run(["report", "latest", "--results", results, "--format", "yaml"])
        #expect(bad.status == ExitCodes.usage)
        #expect(bad.stderr.contains("'markdown'") && bad.stderr.contains("'csv'"), "the choices are listed: \(bad.stderr)")
        let method = await InProcess.run(["fragment", "--target", "0.5", "--method", "holes"])
        #expect(method.status == ExitCodes.usage && method.stderr.contains("'anon-holes'"), "\(method.stderr)")
        let missing = await InProcess.run(["report", "nope", "--results", results])
        #expect(missing.status == ExitCodes.baselineNotFound && missing.stderr.contains("no run \"nope\""))
    }

    /// A store written before declarations existed: the micro's and the collectors' declarations
    /// are filled in at load (today's adapters), so the primary metric and centers are declared ones.
    @Test func oldStoresGetDeclarationsAtLoad() async throws {
        let results = try InProcess.store(workload: WorkloadSpec(suite: "tailbench", name: "silo"))
        let r = await InProcess.run(["report", "latest", "--results", results, "--format", "json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let comparisons = try #require(json["comparisons"] as? [[String: Any]])
        let p99 = try #require(comparisons.first { $0["metric"] as? String == "sojourn_p99_ms" })
        #expect(p99["center"] as? String == "median" && p99["role"] as? String == "primary")
        #expect(p99["verdict"] as? String == "better")
        let geomeans = try #require(json["geomeans"] as? [[String: Any]])
        #expect(geomeans.map { $0["metric"] as? String } == ["sojourn_p99_ms"])

        let html = InProcess.temporaryDirectory() + "/r.html"
        let h = await InProcess.run(["report", "latest", "--results", results, "--html", html])
        #expect(h.status == 0)
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(page.contains("<svg class=\"figure\" id=\"fig13-p99-clean\""), "Fig. 13 (b) from the declaration")
    }

    /// The HTML report draws the stored timelines: by default the micro's progress (and the
    /// alignment timeline), one line per run coloured by its cell, at the stored values;
    /// `--timeline` names others; with nothing selected there is no timeline section.
    @Test func htmlReportDrawsStoredTimelines() async throws {
        let results = try InProcess.store(samples: { run in
            (0..<5).map { i in (Int64(i * 500), "progress.ops_per_sec", Double(100 + run.sequence * 10 + i)) }
                + [(250, "mem_free_bytes", 1e9)]
        })
        let html = InProcess.temporaryDirectory() + "/r.html"
        func page(_ extra: [String]) async throws -> String {
            let r = await InProcess.run(["report", "latest", "--results", results, "--html", html] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            return try String(contentsOfFile: html, encoding: .utf8)
        }
        let progress = try await page([])
        #expect(progress.contains("data-timeline=\"progress.ops_per_sec\""))
        #expect(!progress.contains("data-timeline=\"mem_free_bytes\""), "not selected by default")
        #expect(progress.components(separatedBy: "<polyline class=\"series\"").count - 1 == 8, "one line per run")
        #expect(progress.contains(">base · clean</text>") && progress.contains(">cand · clean</text>"))
        // Run 7's last point is the largest value at the latest time: the plot's top right corner.
        let last = try #require(progress.firstMatch(of: /data-run="7"[^>]*points="([^"]*)"/))
        #expect(last.1.split(separator: " ").last == "570.0,16.0", "\(last.1)")
        #expect(last.1.split(separator: " ").count == 5)

        let memory = try await page(["--timeline", "mem_free_bytes"])
        #expect(memory.contains("data-timeline=\"mem_free_bytes\"") && !memory.contains("data-timeline=\"progress."))
        #expect(memory.components(separatedBy: "<circle class=\"series\"").count - 1 == 8, "a one-sample timeline is a dot")
        let none = try await page(["--timeline", "align."])
        #expect(!none.contains("id=\"timelines\""))
    }

    /// One CSV writer everywhere: a tag holding a comma, quotes and a newline stays one field.
    @Test func historyCSVQuotesTrickyValues() async throws {
        let results = try InProcess.store(tags: ["note": "a,b \"c\"\nd"])
        let r = await InProcess.run(["history", "cmd", "--results", results, "--format", "csv", "--metric", "ops_per_sec"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains(",\"note=a,b \"\"c\"\"\nd\","), "\(r.stdout)")
        #expect(r.stdout.hasPrefix("workload,condition,configuration,metric,unit,center,run_id,started_at,tags,value,n\n"))
        #expect(r.stdout.contains("random-access,clean,cand,ops_per_sec,ops/s,hmean,r1,"), "the declared center: \(r.stdout)")
    }

    @Test func thresholdsFileIsYAML() async throws {
        let results = try InProcess.store()
        let dir = InProcess.temporaryDirectory()
        try "# gates\ndefault: 3%\nops_per_sec: 5% higher\n".write(toFile: dir + "/t.yaml", atomically: true, encoding: .utf8)
        let improved = await InProcess.run([
            "compare", "latest", "--results", results, "--candidate", "cand", "--thresholds", dir + "/t.yaml",
            "--fail-on-improvement",
        ])
        #expect(improved.status == ExitCodes.improvement, "\(improved.stdout)\(improved.stderr)")
        #expect(improved.stdout.contains("improvement random-access / clean / ops_per_sec"))
        try "default: 3%\nops_per_sec: 5% sideways\n".write(toFile: dir + "/bad.yaml", atomically: true, encoding: .utf8)
        let bad = await InProcess.run([
            "compare", "latest", "--results", results, "--candidate", "cand", "--thresholds", dir + "/bad.yaml",
        ])
        #expect(bad.status == ExitCodes.error)
        #expect(bad.stderr.contains(dir + "/bad.yaml:2:"), "\(bad.stderr)")
    }

    /// export → import into another store → list; importing again is a no-op; nightly without
    /// history says so with exit 5.
    @Test func exportImportListAndNightly() async throws {
        let results = try InProcess.store()
        let exported = await InProcess.run(["export", "latest", "--results", results])
        #expect(exported.status == 0, "\(exported.stderr)")
        let file = InProcess.temporaryDirectory() + "/run.json"
        try exported.stdout.write(toFile: file, atomically: true, encoding: .utf8)
        let other = InProcess.temporaryDirectory()
        let imported = await InProcess.run(["import", file, "--results", other])
        #expect(imported.status == 0, "\(imported.stderr)")
        let again = await InProcess.run(["import", file, "--results", other])
        #expect(again.status == 0 && again.stdout.contains("already present: r1"), "\(again.stdout)")
        let list = await InProcess.run(["list", "--results", other])
        #expect(list.status == 0 && list.stdout.hasPrefix("r1\tcmd\t"), "\(list.stdout)")
        let nightly = await InProcess.run(["nightly", "latest", "--results", other])
        #expect(nightly.status == ExitCodes.baselineNotFound, "\(nightly.stdout)\(nightly.stderr)")
        #expect(nightly.stderr.contains("no earlier stored runs of experiment \"cmd\""))
    }

    @Test func fmfiOfAFixture() async throws {
        let buddyinfo = InProcess.packageRoot + "/../shared/fixtures/procfs/idle/buddyinfo"
        try #require(FileManager.default.fileExists(atPath: buddyinfo), "shared fixtures beside the checkout")
        let r = await InProcess.run(["fmfi", "--buddyinfo", buddyinfo, "--format", "json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(json["order"] as? Int == 9)
        let bad = await InProcess.run(["fmfi", "--buddyinfo", buddyinfo, "--format", "xml"])
        #expect(bad.status == ExitCodes.usage)
    }
}

@Suite("CSV writer")
struct CSVWriterTests {
    @Test func quotesCommasQuotesAndNewlines() {
        let text = CSVText.render(
            header: ["a", "b"],
            rows: [["x,y", "say \"hi\""], ["line1\nline2", "cr\r\nlf"], ["plain", "ünï"], ["", " lead"]])
        #expect(
            text
                == "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n\"line1\nline2\",\"cr\r\nlf\"\nplain,ünï\n, lead\n")
    }
}
