import Foundation
import NestBenchCollectors
import NestBenchConfig
import NestBenchModel
import NestBenchWorkloads
import Testing

@testable import NestBenchAnalysis

@Suite("Metric declarations")
struct MetricDeclarationTests {
    @Test(arguments: [
        ("vmstat.*", "vmstat.thp_fault_alloc", true), ("vmstat.*", "vmstat", false), ("*_p99_ms", "queue_p99_ms", true),
        ("*_p99_ms", "queue_p99_msx", false), ("monitor.fmfi*.before", "monitor.fmfi9.before", true),
        ("monitor.fmfi*.before", "monitor.fmfi9.after", false), ("*.fmfi", "L1.fmfi", true), ("a*b*c", "abc", true),
        ("a*b*c", "axxbyyc", true), ("a*b*c", "axxbyy", false), ("tlb_misses", "tlb_misses", true),
        ("tlb_misses", "tlb_misses2", false),
    ])
    func patterns(pattern: String, metric: String, expected: Bool) {
        #expect(MetricDeclaration(pattern, polarity: .neutral).matches(metric) == expected)
    }

    @Test func exactNamesWinOverPatternsAndMembersArePrefixed() throws {
        var member = WorkloadSpec(label: "silo", suite: "fake", name: "silo")
        member.metrics = [
            MetricDeclaration("*_ms", polarity: .lowerIsBetter, center: .amean, role: .diagnostic),
            MetricDeclaration("p99_ms", polarity: .lowerIsBetter, center: .median, role: .primary),
        ]
        var group = WorkloadSpec(label: "a+b", suite: "colocated", name: "a+b")
        group.colocated = [member]
        var e = Experiment(name: "x", baseline: "a", configurations: [Configuration(name: "a")], workloads: [group])
        e.collectorMetrics = [MetricDeclaration("wall_seconds", polarity: .lowerIsBetter)]
        #expect(try #require(e.declaration(of: "silo.p99_ms", workload: "a+b")).center == .median)
        #expect(try #require(e.declaration(of: "silo.mean_ms", workload: "a+b")).role == .diagnostic)
        #expect(e.declaration(of: "silo.wall_seconds", workload: "a+b") != nil, "collectors' metrics per member too")
        #expect(e.declaration(of: "p99_ms", workload: "a+b") == nil, "a member's metric always carries its label")
        #expect(e.primaryMetric(of: group) == "silo.p99_ms")
    }

    @Test func aSuiteFileNeedsExactlyOnePrimaryPerApp() throws {
        let dir = Fixtures.temporaryDirectory()
        let file = dir + "/fake.yaml"
        let yaml = """
            suite: fake
            root_env: FAKE_ROOT
            parameters: {}
            inputs: {}
            metrics:
              - {name: a_ms, unit: ms, polarity: lower}
            apps:
              one: {dir: one, args: []}
            """
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        #expect {
            try SuiteDefinition.load(path: file)
        } throws: { error in
            "\(error)".contains("apps.one: expected exactly one metric with role primary")
        }
    }

    /// Stored experiments from before declarations: readers fill them from today's suite files;
    /// a workload whose suite is unknown stays undeclared (no headline) rather than guessed.
    @Test func oldStoredExperimentsGetDeclarationsAtLoad() throws {
        let old = Experiment(
            name: "old", baseline: "a", configurations: [Configuration(name: "a")],
            workloads: [WorkloadSpec(suite: "tailbench", name: "silo"), WorkloadSpec(suite: "gone", name: "x")])
        #expect(!old.hasMetricDeclarations)
        let e = Synthetic.registry.declaring(old)
        #expect(e.primaryMetric(of: e.workloads[0]) == "sojourn_p99_ms")
        #expect(e.primaryMetric(of: e.workloads[1]) == nil)
        #expect(e.collectorMetrics == CollectorMetricDeclarations.standard)
    }
}

/// Issue 12's "Done when": a suite added through a YAML file, with its metrics declared there,
/// gets correct verdicts, geometric means and figures with no Swift change — nothing in the
/// analysis knows these metric names.
@Suite("A suite added through YAML")
struct YAMLSuiteTests {
    /// A new suite (`fakebench`, run as Tailbench apps are) of two made-up apps whose metrics no
    /// Swift code names.
    static let suiteYAML = """
        suite: fakebench
        runner: tailbench
        root_env: FAKE_TAILBENCH_ROOT
        parameters:
          mode: {default: integrated, choices: [integrated, loopback]}
        inputs: {}
        metrics:
          - {name: frobs_per_sec, unit: frob/s, polarity: higher, center: hmean, role: primary, figures: [fig11, fig14]}
          - {name: stall_p99_us, unit: us, polarity: lower, center: median, role: secondary, figures: [fig13-p99]}
          - {name: widget_count, unit: widgets, polarity: neutral, role: diagnostic}
        apps:
          frobnicator: {dir: frob, integrated: frob_integrated, args: []}
          blorper:
            dir: blorp
            integrated: blorp_integrated
            args: []
            metrics:
              - {name: blorp_latency_ms, unit: ms, polarity: lower, center: amean, role: primary, figures: [fig13-mean]}
        """

