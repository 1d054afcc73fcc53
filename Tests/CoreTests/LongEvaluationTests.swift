import Foundation
import NestBenchModel
import NestBenchStats
import NestBenchWorkloads
import Testing

@testable import NestBenchAnalysis
@testable import NestBenchConfig
@testable import NestBenchOrchestrator
@testable import NestBenchStore

/// Shards, resume checks, campaigns and the per-testbed analysis (issue 16).
@Suite("Long evaluations")
struct LongEvaluationTests {
    static func experiment(min: Int = 6, max: Int = 6, enabled: String = "always") -> Experiment {
        Experiment(
            name: "e", baseline: "base",
            configurations: [
                Configuration(name: "base"),
                Configuration(name: "cand", host: LayerSettings(thp: THPSettings(enabled: enabled))),
            ],
            workloads: [WorkloadSpec(suite: "micro", name: "random-access")],
            conditions: [Condition(name: "clean"), Condition(name: "other")],
            repetitions: RepetitionPolicy(min: min, max: max))
    }

    static func record(
        _ id: String, experiment: Experiment = experiment(), status: ExperimentRunRecord.Status = .completed,
        campaign: String? = nil, shard: Shard? = nil, plan: [PlannedRun] = [], host: String = "h"
    ) -> ExperimentRunRecord {
        ExperimentRunRecord(
            id: id, experiment: experiment, filePath: "e.yaml", contentHash: "abc", content: "name: e", seed: 7, plan: plan,
            startedAt: Date(), finishedAt: status == .running ? nil : Date(), status: status,
            machine: MachineDescription(hostname: host, cpuModel: "c", cores: 2, memoryBytes: 1, kernel: "k", thp: [:]),
            campaign: campaign, shard: shard)
    }

    // MARK: shards

    @Test func shardsParseOnlyKOfNWithKBelowN() {
        #expect(Shard(parsing: "0/1") == Shard(index: 0, count: 1))
        #expect(Shard(parsing: "3/4") == Shard(index: 3, count: 4))
        for bad in ["4/4", "-1/2", "1/0", "a/b", "1", "1/2/3", ""] { #expect(Shard(parsing: bad) == nil, "\(bad)") }
    }

    @Test func shardsTakeWholeBlocksAndTogetherAreTheWholePlan() throws {
        let e = Self.experiment(min: 6)
        let cells = Planner.cells(of: e).count  // 2 configurations × 2 conditions
        var g = SeededGenerator(seed: 42)
        let full = Planner.initialPlan(for: e, generator: &g)
        #expect(full.count == 6 * cells)
        var covered: [[PlannedRun]] = Array(repeating: [], count: 6)
        for k in 0..<3 {
            var gk = SeededGenerator(seed: 42)
            let plan = try Planner.initialPlan(for: e, shard: Shard(index: k, count: 3), generator: &gk)
            #expect(plan.count == 2 * cells, "shard \(k): 2 of 6 blocks")
            #expect(plan.map(\.sequence) == Array(0..<plan.count))
            for (j, block) in stride(from: 0, to: plan.count, by: cells).enumerated() {
                let mine = Array(plan[block..<(block + cells)])
                // Every cell of the block once, on this shard (a testbed is a blocking factor) …
                #expect(Set(mine.map(\.cell)).count == cells)
                #expect(mine.allSatisfy { $0.repetition == j + 1 })
                // … in the order of full block k + 3j.
                let original = Array(full[((k + 3 * j) * cells)..<((k + 3 * j + 1) * cells)])
                #expect(mine.map(\.cell) == original.map(\.cell))
                covered[k + 3 * j] = original
            }
        }
        #expect(covered.flatMap { $0 } == full, "the shards together are exactly the unsharded plan")
    }

    @Test func aShardWithFewerThanTwoBlocksIsRefusedSayingHowManyRepetitions() {
        var g = SeededGenerator(seed: 1)
        #expect(throws: ShardError.self) {
            try Planner.initialPlan(for: Self.experiment(min: 6), shard: Shard(index: 0, count: 4), generator: &g)
        }
        do {
            _ = try Planner.initialPlan(for: Self.experiment(min: 6), shard: Shard(index: 0, count: 4), generator: &g)
        } catch {
            #expect(error.message.contains("shard 3/4 would get 1 of the 6"), "\(error.message)")
            #expect(error.message.contains("at least 8"), "\(error.message)")
        }
        #expect(Shard(index: 0, count: 4).blocks(of: 6) == 2 && Shard(index: 3, count: 4).blocks(of: 6) == 1)
    }

