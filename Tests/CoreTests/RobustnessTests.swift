import Foundation
import Testing

@testable import NestBenchCollectors
@testable import NestBenchConfig
@testable import NestBenchFuzz
@testable import NestBenchModel
@testable import NestBenchProcess
@testable import NestBenchStore
@testable import NestBenchWorkloads

/// Inputs that crashed or misled nestbench (issue 15): each now gives a clear error or the right answer.
@Suite("robustness: hostile inputs")
struct RobustnessTests {
    static let corpusRoot: String = {
        var dir = URL(fileURLWithPath: #filePath)
        dir.deleteLastPathComponent()
        dir.deleteLastPathComponent()
        return dir.appendingPathComponent("Corpus").path
    }()

    /// Every input kept in Tests/Corpus/<target>/ (inputs that once trapped, and those `make fuzz`
    /// found) goes through its target again: a trap fails the whole test run.
    @Test(.timeLimit(.minutes(2)), arguments: FuzzTarget.all.map(\.name))
    func fuzzRegressionCorpus(target name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let dir = Self.corpusRoot + "/" + name
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
        for file in files {
            let data = try #require(FileManager.default.contents(atPath: dir + "/" + file), "\(dir)/\(file)")
            target.run(Array(data))
        }
        for seed in target.seeds { target.run(seed) }
        #expect(name == "import" || !files.isEmpty, "the corpus of \(name) is in the repository")
    }

    @Test func cpuListsAreBoundedByWhatAMachineCanHave() {
        #expect(CPUList.parse("0-2000000000") == nil)
        #expect(CPUList.parse("0-9223372036854775807") == nil)
        #expect(CPUList.parse("99999999999999999999999") == nil)
        #expect(CPUList.parse("8192") == nil)
        #expect(CPUList.parse("0-3,8191") == [0, 1, 2, 3, 8191])
    }

    @Test func yamlCPURangeIsAClearError() {
        let yaml = """
            name: e
            baseline: a
            configurations:
              a: {host: {}}
            workloads:
              - {name: random-access, suite: micro, cpus: "0-2000000000"}
            """
        #expect {
            _ = try ExperimentLoader.parse(yaml, file: "e.yaml", environment: [:])
        } throws: { error in
            let text = "\(error)"
            return text.contains("e.yaml:6") && text.contains("workloads[0].cpus") && text.contains("8191")
        }
    }

    @Test func buddyinfoCountsBeyondAMachineAreErrorsNotTrapsOrZero() {
        let cases = [
            "Node 0, zone   Normal 9300000000000000 1 1 1 1 1 1 1 1 1 1",
            // 2^60 blocks of order 10 used to shift out to "0 free pages, FMFI 1.0".
            "Node 0, zone   Normal 0 0 0 0 0 0 0 0 0 0 1152921504606846976",
            "Node 0, zone   Normal 9223372036854775807 9223372036854775807",
        ]
        for line in cases {
            #expect(throws: ProcfsError.self, "\(line)") { _ = try Buddyinfo.parse(line + "\n", path: "b") }
        }
        let many = String(repeating: "Node 0, zone Normal 0 0 0 0 0 0 0 0 0 0 4000000000000\n", count: 2000)
        #expect(throws: ProcfsError.self) { _ = try Buddyinfo.parse(many, path: "b") }
    }

