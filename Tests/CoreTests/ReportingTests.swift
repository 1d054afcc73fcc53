import Foundation
import GRDB
import NestBenchModel
import NestBenchStats
import NestBenchWorkloads
import Testing

@testable import NestBenchAnalysis
@testable import NestBenchStore

/// Builds stored runs by hand for pure analysis tests (no machine involved).
enum Synthetic {
    static let machine = MachineDescription(hostname: "tb1", cpuModel: "cpu", cores: 2, memoryBytes: 1, kernel: "6.1", thp: [:])

    /// The checkout's adapters and suite files: the declarations real runs store.
    static let registry = WorkloadRegistry.standard(suites: SuiteLocator(directory: CLIPaths.packageRoot + "/Suites"))

    /// The experiment with its workloads' and the collectors' metric declarations, as the loader
    /// resolves them; the micro workloads also declare the synthetic per-run percentile these
    /// tests give them (`sojourn_p99_ms`, median of runs).
    static func declared(_ experiment: Experiment) -> Experiment {
        var e = registry.declaring(experiment)
        for i in e.workloads.indices where e.workloads[i].suite == "micro" {
            e.workloads[i].metrics? += [
                MetricDeclaration("sojourn_p99_ms", unit: "ms", polarity: .lowerIsBetter, center: .median, role: .secondary)
            ]
        }
        return e
    }

    static func experiment(
        name: String = "nightly", configurations: [String] = ["base", "cand"], workloads: [WorkloadSpec]? = nil,
        conditions: [String] = ["clean"], repetitions: RepetitionPolicy = RepetitionPolicy(min: 3, max: 5, targetRelativeCI: 0.02)
    ) -> Experiment {
        declared(
            Experiment(
                name: name, baseline: configurations[0], configurations: configurations.map { Configuration(name: $0) },
                workloads: workloads ?? [WorkloadSpec(suite: "micro", name: "random-access")],
                conditions: conditions.map { Condition(name: $0) }, repetitions: repetitions,
                analysis: AnalysisSettings(primaryMetric: "ops_per_sec")))
    }

    static func record(_ id: String, _ experiment: Experiment, plan: [PlannedRun] = [], at: Date, tags: [String: String] = [:])
        -> ExperimentRunRecord
    {
        ExperimentRunRecord(
            id: id, experiment: declared(experiment), filePath: "e.yaml", contentHash: "h-\(id)", content: "name: x", seed: 1,
            plan: plan, startedAt: at, finishedAt: at, status: .completed, machine: machine, tags: tags)
    }

    /// One run with ops_per_sec (a rate), wall_seconds (a time), sojourn_p99_ms (a per-run percentile).
    static func run(
        _ id: String, _ seq: Int, _ config: String, workload: String = "random-access", condition: String = "clean",
        ops: Double, rep: Int = 1, extra: [Metric] = [], provenance: [String: String] = [:]
    ) -> RunRecord {
        RunRecord(
            experimentRunID: id,
            planned: PlannedRun(sequence: seq, configuration: config, workload: workload, condition: condition, repetition: rep),
            status: .ok, startedAt: Date(), endedAt: Date(),
            invocations: [
                Invocation(argv: ["/bin/nb-micro", "--ops", "10"], environment: ["X": "1"], workingDirectory: "/tmp", cpus: [1])
            ],
            metrics: [
                Metric(name: "ops_per_sec", value: ops, unit: "ops/s", polarity: .higherIsBetter, source: "workload"),
                Metric(name: "wall_seconds", value: 1e6 / ops, unit: "s", polarity: .lowerIsBetter, source: "timing"),
                Metric(
                    name: "tlb.dtlb_load_walks", value: nil, unit: "events", polarity: .lowerIsBetter, source: "perf",
                    unavailable: "unavailable: no PMU", detail: "DTLB_LOAD_MISSES:WALK_COMPLETED (0x0e08)"),
                Metric(
                    name: "tlb_misses", value: nil, unit: "events", polarity: .lowerIsBetter, source: "perf",
                    unavailable: "unavailable: no PMU"),
            ] + extra,
            provenance: ["knob:/sys/kernel/mm/transparent_hugepage/enabled": config == "base" ? "never" : "always"]
                .merging(provenance) { $1 })
    }