    // MARK: resume

    static func loaded(_ e: Experiment) -> LoadedExperiment {
        LoadedExperiment(experiment: e, path: "e.yaml", content: "", contentHash: "other")
    }

    @Test func resumeRefusesAChangedExperimentNamingTheKeyAndBothValues() {
        let stored = Self.record("r1", status: .killed)
        // Same resolved experiment (the top file's hash may differ): resumable.
        #expect(
            ResumeCheck.problem(
                stored: stored, loaded: Self.loaded(Self.experiment()), shard: nil, retryFailed: false, hasFailedRuns: false)
                == nil)
        // An included configuration changed a knob: named, with both values.
        let problem = ResumeCheck.problem(
            stored: stored, loaded: Self.loaded(Self.experiment(enabled: "madvise")), shard: nil, retryFailed: false,
            hasFailedRuns: false)
        let text = try? #require(problem)
        #expect(text?.contains("configurations[1].host.thp.enabled") == true, "\(problem ?? "")")
        #expect(text?.contains("\"always\"") == true && text?.contains("\"madvise\"") == true)
        #expect(ResumeCheck.difference(stored: Self.experiment(max: 6), now: Self.experiment(max: 9)) != nil)
    }

    @Test func resumeRefusesCompletedRunsAndAnotherShard() {
        let completed = Self.record("r1", status: .completed)
        let e = Self.loaded(Self.experiment())
        #expect(
            ResumeCheck.problem(stored: completed, loaded: e, shard: nil, retryFailed: false, hasFailedRuns: true)?.contains(
                "nothing to resume") == true)
        // --retry-failed with failed runs continues a completed one.
        #expect(ResumeCheck.problem(stored: completed, loaded: e, shard: nil, retryFailed: true, hasFailedRuns: true) == nil)
        let shard = Self.record("r2", status: .interrupted, shard: Shard(index: 1, count: 2))
        #expect(
            ResumeCheck.problem(
                stored: shard, loaded: e, shard: Shard(index: 0, count: 2), retryFailed: false, hasFailedRuns: false)?
                .contains("shard 1/2") == true)
        let running = Self.record("r3", status: .running)
        #expect(
            ResumeCheck.problem(stored: running, loaded: e, shard: nil, retryFailed: false, hasFailedRuns: false)?.contains(
                "still running") == true)
    }

    @Test func theStoreKeepsTheResumePointAndReopensTheRun() throws {
        let store = try Store(path: Fixtures.temporaryDirectory() + "/r/nestbench.sqlite")
        try store.begin(Self.record("r1", status: .running), generatorState: 12345)
        try store.setInFlight("r1", sequence: 3)
        #expect(try store.resumePoint("r1") == Store.ResumePoint(generatorState: 12345, inFlight: 3))
        try store.finish("r1", status: .killed)
        try store.reopen("r1")
        let back = try #require(try store.experimentRun("r1"))
        #expect(back.status == .running && back.finishedAt == nil)
    }

    @Test func underTheStoreLockARunLeftRunningOnAnotherHostIsKilled() throws {
        let store = try Store(path: Fixtures.temporaryDirectory() + "/r/nestbench.sqlite")
        try store.begin(Self.record("r1", status: .running))
        try store.setOwnerForTesting("r1", owner: "another-node 123 456")
        // Without the lock nothing tells whether another host's owner lives …
        #expect(try store.markKilled().isEmpty)
        // … with it, no writer can be alive.
        #expect(try store.markKilledUnderLock() == ["r1"])
        #expect(try store.experimentRun("r1")?.status == .killed)
    }

    // MARK: campaigns

    @Test func campaignSelectsItsExperimentRunsAndImportKeepsThemApart() throws {
        let dir = Fixtures.temporaryDirectory()
        let store = try Store(path: dir + "/a/nestbench.sqlite")
        try store.begin(Self.record("s0", campaign: "c1", shard: Shard(index: 0, count: 2)))
        try store.begin(Self.record("s1", campaign: "c1", shard: Shard(index: 1, count: 2)))
        try store.begin(Self.record("x", campaign: "c2"))
        try store.begin(Self.record("y"))
        #expect(try store.campaign("c1") == ["s0", "s1"])
        #expect(try store.campaign("c2") == ["x"])
        #expect(try store.campaign("none").isEmpty)
        let listed = try store.list()
        #expect(listed.first { $0.id == "s1" }?.campaign == "c1" && listed.first { $0.id == "s1" }?.shard == "1/2")
        #expect(try store.experimentRun("s1")?.shard == Shard(index: 1, count: 2))
        // Import into another store: campaign and shard travel; each shard stays its own run.
        let merged = try Store(path: dir + "/m/nestbench.sqlite")
        for id in ["s0", "s1"] {
            let bundle = try #require(try store.export(id))
            #expect(try merged.importRun(bundle, source: "\(id).json") == .imported(runs: 0))
        }
        #expect(try merged.campaign("c1") == ["s0", "s1"])
        #expect(try merged.experimentRun("s0")?.campaign == "c1")
    }

    static func testbedRun(
        _ id: String, _ seq: Int, _ config: String, rep: Int, value: Double, host: String
    ) -> RunRecord {
        RunRecord(
            experimentRunID: id,
            planned: PlannedRun(
                sequence: seq, configuration: config, workload: "random-access", condition: "clean", repetition: rep),
            status: .ok, startedAt: Date(), endedAt: Date(),
            metrics: [Metric(name: "ops_per_sec", value: value, unit: "ops/s", polarity: .higherIsBetter, source: "workload")],
            provenance: [Testbed.hostKey: host, Testbed.fingerprintKey: "cpu | k | 1 bytes"])
    }

    @Test func aCampaignPoolsShardsNumberingRepetitionsOn() {
        let e = makeExperiment()
        let plan0 = [PlannedRun(sequence: 0, configuration: "base", workload: "random-access", condition: "clean", repetition: 1)]
        let plan1 = [PlannedRun(sequence: 0, configuration: "base", workload: "random-access", condition: "clean", repetition: 1)]
        let r0 = Self.record("s0", experiment: e, campaign: "c", shard: Shard(index: 0, count: 2), plan: plan0)
        let r1 = Self.record("s1", experiment: e, campaign: "c", shard: Shard(index: 1, count: 2), plan: plan1)
        let pooled = Campaign(
            id: "c", records: [r1, r0],
            runs: [
                "s0": [Self.testbedRun("s0", 0, "base", rep: 1, value: 1, host: "a")],
                "s1": [Self.testbedRun("s1", 0, "base", rep: 1, value: 1, host: "b")],
            ])
        #expect(pooled.record.campaign == "c" && pooled.record.status == .completed)
        #expect(pooled.runs.map(\.experimentRunID) == ["s0", "s1"])
        #expect(pooled.runs.map(\.planned.repetition) == [1, 2], "shard 1's repetition follows shard 0's")
        #expect(pooled.record.plan.map(\.repetition) == [1, 2])
        #expect(Campaign.problem([r0, Self.record("z", experiment: Self.experiment())]) != nil)
    }

    // MARK: testbeds

    /// Base and candidate runs on each testbed: candidate = base × its ratio, small noise.
    static func testbedRuns(_ ratios: [String: Double], runsPerSide: Int = 6, id: String = "e") -> [RunRecord] {
        var runs: [RunRecord] = []
        let noise = [0.0, 0.004, -0.003, 0.002, -0.001, 0.003, -0.002, 0.001]
        for (t, (host, ratio)) in ratios.sorted(by: { $0.key < $1.key }).enumerated() {
            for i in 0..<runsPerSide {
                let base = 100 * (1 + noise[i % noise.count])
                runs.append(testbedRun("\(id)\(t)", 2 * i, "base", rep: i + 1, value: base, host: host))
                runs.append(
                    testbedRun(
                        "\(id)\(t)", 2 * i + 1, "cand", rep: i + 1, value: base * ratio * (1 - noise[(i + 3) % noise.count]),
                        host: host))
            }
        }
        return runs
    }

    @Test func theTestbedIsTheTopLevelOfTheBootstrap() throws {
        func values(_ runs: [RunRecord], _ config: String) -> [TestbedValue] {
            runs.filter { $0.planned.configuration == config }.map {
                TestbedValue(value: $0.metric("ops_per_sec")!.value!, group: $0.bootstrapGroup, testbed: $0.testbed!)
            }
        }
        let runs = Self.testbedRuns(["a": 1.10, "b": 1.20])
        let r = Statistics.testbedBootstrapRatio(values(runs, "cand"), values(runs, "base"), resamples: 2000)
        #expect(r.perTestbed.map(\.testbed) == ["a (cpu | k | 1 bytes)", "b (cpu | k | 1 bytes)"])
        #expect(abs(r.perTestbed[0].estimate.ratio - 1.10) < 0.01 && abs(r.perTestbed[1].estimate.ratio - 1.20) < 0.01)
        // Combined: the geometric mean of the per-testbed ratios.
        let expected = (r.perTestbed[0].estimate.ratio * r.perTestbed[1].estimate.ratio).squareRoot()
        #expect(abs(r.combined.ratio - expected) < 1e-12)
        let lo = try #require(r.combined.lower)
        let hi = try #require(r.combined.upper)
        #expect(lo <= expected && expected <= hi)
        // Ratios per testbed, then combined: each testbed weighs the same, however many runs it
        // has (pooling the runs would let the bigger testbed dominate).
        let unbalanced =
            Self.testbedRuns(["a": 1.10], runsPerSide: 8, id: "big") + Self.testbedRuns(["b": 1.20], runsPerSide: 2, id: "small")
        let u = Statistics.testbedBootstrapRatio(values(unbalanced, "cand"), values(unbalanced, "base"))
        #expect(abs(u.combined.ratio - (1.10 * 1.20).squareRoot()) < 0.005, "\(u.combined.ratio)")
        let pooled = Statistics.bootstrapRatio(
            values(unbalanced, "cand").map { GroupedValue(value: $0.value, group: $0.group) },
            values(unbalanced, "base").map { GroupedValue(value: $0.value, group: $0.group) })
        #expect(pooled.ratio < 1.125, "pooled runs lean to the big testbed: \(pooled.ratio)")
        // A testbed with only one side has no ratio and is left out.
        let oneSided = values(runs, "cand") + [TestbedValue(value: 50, group: "g", testbed: "lonely")]
        #expect(Statistics.testbedBootstrapRatio(oneSided, values(runs, "base")).perTestbed.count == 2)
        // Resampling testbeds can only give ratios between the testbeds' extremes, near them.
        #expect(lo > 1.05 && hi < 1.25)
        // 1.10 vs 1.20 with < 1% noise: two testbeds that disagree are both flagged.
        #expect(Set(r.disagreeing) == Set(r.perTestbed.map(\.testbed)))
        // Agreeing testbeds are not.
        let same = Self.testbedRuns(["a": 1.10, "b": 1.101])
        #expect(Statistics.testbedBootstrapRatio(values(same, "cand"), values(same, "base")).disagreeing.isEmpty)
    }

    @Test func aTestbedWhoseCIExcludesTheCombinedRatioIsFlagged() throws {
        // The micro's declarations: ops_per_sec is its primary metric.
        let e = WorkloadRegistry.standard().declaring(makeExperiment())
        #expect(e.primaryMetric(of: e.workloads[0]) == "ops_per_sec")
        let runs = Self.testbedRuns(["a": 1.10, "b": 1.11, "c": 1.10, "odd": 1.60])
        let comparisons = Comparator.comparisons(experiment: e, runs: runs)
        let t = TestbedAnalysis.comparisons(experiment: e, runs: runs, comparisons: comparisons)
        let ops = t.first { $0.metric == "ops_per_sec" }
        #expect(ops?.perTestbed.count == 4)
        #expect(ops?.perTestbed.first { $0.testbed.hasPrefix("odd") }?.disagrees == true)
        #expect(ops?.perTestbed.filter(\.disagrees).count == 1, "only the odd one: \(ops?.perTestbed ?? [])")
        // One testbed: nothing to combine.
        let one = Self.testbedRuns(["a": 1.10])
        #expect(
            TestbedAnalysis.comparisons(experiment: e, runs: one, comparisons: Comparator.comparisons(experiment: e, runs: one))
                .isEmpty)
        #expect(TestbedAnalysis.testbeds(runs).count == 4)
        let report = Report(record: Self.record("e0", experiment: e), runs: runs)
        #expect(report.testbeds?.count == 4 && report.testbedRatios?.isEmpty == false)
        #expect(report.notes.contains { $0.contains("testbed odd") && $0.contains("disagrees") })
    }

    // MARK: the run in flight at a crash

    /// A resume's placeholder for the run in flight carries the testbed of the attempt that
    /// stopped: that of its last run stored before the stop (earlier placeholders measured
    /// nothing and do not count), else the machine the experiment run started on.
    @Test func theRunInFlightCarriesTheTestbedOfTheAttemptThatStopped() {
        let stored = Self.record("e", host: "first")
        var earlier = Self.testbedRun("e", 0, "base", rep: 1, value: 1, host: "a")
        earlier.endedAt = Date(timeIntervalSince1970: 1000)
        var last = Self.testbedRun("e", 1, "cand", rep: 1, value: 1, host: "b")
        last.endedAt = Date(timeIntervalSince1970: 2000)
        var placeholder = Self.testbedRun("e", 2, "base", rep: 2, value: 1, host: "c")
        placeholder.status = .interrupted
        placeholder.provenance["resumed_at"] = "then"
        placeholder.endedAt = Date(timeIntervalSince1970: 3000)
        let t = Orchestrator.stoppedTestbed(stored, runs: [last, placeholder, earlier])
        #expect(t[Testbed.hostKey] == "b" && t[Testbed.fingerprintKey] == "cpu | k | 1 bytes")
        #expect(t["testbed.from"]?.contains("#1") == true)
        let none = Orchestrator.stoppedTestbed(stored, runs: [placeholder])
        #expect(none[Testbed.hostKey] == "first" && none[Testbed.fingerprintKey] == "c | k | 1 bytes")
        #expect(none["testbed.from"] == "the machine the experiment run started on")
    }

    /// An interrupted run without a testbed (a placeholder an older nestbench stored) is counted
    /// under no testbed: the report does not invent an "unrecorded" one beside the real one.
    @Test func anInterruptedRunWithNoTestbedIsCountedUnderNone() {
        let runs = Self.testbedRuns(["a": 1.10])
        let lost = RunRecord(
            experimentRunID: "e0",
            planned: PlannedRun(
                sequence: 99, configuration: "base", workload: "random-access", condition: "clean", repetition: 7),
            status: .interrupted, reason: "in flight", startedAt: Date(), endedAt: Date(), provenance: ["resumed_at": "then"])
        let testbeds = TestbedAnalysis.testbeds(runs + [lost])
        #expect(testbeds.map(\.testbed) == ["a (cpu | k | 1 bytes)"] && testbeds[0].runs == runs.count)
        let report = Report(record: Self.record("e0", shard: Shard(index: 0, count: 2)), runs: runs + [lost])
        #expect(!ReportRenderer.text(report, markdown: false, allMetrics: false).contains(TestbedAnalysis.unrecorded))
        // Runs of a store from before testbeds were recorded are still "unrecorded".
        var old = runs[0]
        old.provenance = [:]
        #expect(TestbedAnalysis.testbeds([old]).map(\.testbed) == [TestbedAnalysis.unrecorded])
    }

    // MARK: CSV

    /// The CSV report lists the testbeds where the table report does, as further CSV tables after
    /// a blank line each: the testbeds, then each primary comparison per testbed and combined.
    @Test func theCSVReportListsTestbedsAndPerTestbedRatios() throws {
        let e = WorkloadRegistry.standard().declaring(makeExperiment())
        let runs = Self.testbedRuns(["a": 1.10, "b": 1.11, "c": 1.10, "odd": 1.60])
        let report = Report(record: Self.record("e0", experiment: e), runs: runs)
        let csv = ReportRenderer.csv(report)
        let sections = csv.trimmingCharacters(in: .newlines).components(separatedBy: "\n\n")
        #expect(sections.count == 3, "\(csv)")
        let comparisons = sections[0].split(separator: "\n")
        #expect(comparisons.first?.hasPrefix("workload,condition,configuration,metric,unit,mean,") == true)
        #expect(comparisons.count == report.comparisons.count + 1)
        let testbeds = try #require(sections.count > 1 ? sections[1].split(separator: "\n").map(String.init) : nil)
        #expect(testbeds.first == "testbed,runs,experiment_runs")
        #expect(testbeds.dropFirst().map { $0.split(separator: ",")[0] }.map(String.init) == report.testbeds?.map(\.testbed))
        #expect(testbeds.contains("odd (cpu | k | 1 bytes),12,e3"), "\(testbeds)")
        let ratios = try #require(sections.count > 2 ? sections[2].split(separator: "\n").map(String.init) : nil)
        #expect(ratios.first == "workload,condition,configuration,metric,testbed,ratio,ratio_ci_lo,ratio_ci_hi,disagrees,method")
        let ops = try #require(report.testbedRatios?.first { $0.metric == "ops_per_sec" })
        let opsRows = ratios.filter { $0.hasPrefix("random-access,clean,cand,ops_per_sec,") }
        #expect(opsRows.count == ops.perTestbed.count + 1)
        #expect(
            opsRows.contains {
                $0.hasPrefix("random-access,clean,cand,ops_per_sec,odd (cpu | k | 1 bytes),") && $0.hasSuffix(",true,")
            })
        #expect(opsRows.last?.hasPrefix("random-access,clean,cand,ops_per_sec,combined,\(ops.ratio!),") == true)
        // One testbed, no campaign or shard: no testbed table (as in the table report).
        let one = Report(record: Self.record("e1", experiment: e), runs: Self.testbedRuns(["a": 1.10]))
        #expect(!ReportRenderer.csv(one).contains("testbed"))
        // One shard of a campaign on one testbed: its testbed, no ratios to combine.
        let shard = Report(
            record: Self.record("e1", experiment: e, campaign: "c", shard: Shard(index: 0, count: 2)),
            runs: Self.testbedRuns(["a": 1.10]))
        let shardSections = ReportRenderer.csv(shard).trimmingCharacters(in: .newlines).components(separatedBy: "\n\n")
        #expect(shardSections.count == 2 && shardSections.last == "testbed,runs,experiment_runs\na (cpu | k | 1 bytes),12,e0")
    }
}