    @Test(.timeLimit(.minutes(1))) func buddyinfoLineOfTwoMillionCountsIsRejectedQuickly() {
        let line = "Node 0, zone Normal " + String(repeating: "1 ", count: 2_000_000)
        let start = ContinuousClock.now
        #expect {
            _ = try Buddyinfo.parse(line, path: "b")
        } throws: { error in
            "\(error)".contains("orders")
        }
        #expect(ContinuousClock.now - start < .seconds(20))
    }

    @Test func buddyinfoAtTheLimitStillComputes() throws {
        let buddy = try Buddyinfo.parse("Node 0, zone Normal 0 0 0 0 0 0 0 0 0 0 1048576\n", path: "b")
        #expect(buddy.zones[0].freePages == 1 << 30)
        #expect(buddy.zones[0].fmfi(order: 9) == 0)
    }

    @Test(.timeLimit(.minutes(1))) func latsValuesStraddling2To63() throws {
        // ≥ 100,000 records: the bracket path; values on both sides of 2^63 (signed compare in C).
        let n = 150_000
        var words = [UInt64](repeating: 0, count: 3 * n)
        for i in 0..<n {
            let v: UInt64 = i % 2 == 0 ? (1 << 63) - 1 - UInt64(i) : (1 << 63) + UInt64(i)
            words[3 * i] = v
            words[3 * i + 1] = v
            words[3 * i + 2] = v
        }
        let summary = words.withUnsafeBufferPointer { LatsFile.summarize(words: $0, threads: 2) }
        let sorted = stride(from: 0, to: 3 * n, by: 3).map { words[$0] }.sorted()
        let rank = 0.99 * Double(n - 1)
        let lo = Int(rank.rounded(.down))
        let expected = LatsFile.lerp(Double(sorted[lo]) / 1e6, Double(sorted[lo + 1]) / 1e6, rank - Double(lo))
        #expect(summary.requests == n)
        #expect(abs(summary.sojourn.p99 - expected) <= expected * 1e-12)
        #expect(summary.sojourn.max == Double(sorted[n - 1]) / 1e6)
    }

    @Test func inputFilesMustBeRegular() throws {
        let dir = Fixtures.temporaryDirectory()
        let fifo = dir + "/fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        for (path, kind) in [(fifo, "a FIFO"), ("/dev/zero", "a character device"), (dir, "a directory")] {
            #expect {
                _ = try InputFile.read(path)
            } throws: { error in
                "\(error)".contains(kind) && "\(error)".contains(path)
            }
        }
        #expect {
            _ = try ExperimentLoader.load(path: fifo)
        } throws: { error in "\(error)".contains("a FIFO") }
        #expect {
            _ = try LatsFile.analyze(path: "/dev/zero")
        } throws: { error in "\(error)".contains("a character device") }
    }

    @Test func roiTwoLinesIsAmbiguous() {
        let r = ParsecLog.parse(
            "[HOOKS] Entering ROI\n[HOOKS] Leaving ROI\n[HOOKS] Total time spent in ROI: 1.5s\n[HOOKS] Total time spent in ROI: 2.5s\n"
        )
        #expect(r.count == 1)
        #expect(!r[0].succeeded)
        #expect(r[0].failure?.contains("1.5") == true && r[0].failure?.contains("2.5") == true)
    }

    @Test func roiThenCrashIsAFailure() {
        let r = ParsecLog.parse(
            "[HOOKS] Entering ROI\n[HOOKS] Leaving ROI\n[HOOKS] Total time spent in ROI: 1.5s\nSegmentation fault (core dumped)\n"
        )
        #expect(!r[0].succeeded)
        #expect(r[0].failure?.contains("crashed after") == true)
    }

    @Test func roiCRLF() {
        let r = ParsecLog.parse("[HOOKS] Entering ROI\r\n[HOOKS] Leaving ROI\r\n[HOOKS] Total time spent in ROI: 1.25s\r\n")
        #expect(r.count == 1)
        #expect(r[0].seconds == 1.25 && r[0].succeeded)
    }

    @Test func duplicateYAMLKeyAtItsLineWithoutTheFile() {
        let yaml =
            "name: e\nbaseline: a\nseed: 1\nconfigurations:\n  a: {host: {}}\n  a: {host: {}}\nworkloads:\n  - {name: random-access, suite: micro}\n"
        #expect {
            _ = try ExperimentLoader.parse(yaml, file: "d.yaml", environment: [:])
        } throws: { error in
            let text = "\(error)"
            return text.contains("d.yaml:6") && text.contains("duplicate key \"a\"") && !text.contains("workloads:")
                && text.split(separator: "\n").count == 1
        }
    }

    @Test func invalidMinIsOneError() {
        let yaml = """
            name: e
            baseline: a
            configurations:
              a: {host: {}}
            workloads:
              - {name: random-access, suite: micro}
            repetitions: {min: 1, max: 3}
            """
        #expect {
            _ = try ExperimentLoader.parse(yaml, file: "m.yaml", environment: [:])
        } throws: { error in
            guard let e = error as? ConfigError else { return false }
            return e.problems.count == 1 && e.problems[0].keyPath == "repetitions.min"
        }
    }
}

