import Foundation
import GRDB
import NestBenchModel
import NestBenchStats
import Testing

@testable import NestBenchAnalysis
@testable import NestBenchStore

@Suite("A/B compare: verdicts, thresholds, exit codes")
struct ABCompareTests {
    let base = Synthetic.runs("a", ["base": [100, 101, 99, 100.5, 99.5]])

    func compare(_ candidate: [Double], thresholds: ThresholdSet = ThresholdSet()) -> ABComparison {
        let cand = Synthetic.runs("b", ["base": candidate])
        return ABComparator.compare(
            baseline: base, candidate: cand, baselineLabel: "a:base", candidateLabel: "b:base", thresholds: thresholds,
            primary: ["ops_per_sec"], alpha: 0.05)
    }

    @Test func outcomesMapToOrdoOneExitCodes() {
        let aa = compare([100.2, 100.8, 99.1, 100.1, 99.7])
        #expect(aa.outcome == .noChange && aa.outcome.exitCode(failOnImprovement: true) == 0)
        let faster = compare([120, 121, 119, 120.5, 119.5])
        #expect(faster.outcome == .improvement)
        #expect(faster.outcome.exitCode(failOnImprovement: true) == 4)
        #expect(faster.outcome.exitCode(failOnImprovement: false) == 0)
        let slower = compare([80, 81, 79, 80.5, 79.5])
        #expect(slower.outcome == .regression && slower.outcome.exitCode(failOnImprovement: false) == 2)
    }

    @Test func changesBelowTheThresholdAreSame() {
        // 3% slower, significant, but under the default 5%.
        let r = compare([97, 98, 96, 97.5, 96.5])
        #expect(r.verdicts.first { $0.metric == "ops_per_sec" }?.verdict == "same")
        let strict = compare(
            [97, 98, 96, 97.5, 96.5], thresholds: ThresholdSet(perMetric: ["ops_per_sec": MetricThreshold(relative: 0.02)]))
        #expect(strict.outcome == .regression)
    }

    @Test func onlyJudgedMetricsDecide() {
        // wall_seconds is reported unless named or --all-metrics.
        let r = compare([120, 121, 119, 120.5, 119.5])
        #expect(r.verdicts.first { $0.metric == "wall_seconds" }?.verdict == "reported")
        let all = compare([120, 121, 119, 120.5, 119.5], thresholds: ThresholdSet(allMetrics: true))
        #expect(all.verdicts.first { $0.metric == "wall_seconds" }?.verdict == "improvement")
        // Polarity override: treat higher wall_seconds as better (nonsense, but the user decides).
        let flipped = compare(
            [120, 121, 119, 120.5, 119.5],
            thresholds: ThresholdSet(perMetric: ["wall_seconds": MetricThreshold(relative: 0.05, polarity: .higherIsBetter)]))
        #expect(flipped.verdicts.first { $0.metric == "wall_seconds" }?.verdict == "regression")
        // --metric: only the named metrics decide.
        let only = compare([120, 121, 119, 120.5, 119.5], thresholds: ThresholdSet(only: ["wall_seconds"]))
        #expect(only.verdicts.first { $0.metric == "ops_per_sec" }?.verdict == "reported")
        #expect(only.verdicts.first { $0.metric == "wall_seconds" }?.verdict == "improvement")
    }

    @Test(arguments: [
        ("5%", nil, 0.05, nil), ("0.02", nil, 0.02, nil), ("ops_per_sec=3%", "ops_per_sec", 0.03, nil),
        ("wall_seconds=2%:lower", "wall_seconds", 0.02, Polarity.lowerIsBetter), ("p99: 10% lower", "p99", 0.1, .lowerIsBetter),
    ])
    func thresholdSyntax(text: String, metric: String?, value: Double, polarity: Polarity?) throws {
        let (m, t) = try ThresholdSet.parse(text, source: "--threshold")
        #expect(m == metric && abs(t.relative - value) < 1e-12 && t.polarity == polarity)
    }

