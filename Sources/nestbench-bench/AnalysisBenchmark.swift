import Foundation
import NestBenchAnalysis
import NestBenchModel
import NestBenchStats
import NestBenchStore
import NestBenchWorkloads

/// Analysis of 10,000 stored runs: 100 nightly experiment runs × 100 runs (2 configurations ×
/// 5 workloads × 10 repetitions, 5 metrics each). Measured: the report of the newest run (every
/// comparison with Fieller/log-t/bootstrap CIs, repetition reasons, provenance, HTML) plus the
/// nightly check of it against the whole history (reading the history, change points per series,
/// gate). Reference: reading the same metric rows from the store without analysing them.
enum AnalysisBenchmark {
    static let nights = 100
    static let workloads = 5
    static let reps = 10

    static func run() async throws {
        let dir = NSTemporaryDirectory() + "nestbench-bench-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(path: dir + "/nestbench.sqlite")
        // Declared as the loader declares a real experiment (the micro's and the collectors' metrics).
        let experiment = WorkloadRegistry.standard().declaring(
            Experiment(
                name: "bench", baseline: "base", configurations: [Configuration(name: "base"), Configuration(name: "cand")],
                workloads: (0..<workloads).map { WorkloadSpec(label: "w\($0)", suite: "micro", name: "random-access") },
                repetitions: RepetitionPolicy(min: reps, max: reps, targetRelativeCI: 0.02),
                analysis: AnalysisSettings(primaryMetric: "ops_per_sec")))
        var generator = SplitMix64(seed: 1)
        let machine = MachineDescription(hostname: "bench", cpuModel: "cpu", cores: 2, memoryBytes: 1, kernel: "k", thp: [:])
        var latest = ""
        for night in 0..<nights {
            let id = String(format: "bench-%04d", night)
            var runs: [RunExport.ExportedRun] = []
            var sequence = 0
            for rep in 1...reps {
                for w in 0..<workloads {
                    for config in ["base", "cand"] {
                        let level = (config == "cand" ? 1.2 : 1.0) * (night >= 70 ? 0.9 : 1.0) * Double(100 + w)
                        let ops = level * (1 + Double.random(in: -0.02...0.02, using: &generator))
                        let metrics = [
                            Metric(name: "ops_per_sec", value: ops, unit: "ops/s", polarity: .higherIsBetter, source: "workload"),
                            Metric(name: "wall_seconds", value: 1e3 / ops, unit: "s", polarity: .lowerIsBetter, source: "timing"),
                            Metric(
                                name: "minor_faults", value: Double(65_000 + Int.random(in: 0...100, using: &generator)),
                                unit: "faults", polarity: .lowerIsBetter, source: "rusage"),
                            Metric(
                                name: "sojourn_p99_ms", value: 1e4 / ops * Double.random(in: 0.9...1.1, using: &generator),
                                unit: "ms", polarity: .lowerIsBetter, source: "workload"),
                            Metric.unavailable(
                                "dtlb_load_walks", unit: "events", polarity: .lowerIsBetter, source: "perf",
                                reason: "unavailable: no PMU"),
                        ]
                        let planned = PlannedRun(
                            sequence: sequence, configuration: config, workload: "w\(w)", condition: "clean", repetition: rep)
                        runs.append(
                            RunExport.ExportedRun(
                                record: RunRecord(
                                    experimentRunID: id, planned: planned, status: .ok, startedAt: Date(), endedAt: Date(),
                                    invocations: [
                                        Invocation(
                                            argv: ["/bin/nb-micro", "--ops", "1"], environment: [:], workingDirectory: "/",
                                            cpus: [1])
                                    ],
                                    metrics: metrics, provenance: ["knob:/sys/kernel/mm/transparent_hugepage/enabled": config]),
                                samples: []))
                        sequence += 1
                    }
                }
            }
            let record = ExperimentRunRecord(
                id: id, experiment: experiment, filePath: "bench.yaml", contentHash: id, content: "", seed: 1,
                plan: runs.map(\.record.planned), startedAt: Date(timeIntervalSince1970: 1_700_000_000 + Double(night) * 86_400),
                finishedAt: nil, status: .completed, machine: machine, tags: ["commit": "c\(night)"])
            _ = try store.importRun(
                RunExport(
                    format: RunExport.formatName, version: RunExport.currentVersion, exportedAt: Date(), origin: "bench",
                    experimentRun: record, runs: runs), source: "bench")
            latest = id
        }
        let total = nights * workloads * reps * 2
        var rows = 0
        let reference = try measure(iterations: 5) { rows = try store.countHistoryRows(experiment: "bench") }
        var checks: [NightlyCheck] = []
        var html = 0
        let analysis = try measure(iterations: 5) {
            guard let record = try store.experimentRun(latest) else { return }
            let report = Report(record: record, runs: try store.runs(of: latest))
            html = HTMLReport.render(report).utf8.count
            let series = Nightly.series(try store.history(experiment: "bench"), experiment: experiment)
            checks = Nightly.check(series, runID: latest, primary: ["ops_per_sec"], settings: NightlySettings())
        }
        let regressions = checks.filter { $0.verdict == "regression" }.count
        let stepFound = checks.filter { $0.key.metric == "ops_per_sec" && $0.changePoints.contains { $0.runID == "bench-0070" } }
        print(
            "\(total) stored runs, \(rows) metric rows; report HTML \(html) bytes; \(checks.count) series checked, "
                + "\(regressions) regressions; the −10% step at night 70 found in \(stepFound.count) of 10 ops_per_sec series")
        print(describe("read every metric row from the store (reference)", reference))
        print(describe("report of the newest run + nightly check against the history", analysis))
        print(String(format: "ratio to reference: %.2fx", median(analysis) / median(reference)))
        print(median(analysis) < 1 ? "target (well under 1 s): met" : "target (well under 1 s): NOT met")
    }
}
