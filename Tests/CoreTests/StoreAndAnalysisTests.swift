import Foundation
import NestBenchModel
import Testing

@testable import NestBenchAnalysis
@testable import NestBenchStore

func makeExperiment() -> Experiment {
    Experiment(
        name: "e", baseline: "base",
        configurations: [Configuration(name: "base"), Configuration(name: "cand")],
        workloads: [WorkloadSpec(suite: "micro", name: "random-access")])
}

func run(_ id: String, _ seq: Int, _ config: String, _ value: Double?, status: RunStatus = .ok) -> RunRecord {
    RunRecord(
        experimentRunID: id,
        planned: PlannedRun(
            sequence: seq, configuration: config, workload: "random-access", condition: "clean",
            repetition: seq / 2 + 1),
        status: status, startedAt: Date(), endedAt: Date(),
        invocations: [Invocation(argv: ["/bin/x", "--size", "1"], environment: ["A": "1"], workingDirectory: "/tmp", cpus: [1])],
        metrics: [
            value.map { Metric(name: "ops_per_sec", value: $0, unit: "ops/s", polarity: .higherIsBetter, source: "workload") }
                ?? Metric.unavailable("ops_per_sec", unit: "ops/s", polarity: .higherIsBetter, source: "workload", reason: "x"),
            Metric.unavailable(
                "dtlb_load_walks", unit: "events", polarity: .lowerIsBetter, source: "perf",
                reason: "unavailable: no PMU"),
        ])
}

@Suite("Store and analysis")
struct StoreAndAnalysisTests {
    func record(_ id: String) -> ExperimentRunRecord {
        ExperimentRunRecord(
            id: id, experiment: makeExperiment(), filePath: "e.yaml", contentHash: "abc", content: "name: e",
            seed: UInt64.max, plan: [], startedAt: Date(),
            machine: MachineDescription(hostname: "h", cpuModel: "c", cores: 2, memoryBytes: 1, kernel: "k", thp: [:]))
    }

    @Test func roundTrip() throws {
        let store = try Store(path: Fixtures.temporaryDirectory() + "/r/nestbench.sqlite")
        try store.begin(record("20260101-000000-aaaa"))
        try store.record(run("20260101-000000-aaaa", 0, "base", 10), samples: [(5, "anon_huge_bytes", 2)])
        try store.record(run("20260101-000000-aaaa", 1, "cand", nil, status: .failed))
        #expect(try store.latestID() == "20260101-000000-aaaa")
        #expect(try store.resolve("20260101") == "20260101-000000-aaaa")
        let back = try #require(try store.experimentRun("20260101-000000-aaaa"))
        #expect(back.seed == UInt64.max && back.experiment == makeExperiment())
        let runs = try store.runs(of: "20260101-000000-aaaa")
        #expect(runs.count == 2)
        #expect(runs[0].metric("ops_per_sec")?.value == 10)
        #expect(runs[0].invocations[0].argv == ["/bin/x", "--size", "1"])
        #expect(runs[1].status == .failed && runs[1].metric("ops_per_sec")?.value == nil)
        #expect(runs[1].metric("dtlb_load_walks")?.unavailable == "unavailable: no PMU")
    }

    @Test func aaIsSameAndRealDifferenceIsBetter() throws {
        let id = "x"
        let base = [100.0, 101, 99, 100.5, 99.5]
        var runs = base.enumerated().map { run(id, $0.offset * 2, "base", $0.element) }
        runs += [100.2, 100.8, 99.1, 100.1, 99.7].enumerated().map { run(id, $0.offset * 2 + 1, "cand", $0.element) }
        let aa = Comparator.comparisons(experiment: makeExperiment(), runs: runs)
        #expect(aa.first { $0.metric == "ops_per_sec" }?.verdict == "same")

        let faster = base.enumerated().map { run(id, $0.offset * 2 + 1, "cand", $0.element * 1.5) }
        let ab = Comparator.comparisons(
            experiment: makeExperiment(), runs: base.enumerated().map { run(id, $0.offset * 2, "base", $0.element) } + faster)
        let c = try #require(ab.first { $0.metric == "ops_per_sec" })
        #expect(c.verdict == "better")
        #expect(abs(try #require(c.ratio) - 1.5) < 1e-12)
        #expect(try #require(c.ratioCI)[0] > 1.4)
        #expect(c.n == 5 && c.nBaseline == 5)
    }

    @Test func jsonHasTheDocumentedShape() throws {
        var rec = record("j")
        rec.status = .completed
        let runs =
            [100.0, 101, 99].enumerated().map { run("j", $0.offset * 2, "base", $0.element) }
            + [150.0, 151, 149].enumerated().map { run("j", $0.offset * 2 + 1, "cand", $0.element) }
        let json = try ReportRenderer.render(Report(record: rec, runs: runs), as: .json)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        for key in ["run_id", "experiment", "baseline", "runs", "comparisons"] { #expect(object[key] != nil, "\(key)") }
        let run0 = try #require((object["runs"] as? [[String: Any]])?.first)
        for key in ["configuration", "workload", "condition", "repetition", "status", "metrics"] {
            #expect(run0[key] != nil, "runs[].\(key)")
        }
        #expect((run0["metrics"] as? [String: Any])?["dtlb_load_walks"] is NSNull)
        let c = try #require((object["comparisons"] as? [[String: Any]])?.first { $0["metric"] as? String == "ops_per_sec" })
        for key in [
            "workload", "condition", "configuration", "metric", "unit", "mean", "baseline_mean", "ratio",
            "ratio_ci", "p_value", "n", "n_baseline", "verdict",
        ] {
            #expect(c[key] != nil, "comparisons[].\(key)")
        }
        #expect(c["verdict"] as? String == "better")
        #expect((c["ratio_ci"] as? [Double])?.count == 2)
        let table = try ReportRenderer.render(Report(record: rec, runs: runs), as: .table)
        #expect(table.contains("dtlb_load_walks: unavailable: no PMU"))
    }
}