    /// Interleaved runs of `configs` with the given values per configuration.
    static func runs(_ id: String, _ values: [String: [Double]], workload: String = "random-access") -> [RunRecord] {
        var out: [RunRecord] = []
        var seq = 0
        let reps = values.values.map(\.count).max() ?? 0
        for rep in 0..<reps {
            for config in values.keys.sorted() where rep < values[config]!.count {
                out.append(run(id, seq, config, workload: workload, ops: values[config]![rep], rep: rep + 1))
                seq += 1
            }
        }
        return out
    }

    static func store() throws -> Store { try Store(path: Fixtures.temporaryDirectory() + "/r/nestbench.sqlite") }
}

@Suite("Comparison centers and intervals")
struct CenterTests {
    /// What the checkout's adapters, suite files and collectors declare: rates by the harmonic
    /// mean, per-run percentiles and maxima by the median of runs, times and counts by the mean.
    @Test(arguments: [
        ("micro", "random-access", "ops_per_sec", MetricCenter.hmean), ("parsec", "canneal", "roi_throughput", .hmean),
        ("tailbench", "silo", "sojourn_p99_ms", .median), ("tailbench", "silo", "throughput_rps", .hmean),
        ("micro", "compute", "anon_huge_bytes_max", .median), ("tailbench", "silo", "sojourn_mean_ms", .amean),
        ("micro", "compute", "minor_faults", .amean), ("micro", "compute", "wall_seconds", .amean),
        ("micro", "compute", "max_rss_bytes", .amean), ("tailbench", "xapian", "sojourn_max_ms", .median),
        ("tailbench", "xapian", "queue_p95_ms", .median), ("parsec", "ferret", "roi_seconds", .amean),
    ])
    func declaredCenter(suite: String, app: String, metric: String, expected: MetricCenter) throws {
        let e = Synthetic.registry.declaring(
            Experiment(
                name: "x", baseline: "a", configurations: [Configuration(name: "a")],
                workloads: [WorkloadSpec(suite: suite, name: app)]))
        #expect(try #require(e.declaration(of: metric, workload: app)).center == expected)
    }

    @Test func p99IsComparedAcrossRunsNotAveraged() throws {
        let p99 = { (v: Double) in
            Metric(name: "sojourn_p99_ms", value: v, unit: "ms", polarity: .lowerIsBetter, source: "workload")
        }
        let base = [10.0, 10.2, 9.9, 10.1, 60.0].enumerated().map {
            Synthetic.run("x", $0.offset * 2, "base", ops: 100, extra: [p99($0.element)])
        }
        let cand = [8.0, 8.1, 7.9, 8.2, 8.05].enumerated().map {
            Synthetic.run("x", $0.offset * 2 + 1, "cand", ops: 100, extra: [p99($0.element)])
        }
        let c = try #require(
            Comparator.comparisons(experiment: Synthetic.experiment(), runs: base + cand).first { $0.metric == "sojourn_p99_ms" })
        #expect(c.center == "median")
        #expect(c.baselineMean == 10.1, "median of per-run p99, not the mean (20.04)")
        #expect(c.mean == 8.05)
        #expect(c.method.contains("Mann–Whitney"))
        #expect(abs(try #require(c.pValue) - 0.007936507936507936) < 1e-12, "exact Mann–Whitney 5 vs 5")
        #expect(c.verdict == "better")
        #expect(c.ratioCIBootstrap != nil && c.ratioCI == c.ratioCIBootstrap)
    }

    @Test func threeVersusThreeCannotBeSignificantWithMannWhitney() throws {
        let p99 = { (v: Double) in
            Metric(name: "sojourn_p99_ms", value: v, unit: "ms", polarity: .lowerIsBetter, source: "workload")
        }
        let runs =
            [10.0, 10.1, 10.2].enumerated().map { Synthetic.run("x", $0.offset * 2, "base", ops: 1, extra: [p99($0.element)]) }
            + [5.0, 5.1, 5.2].enumerated().map { Synthetic.run("x", $0.offset * 2 + 1, "cand", ops: 1, extra: [p99($0.element)]) }
        let c = try #require(
            Comparator.comparisons(experiment: Synthetic.experiment(), runs: runs).first { $0.metric == "sojourn_p99_ms" })
        #expect(c.verdict == "same")
        #expect(c.mannWhitneyFloor == 0.1)
        #expect(c.method.contains("cannot be significant"))
    }

    @Test func rateUsesHarmonicMeanAndFiellerOnReciprocals() throws {
        let runs = Synthetic.runs("x", ["base": [100, 110, 90, 105], "cand": [150, 160, 140, 155]])
        let c = try #require(
            Comparator.comparisons(experiment: Synthetic.experiment(), runs: runs).first { $0.metric == "ops_per_sec" })
        #expect(c.center == "hmean")
        #expect(abs(c.mean - Statistics.harmonicMean([150, 160, 140, 155])) < 1e-9)
        let expected = Statistics.harmonicMeanRatio([150, 160, 140, 155], [100, 110, 90, 105])
        #expect(c.ratioCI == [try #require(expected.lower), try #require(expected.upper)])
        #expect(c.ratioCILogT?.count == 2 && c.ratioCIBootstrap?.count == 2)
    }

    @Test func bootGroupsFromProvenanceMakeTheBootstrapHierarchical() throws {
        var runs: [RunRecord] = []
        for (i, v) in [100.0, 101, 120, 121, 99, 100].enumerated() {
            runs.append(Synthetic.run("x", i * 2, "base", ops: v, provenance: [RunRecord.bootProvenanceKey: "b\(i / 2)"]))
            runs.append(
                Synthetic.run("x", i * 2 + 1, "cand", ops: v * 1.1, provenance: [RunRecord.bootProvenanceKey: "c\(i / 2)"]))
        }
        let c = try #require(
            Comparator.comparisons(experiment: Synthetic.experiment(), runs: runs).first { $0.metric == "ops_per_sec" })
        #expect(c.bootstrapMethod?.contains("groups") == true)
    }
}