    @Test func badThresholdsNameTheSource() throws {
        #expect(throws: ThresholdError.self) { try ThresholdSet.parse("ops_per_sec=fast", source: "--threshold") }
        do {
            _ = try ThresholdSet.parseFile("default: 3%\nops_per_sec: 5% sideways\n", path: "t.txt")
            Issue.record("accepted a bad polarity")
        } catch {
            #expect(error.description.hasPrefix("t.txt:2:"))
        }
        let ok = try ThresholdSet.parseFile("# gates\ndefault: 3%\nops_per_sec: 5% higher\n", path: "t.txt")
        #expect(ok.defaultRelative == 0.03 && ok.perMetric["ops_per_sec"]?.relative == 0.05)
    }
}

@Suite("Nightly history, gate, JUnit, store")
struct NightlyTests {
    /// Stores `nights` experiment runs of one experiment; night i's ops_per_sec is level(i) with 1% noise.
    static func history(nights: Int, level: (Int) -> Double, store: Store, experiment: String = "nightly") throws -> [String] {
        let e = Synthetic.experiment(name: experiment)
        var ids: [String] = []
        var g = SplitMix64(seed: 42)
        let t0 = Date(timeIntervalSince1970: 1_700_000_000)
        for night in 0..<nights {
            let id = String(format: "\(experiment)-%04d", night)
            let values = (0..<3).map { _ in level(night) * (1 + Double.random(in: -0.01...0.01, using: &g)) }
            let runs = Synthetic.runs(id, ["base": values, "cand": values.map { $0 * 1.3 }])
            try store.begin(
                Synthetic.record(id, e, plan: runs.map(\.planned), at: t0 + Double(night) * 86_400, tags: ["commit": "c\(night)"])
            )
            for r in runs { try store.record(r) }
            ids.append(id)
        }
        return ids
    }

    @Test func regressionOfTheNewRunFailsTheGate() throws {
        let store = try Synthetic.store()
        let ids = try Self.history(nights: 30, level: { $0 == 29 ? 88 : 100 }, store: store)
        let series = Nightly.series(try store.history(experiment: "nightly"))
        #expect(series.first { $0.key.metric == "ops_per_sec" }?.points.count == 30)
        #expect(series.first?.points.last?.tags["commit"] == "c29")
        let checks = Nightly.check(series, runID: ids[29], primary: ["ops_per_sec"], settings: NightlySettings())
        let ops = checks.filter { $0.key.metric == "ops_per_sec" }
        #expect(ops.count == 2 && ops.allSatisfy { $0.verdict == "regression" }, "\(ops.map(\.verdict))")
        #expect(GateOutcome.of(checks.map(\.verdict)) == .regression)
        // An ordinary night passes.
        let quiet = Nightly.check(series, runID: ids[20], primary: ["ops_per_sec"], settings: NightlySettings())
        #expect(quiet.filter { $0.key.metric == "ops_per_sec" }.allSatisfy { $0.verdict == "same" })
        let xml = Nightly.junit(checks, experiment: "nightly", runID: ids[29])
        #expect(xml.contains("<testsuites name=\"nestbench nightly\" tests=\"2\" failures=\"2\""))
        #expect(xml.contains("<testcase classname=\"nightly\" name=\"random-access/clean/base\">"))
        #expect(xml.contains("<failure message=\"regression: ops_per_sec -11."))
    }