    static let experimentYAML = """
        name: fake-suite
        baseline: old
        configurations:
          old: {host: {thp: {enabled: never}}}
          new: {host: {thp: {enabled: always}}}
        workloads:
          - {name: frobnicator, suite: fakebench}
          - {name: blorper, suite: fakebench}
        """

    /// A suites directory holding the checkout's suite files, an experiment file (no `runner:`, not
    /// a suite) and the new suite `fakebench.yaml`; the standard registry finds it by itself.
    func load() throws -> Experiment {
        let dir = Fixtures.temporaryDirectory()
        for file in ["tailbench.yaml", "parsec.yaml", "quickstart.yaml"] {
            try FileManager.default.copyItem(atPath: CLIPaths.packageRoot + "/Suites/" + file, toPath: dir + "/" + file)
        }
        try Self.suiteYAML.write(toFile: dir + "/fakebench.yaml", atomically: true, encoding: .utf8)
        let registry = WorkloadRegistry.standard(suites: SuiteLocator(directory: dir))
        #expect(registry.adapters.map(\.suite) == ["micro", "tailbench", "parsec", "fakebench"])
        return try ExperimentLoader.parse(Self.experimentYAML, file: "fake.yaml", catalog: registry, environment: [:])
    }

    /// Runs whose metric records say nothing useful themselves (neutral, no unit): only the
    /// declarations can give the right verdicts.
    func runs() -> [RunRecord] {
        func m(_ name: String, _ v: Double) -> Metric {
            Metric(name: name, value: v, unit: "", polarity: .neutral, source: "workload")
        }
        var runs: [RunRecord] = []
        var seq = 0
        for rep in 0..<5 {
            for config in ["old", "new"] {
                let new = config == "new"
                let jitter = Double(rep) * 0.5
                // frobs up 20% (better); stall p99 down with one wild baseline run (median, not mean);
                // blorp latency up 30% (worse).
                let stall = new ? 80 + jitter : (rep == 2 ? 900 : 100 + jitter)
                let metrics: [String: [Metric]] = [
                    "frobnicator": [
                        m("frobs_per_sec", (new ? 120 : 100) + jitter), m("stall_p99_us", stall), m("widget_count", 7),
                    ],
                    "blorper": [m("blorp_latency_ms", (new ? 13 : 10) + jitter / 10)],
                ]
                for workload in ["frobnicator", "blorper"] {
                    runs.append(
                        RunRecord(
                            experimentRunID: "f",
                            planned: PlannedRun(
                                sequence: seq, configuration: config, workload: workload, condition: "clean", repetition: rep + 1),
                            status: .ok, startedAt: Date(), endedAt: Date(), metrics: metrics[workload]!))
                    seq += 1
                }
            }
        }
        return runs
    }