@Suite("Adaptive repetitions: why cells stopped")
struct RepetitionReasonTests {
    func status(_ values: [String: [Double]], max: Int, status: ExperimentRunRecord.Status = .completed) throws
        -> RepetitionStatus
    {
        let e = Synthetic.experiment(repetitions: RepetitionPolicy(min: 3, max: max, targetRelativeCI: 0.02))
        let runs = Synthetic.runs("x", values)
        let plan = runs.map(\.planned)
        let report = Report(record: Synthetic.record("x", e, plan: plan, at: Date()), runs: runs)
        _ = status
        return try #require(
            AdaptiveRepetitions.status(
                experiment: e, plan: plan, comparisons: report.comparisons, experimentStatus: status
            ).first)
    }

    @Test func reasons() throws {
        #expect(try status(["base": [100, 100.1, 99.9], "cand": [150, 150.2, 149.8]], max: 5).reason == .ciTargetMet)
        #expect(try status(["base": [100, 130, 80, 120, 90], "cand": [150, 110, 170, 120, 160]], max: 5).reason == .maxReached)
        #expect(try status(["base": [100, 130, 80], "cand": [150, 110, 170]], max: 5).reason == .adaptiveOff)
        #expect(
            try status(["base": [100, 130, 80], "cand": [150, 110, 170]], max: 5, status: .interrupted).reason == .stoppedEarly)
        #expect(try status(["base": [100], "cand": [150]], max: 5).reason == .tooFewRuns)
    }

    /// A condition comparison (fragmented vs clean in one configuration) that is too wide adds
    /// blocks to both of its cells, as a configuration comparison does.
    @Test func conditionComparisonsRepeatTheirBaselineConditionToo() {
        var e = Synthetic.experiment(
            configurations: ["only"], conditions: ["clean", "fragmented"],
            repetitions: RepetitionPolicy(min: 3, max: 6, targetRelativeCI: 0.02))
        e.analysis.baselineCondition = "clean"
        var runs: [RunRecord] = []
        for (i, (condition, ops)) in [
            ("clean", 100.0), ("fragmented", 60.0), ("clean", 130.0), ("fragmented", 80.0), ("clean", 90.0), ("fragmented", 50.0),
        ].enumerated() {
            runs.append(Synthetic.run("x", i, "only", condition: condition, ops: ops, rep: i / 2 + 1))
        }
        let comparisons = Comparator.comparisons(experiment: e, runs: runs)
        #expect(comparisons.contains { $0.versus == "only/clean" && $0.metric == "ops_per_sec" })
        let more = AdaptiveRepetitions.cellsNeedingMore(experiment: e, plan: runs.map(\.planned), comparisons: comparisons)
        #expect(
            more == [
                Cell(configuration: "only", workload: "random-access", condition: "fragmented"),
                Cell(configuration: "only", workload: "random-access", condition: "clean"),
            ])
    }

    @Test func orchestratorAndReportUseTheSameRule() {
        let e = Synthetic.experiment(repetitions: RepetitionPolicy(min: 3, max: 5, targetRelativeCI: 0.02))
        let runs = Synthetic.runs("x", ["base": [100, 130, 80], "cand": [150, 110, 170]])
        let comparisons = Comparator.comparisons(experiment: e, runs: runs)
        let more = AdaptiveRepetitions.cellsNeedingMore(experiment: e, plan: runs.map(\.planned), comparisons: comparisons)
        #expect(more.count == 2, "the wide cell and its baseline cell")
    }
}