@Suite("robustness: import")
struct ImportValidationTests {
    static func export(id: String = "20260101-000000-abcd", alpha: Double = 0.05, value: Double = 1) -> RunExport {
        var experiment = Experiment(
            name: "e", baseline: "a", configurations: [Configuration(name: "a"), Configuration(name: "b")],
            workloads: [WorkloadSpec(suite: "micro", name: "random-access")])
        experiment.analysis.alpha = alpha
        let plan = [
            PlannedRun(sequence: 0, configuration: "a", workload: "random-access", condition: "clean", repetition: 1),
            PlannedRun(sequence: 1, configuration: "b", workload: "random-access", condition: "clean", repetition: 1),
        ]
        let record = ExperimentRunRecord(
            id: id, experiment: experiment, filePath: "e.yaml", contentHash: "abc", content: "", seed: 1, plan: plan,
            startedAt: Date(timeIntervalSince1970: 1_800_000_000), finishedAt: Date(timeIntervalSince1970: 1_800_000_100),
            status: .completed, machine: MachineProbe.describe())
        let runs = plan.map { p in
            RunExport.ExportedRun(
                record: RunRecord(
                    experimentRunID: id, planned: p, status: .ok, startedAt: Date(timeIntervalSince1970: 1_800_000_000),
                    endedAt: Date(timeIntervalSince1970: 1_800_000_001), invocations: [],
                    metrics: [Metric(name: "wall_seconds", value: value, unit: "s", polarity: .lowerIsBetter, source: "t")]))
        }
        return RunExport(experimentRun: record, runs: runs)
    }

    @Test func alphaFiveIsRefused() throws {
        let store = try Store(path: Fixtures.temporaryDirectory() + "/s.sqlite")
        #expect {
            _ = try store.importRun(Self.export(alpha: 5), source: "x.json")
        } throws: { error in "\(error)".contains("analysis.alpha") }
        #expect(try store.list().isEmpty)
    }

    @Test func sameIDSameContentIsANoOpDifferentContentAConflict() throws {
        let store = try Store(path: Fixtures.temporaryDirectory() + "/s.sqlite")
        #expect(try store.importRun(Self.export(), source: "a.json") == .imported(runs: 2))
        #expect(try store.importRun(Self.export(), source: "a.json") == .alreadyPresent)
        #expect {
            _ = try store.importRun(Self.export(value: 2), source: "b.json")
        } throws: { error in
            "\(error)".contains("already stored with different content") && "\(error)".contains("b.json")
                && "\(error)".contains("--as-new")
        }
        #expect(try store.runs(of: "20260101-000000-abcd").count == 2, "nothing merged")
        // --as-new: the same content under another id.
        #expect(
            try store.importRun(Self.export(value: 2).renamed(to: "20260101-000000-beef"), source: "b.json") == .imported(runs: 2)
        )
        #expect(try store.runs(of: "20260101-000000-beef").count == 2)
        #expect(try store.runs(of: "20260101-000000-abcd").count == 2)
    }

    @Test func runsNamingAnotherExperimentRunAreRefused() throws {
        let store = try Store(path: Fixtures.temporaryDirectory() + "/s.sqlite")
        _ = try store.importRun(Self.export(), source: "a.json")
        var other = Self.export(id: "20260101-000000-ffff")
        other.runs[1].record.experimentRunID = "20260101-000000-abcd"
        #expect {
            _ = try store.importRun(other, source: "c.json")
        } throws: { error in "\(error)".contains("runs[1].record.experimentRunID") }
        #expect(try store.runs(of: "20260101-000000-abcd").count == 2, "the stored run keeps its 2 runs")
    }

    @Test func ambiguousPrefixListsCandidates() throws {
        let store = try Store(path: Fixtures.temporaryDirectory() + "/s.sqlite")
        _ = try store.importRun(Self.export(), source: "a.json")
        _ = try store.importRun(Self.export().renamed(to: "20260101-000000-beef"), source: "b.json")
        #expect {
            _ = try store.resolve("2026")
        } throws: { error in
            "\(error)".contains("ambiguous") && "\(error)".contains("20260101-000000-abcd")
                && "\(error)".contains("20260101-000000-beef")
        }
        #expect(try store.resolve("20260101-000000-be") == "20260101-000000-beef")
    }

    @Test func killedOwnerIsFoundByTheNextOpen() throws {
        let path = Fixtures.temporaryDirectory() + "/s.sqlite"
        let store = try Store(path: path)
        var record = Self.export().experimentRun
        record.status = .running
        try store.begin(record)
        #expect(try store.markKilled().isEmpty, "this process owns it and lives")
        // An owner that is gone: a pid that does not exist.
        try store.setOwnerForTesting(record.id, owner: "\(ProcessInfo.processInfo.hostName) 2147483646 1")
        #expect(try store.markKilled() == [record.id])
        #expect(try store.experimentRun(record.id)?.status == .killed)
    }
}