    @Test func verdictsGeomeansAndFiguresFollowTheDeclarations() throws {
        let e = try load()
        #expect(e.hasMetricDeclarations)
        let record = ExperimentRunRecord(
            id: "f", experiment: e, filePath: "fake.yaml", contentHash: "h", content: Self.experimentYAML, seed: 1,
            plan: runs().map(\.planned), startedAt: Date(), finishedAt: Date(), status: .completed, machine: Synthetic.machine)
        let report = Report(record: record, runs: runs())
        func c(_ workload: String, _ metric: String) throws -> Comparison {
            try #require(report.comparisons.first { $0.workload == workload && $0.metric == metric })
        }
        let frobs = try c("frobnicator", "frobs_per_sec")
        #expect(frobs.verdict == "better" && frobs.polarity == .higherIsBetter && frobs.center == "hmean")
        #expect(frobs.unit == "frob/s" && frobs.role == .primary)
        let stall = try c("frobnicator", "stall_p99_us")
        #expect(stall.center == "median" && stall.baselineMean == 101.5, "median of runs, the 900 µs run does not move it")
        #expect(stall.polarity == .lowerIsBetter)
        let blorp = try c("blorper", "blorp_latency_ms")
        #expect(blorp.verdict == "worse" && blorp.role == .primary)
        #expect(try c("frobnicator", "widget_count").verdict == "same")

        // One geometric mean per declared primary metric, never across them.
        #expect(Set(report.geomeans.map(\.metric)) == ["frobs_per_sec", "blorp_latency_ms"])
        for g in report.geomeans { #expect(g.workloads.count == 1, "\(g.metric): \(g.workloads)") }
        #expect(report.workloads.map(\.primaryMetric) == ["frobs_per_sec", "blorp_latency_ms"])
        #expect(report.repetitions.map(\.metric).sorted() == ["blorp_latency_ms", "frobs_per_sec"])

        // Figures: each draws the metric its declaration names.
        let fig11 = HTMLReport.bars(try #require(FigureSpec.paper.first { $0.figure == .fig11 }), report)
        #expect(fig11.metrics == ["frobnicator": "frobs_per_sec"])
        #expect(abs((fig11.byCondition["clean"]?.first?.ratio ?? 0) - 1.2) < 0.01)
        let p99 = HTMLReport.bars(try #require(FigureSpec.paper.first { $0.figure == .fig13P99 }), report)
        #expect(p99.metrics == ["frobnicator": "stall_p99_us"])
        let mean = HTMLReport.bars(try #require(FigureSpec.paper.first { $0.figure == .fig13Mean }), report)
        #expect(mean.metrics == ["blorper": "blorp_latency_ms"])
        let html = HTMLReport.render(report)
        #expect(html.contains("<svg class=\"figure\" id=\"fig11-clean\""))
        #expect(html.contains("<svg class=\"figure\" id=\"fig13-p99-clean\""))
        #expect(html.contains("<svg class=\"figure\" id=\"fig13-mean-clean\""))
    }
}

/// Issue 14: the geometric means of the paper's evaluation never mix metrics or polarities.
@Suite("xgemini-eval geometric means")
struct PaperGeomeanTests {
    @Test func geometricMeansNeverMixMetrics() throws {
        let path = CLIPaths.packageRoot + "/Suites/xgemini-eval.yaml"
        let environment = [
            "GEMINI_KERNEL": path, "XGEMINI_HOST_KERNEL": path, "XGEMINI_GUEST_KERNEL": path, "NESTBENCH_KERNEL": path,
        ]
        let e = try ExperimentLoader.load(path: path, catalog: Synthetic.registry, environment: environment).experiment
        #expect(e.analysis.primaryMetric == nil, "the file leaves the primary metric to each workload's declaration")
        // Every workload reports both suites' headline metrics, so a rule that mixed them would show.
        var runs: [RunRecord] = []
        var seq = 0
        for rep in 1...3 {
            for config in e.configurations.map(\.name) {
                for w in e.workloads {
                    for condition in e.conditions.map(\.name) {
                        let f = config == e.baseline ? 1.0 : 1.1 + Double(rep) / 100
                        let prefixes = w.colocated?.map { "\($0.label)." } ?? [""]
                        let metrics = prefixes.flatMap { p in
                            [
                                Metric(
                                    name: p + "roi_throughput", value: f, unit: "1/s", polarity: .higherIsBetter,
                                    source: "workload"),
                                Metric(
                                    name: p + "sojourn_p99_ms", value: 10 / f, unit: "ms", polarity: .lowerIsBetter,
                                    source: "workload"),
                                Metric(
                                    name: p + "throughput_rps", value: 100 * f, unit: "req/s", polarity: .higherIsBetter,
                                    source: "timing"),
                            ]
                        }
                        runs.append(
                            RunRecord(
                                experimentRunID: "x",
                                planned: PlannedRun(
                                    sequence: seq, configuration: config, workload: w.label, condition: condition, repetition: rep
                                ),
                                status: .ok, startedAt: Date(), endedAt: Date(), metrics: metrics))
                        seq += 1
                    }
                }
            }
        }
        let comparisons = Comparator.comparisons(experiment: e, runs: runs)
        let geomeans = Comparator.geomeans(experiment: e, comparisons: comparisons)
        #expect(!geomeans.isEmpty)
        for g in geomeans {
            #expect(!g.metric.contains("+"), "one metric: \(g.metric)")
            for label in g.workloads.keys {
                let w = try #require(e.workload(labeled: label))
                let primary = try #require(e.primaryMetric(of: w))
                #expect(primary == g.metric || primary.hasSuffix("." + g.metric), "\(label): \(primary) in \(g.metric)")
                let d = try #require(e.declaration(of: primary, workload: label))
                #expect(d.polarity == g.polarity)
            }
        }
        // Per (condition, configuration): PARSEC's roi_throughput (higher) and Tailbench's
        // sojourn_p99_ms (lower), each over its own workloads.
        let cell = geomeans.filter { $0.condition == "clean" && $0.configuration == "xgemini" }
        #expect(Set(cell.map(\.metric)) == ["roi_throughput", "sojourn_p99_ms"])
        #expect(cell.first { $0.metric == "roi_throughput" }?.polarity == .higherIsBetter)
        #expect(cell.first { $0.metric == "sojourn_p99_ms" }?.polarity == .lowerIsBetter)
        #expect(cell.first { $0.metric == "roi_throughput" }?.workloads.count == 8, "the PARSEC workloads")
        #expect(cell.first { $0.metric == "sojourn_p99_ms" }?.workloads.count == 10, "7 Tailbench + 3 colocated pairs")
    }
}