@Suite("Reports: JSON shape, HTML figures")
struct ReportFormatTests {
    func quickstartLike() -> Report {
        let e = Synthetic.experiment(configurations: ["thp-never", "thp-always"])
        var runs = Synthetic.runs("q", ["thp-never": [100, 102, 98, 101], "thp-always": [140, 143, 139, 141]])
        runs = runs.map { r in
            var r = r
            r.planned.workload = "random-4g"
            return r
        }
        let e2 = Experiment(
            name: "quickstart", baseline: "thp-never", configurations: e.configurations,
            workloads: [WorkloadSpec(label: "random-4g", suite: "micro", name: "random-access", cpus: [1])],
            repetitions: e.repetitions, analysis: e.analysis)
        return Report(record: Synthetic.record("q", e2, plan: runs.map(\.planned), at: Date()), runs: runs)
    }

    @Test func jsonKeepsTheSkeletonShapeAndAddsFields() throws {
        let json = ReportRenderer.render(quickstartLike(), as: .json)
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        for key in ["run_id", "experiment", "baseline", "runs", "comparisons", "repetitions", "provenance", "workloads"] {
            #expect(o[key] != nil, "\(key)")
        }
        let c = try #require((o["comparisons"] as? [[String: Any]])?.first { $0["metric"] as? String == "ops_per_sec" })
        for key in [
            "workload", "condition", "configuration", "metric", "unit", "mean", "baseline_mean", "ratio", "ratio_ci",
            "p_value", "n", "n_baseline", "verdict", "center", "ratio_ci_log_t", "ratio_ci_bootstrap", "mann_whitney_p",
        ] {
            #expect(c[key] != nil, "comparisons[].\(key)")
        }
        let rep = try #require((o["repetitions"] as? [[String: Any]])?.first)
        #expect(["ci-target-met", "max-reached", "adaptive-off"].contains(rep["reason"] as? String ?? ""), "\(rep)")
        #expect(rep["explanation"] is String)
        let prov = try #require((o["provenance"] as? [[String: Any]])?.first { $0["configuration"] as? String == "thp-always" })
        let settings = try #require(prov["settings"] as? [String: [String]])
        #expect(settings["knob:/sys/kernel/mm/transparent_hugepage/enabled"] == ["always"])
    }

    @Test func htmlDrawsWhatWasMeasuredAndSaysWhatWasNot() {
        let html = HTMLReport.render(quickstartLike())
        #expect(html.contains("<svg class=\"figure\" id=\"fig11-clean\""))
        #expect(html.components(separatedBy: "class=\"bar\"").count - 1 == 1, "one bar: thp-always / random-4g")
        #expect(html.contains("class=\"baseline\""))
        #expect(html.contains("class=\"whisker\""))
        // TLB misses were unavailable: said, with the reason.
        #expect(html.contains("data-figure=\"fig12\""))
        #expect(html.contains("tlb_misses: unavailable: no PMU"))
        #expect(html.contains("DTLB_LOAD_MISSES:WALK_COMPLETED (0x0e08)"), "event encodings in the provenance")
        #expect(html.contains("data-figure=\"fig14\"") && html.contains("no colocated workloads"))
        #expect(html.contains("/bin/nb-micro --ops 10"), "command lines")
        #expect(!html.contains("<script") && !html.contains("http://") || !html.contains("src=\"http"))
    }