    @Test func gateUsesTheSegmentAfterTheLastChangePoint() throws {
        let store = try Synthetic.store()
        // A +20% step at night 15 (an accepted improvement); night 29 at the new level is fine,
        // night 29 back at the old level is a regression against the new segment.
        let ids = try Self.history(nights: 30, level: { $0 >= 15 ? 120 : 100 }, store: store)
        let series = Nightly.series(try store.history(experiment: "nightly"))
        let checks = Nightly.check(series, runID: ids[29], primary: ["ops_per_sec"], settings: NightlySettings())
        let c = try #require(checks.first { $0.key.metric == "ops_per_sec" && $0.key.configuration == "base" })
        #expect(c.verdict == "same")
        #expect(c.segmentStart == ids[15], "segment starts at the change point")
        #expect(c.changePoints.map(\.runID) == [ids[15]])
        #expect(c.changePoints.first?.tags["commit"] == "c15")
        let store2 = try Synthetic.store()
        let ids2 = try Self.history(nights: 30, level: { $0 >= 15 && $0 < 29 ? 120 : 100 }, store: store2)
        let checks2 = Nightly.check(
            Nightly.series(try store2.history(experiment: "nightly")), runID: ids2[29], primary: ["ops_per_sec"],
            settings: NightlySettings())
        #expect(checks2.first { $0.key.metric == "ops_per_sec" }?.verdict == "regression")
    }

    @Test func tooLittleHistoryIsSkippedNotFailed() throws {
        let store = try Synthetic.store()
        let ids = try Self.history(nights: 2, level: { _ in 100 }, store: store)
        let checks = Nightly.check(
            Nightly.series(try store.history(experiment: "nightly")), runID: ids[1], primary: ["ops_per_sec"],
            settings: NightlySettings())
        #expect(checks.filter { $0.key.metric == "ops_per_sec" }.allSatisfy { $0.verdict == "insufficient-history" })
        #expect(Nightly.junit(checks, experiment: "nightly", runID: ids[1]).contains("<skipped"))
    }

    @Test func exportImportMergesTestbeds() throws {
        let a = try Synthetic.store()
        let ids = try Self.history(nights: 3, level: { _ in 100 }, store: a)
        try a.record(Synthetic.run(ids[0], 99, "base", ops: 1), samples: [(5, "anon_huge_bytes", 2)])
        let bundle = try #require(try a.export(ids[0]))
        let data = try RunExport.encoder().encode(bundle)
        let back = try RunExport.decoder().decode(RunExport.self, from: data)
        let b = try Synthetic.store()
        #expect(try b.importRun(back, source: "f.json") == .imported(runs: 7))
        #expect(try b.importRun(back, source: "f.json") == .alreadyPresent)
        #expect(try b.origin(of: ids[0])?.contains("tb1") == true)
        let runs = try b.runs(of: ids[0])
        #expect(runs == (try a.runs(of: ids[0])))
        #expect(try b.export(ids[0])?.runs.last?.samples.first?.name == "anon_huge_bytes")
        var changed = back
        changed.runs.removeLast()
        #expect(throws: StoreError.self) { try b.importRun(changed, source: "g.json") }
        var wrong = back
        wrong.format = "other"
        #expect(throws: StoreError.self) { try b.importRun(wrong, source: "h.json") }
    }

    /// A store written by the v1 schema opens, migrates to v2, and keeps its runs.
    @Test func v1StoreMigrates() throws {
        let path = Fixtures.temporaryDirectory() + "/v1.sqlite"
        let queue = try DatabaseQueue(path: path)
        try Store.migrator.migrate(queue, upTo: "v1")
        try queue.write { db in
            try db.execute(
                sql: """
                    INSERT INTO experiment_run (id, experiment, file_path, content_hash, content, seed, experiment_json,
                      plan_json, machine_json, tags_json, started_at, status)
                    VALUES ('old', 'nightly', 'e.yaml', 'h', 'c', '1', ?, '[]', ?, '{"commit":"abc"}', '2026-01-01 00:00:00.000', 'completed')
                    """,
                arguments: [
                    try JSONEncoder().encode(Synthetic.experiment()), try JSONEncoder().encode(Synthetic.machine),
                ])
        }
        let store = try Store(path: path)
        #expect(try store.experimentRun("old")?.tags["commit"] == "abc")
        #expect(try store.origin(of: "old") == nil)
        try store.record(Synthetic.run("old", 0, "base", ops: 5))
        #expect(try store.history(experiment: "nightly").count == 2, "ops_per_sec and wall_seconds")
    }
}