    /// A colocated group's run carries each member's metrics under its label; Fig. 14 draws one
    /// bar group per member ("a+b/a"), and the main figures leave the group out.
    @Test func colocatedMembersAreDrawnInFig14() {
        let members = [
            WorkloadSpec(label: "img-dnn", suite: "tailbench", name: "img-dnn"),
            WorkloadSpec(label: "silo", suite: "tailbench", name: "silo"),
        ]
        var group = WorkloadSpec(label: "img-dnn+silo", suite: "colocated", name: "img-dnn+silo")
        group.colocated = members
        let e = Synthetic.experiment(configurations: ["vanilla", "xgemini"], workloads: [group])
        var runs: [RunRecord] = []
        for (i, (config, base)) in [
            ("vanilla", 100.0), ("xgemini", 120.0), ("vanilla", 101.0), ("xgemini", 121.0), ("vanilla", 99.0), ("xgemini", 119.0),
        ].enumerated() {
            var r = Synthetic.run("c", i, config, workload: "img-dnn+silo", ops: base, rep: i / 2 + 1)
            r.metrics = [
                Metric(name: "img-dnn.throughput_rps", value: base, unit: "req/s", polarity: .higherIsBetter, source: "workload"),
                Metric(
                    name: "silo.throughput_rps", value: base * 2, unit: "req/s", polarity: .higherIsBetter, source: "workload"),
            ]
            runs.append(r)
        }
        let report = Report(record: Synthetic.record("c", e, plan: runs.map(\.planned), at: Date()), runs: runs)
        #expect(report.workloads.first?.role == "colocated" && report.workloads.first?.members == ["img-dnn", "silo"])
        let (bars, chosen) = HTMLReport.bars(FigureSpec.paper.first { $0.id == "fig14" }!, report)
        #expect(Set(bars["clean"]?.map(\.group) ?? []) == ["img-dnn+silo/img-dnn", "img-dnn+silo/silo", "geomean"])
        #expect(chosen == ["img-dnn+silo/img-dnn": "img-dnn.throughput_rps", "img-dnn+silo/silo": "silo.throughput_rps"])
        let silo = bars["clean"]?.first { $0.group == "img-dnn+silo/silo" }
        #expect(abs((silo?.ratio ?? 0) - 1.2) < 0.01, "\(String(describing: silo?.ratio))")
        #expect((HTMLReport.bars(FigureSpec.paper[0], report).byCondition).isEmpty, "Fig. 11 has no main workloads here")
    }
}

/// Renders a report in headless Chromium (Debian package `chromium`) and checks the SVG in the
/// DOM Chromium built; keeps a screenshot in .build/test-artifacts/ (not tracked).
@Suite("HTML report in headless Chromium", .serialized)
struct ChromiumTests {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    static func chromium(_ args: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try #require(chromium, "chromium is not installed (make deps installs it)"))
        p.arguments =
            ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=" + Fixtures.temporaryDirectory()]
            + args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test(.timeLimit(.minutes(2)))
    func figuresAreDrawn() throws {
        let report = ReportFormatTests().quickstartLike()
        let dir = Fixtures.temporaryDirectory()
        let file = dir + "/report.html"
        #expect(FileManager.default.createFile(atPath: file, contents: Data(HTMLReport.render(report).utf8)))
        let (status, dom) = try Self.chromium(["--dump-dom", "file://" + file])
        #expect(status == 0)
        #expect(dom.contains("<svg class=\"figure\" id=\"fig11-clean\""), "the parsed DOM has the figure")
        #expect(dom.components(separatedBy: "<rect class=\"bar\"").count - 1 == 1)
        #expect(dom.components(separatedBy: "<line class=\"whisker\"").count - 1 == 1)
        #expect(dom.contains("<line class=\"baseline\""))
        #expect(dom.contains("Not drawn: no TLB misses"))
        let artifacts = CLIPaths.packageRoot + "/.build/test-artifacts"
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let png = artifacts + "/report-quickstart.png"
        try? FileManager.default.removeItem(atPath: png)
        let (shot, _) = try Self.chromium(["--screenshot=" + png, "--window-size=1100,1400", "file://" + file])
        #expect(shot == 0)
        let size = (try? FileManager.default.attributesOfItem(atPath: png)[.size] as? Int) ?? 0
        #expect(size > 10_000, "screenshot written: \(png)")
    }
}

enum CLIPaths {
    static let packageRoot: String = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { dir.deleteLastPathComponent() }
        return dir.path
    }()
}
