import Foundation
import NestBenchModel
import OrderedCollections
import TextTable

/// One measured run as reports show it.
public struct ReportRun: Codable, Sendable, Hashable {
    public var sequence: Int
    public var configuration: String
    public var workload: String
    public var condition: String
    public var repetition: Int
    public var status: String
    public var reason: String?
    /// name → value; null where the metric was unavailable.
    public var metrics: [String: Double?]
    /// Layer provenance (knobs read back, pinning, console logs, kernels …).
    public var provenance: [String: String] = [:]
    /// Every command line of the run (QEMU of each layer, the workload).
    public var invocations: [[String]] = []
    /// The last output lines of a run that did not succeed (stderr of the process that failed).
    public var outputTail: String?

    enum CodingKeys: String, CodingKey {
        case sequence, configuration, workload, condition, repetition, status, reason, metrics, provenance, invocations
        case outputTail = "output_tail"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sequence, forKey: .sequence)
        try c.encode(configuration, forKey: .configuration)
        try c.encode(workload, forKey: .workload)
        try c.encode(condition, forKey: .condition)
        try c.encode(repetition, forKey: .repetition)
        try c.encode(status, forKey: .status)
        try c.encode(reason, forKey: .reason)
        try c.encode(metrics, forKey: .metrics)
        try c.encode(provenance, forKey: .provenance)
        try c.encode(invocations, forKey: .invocations)
        try c.encodeIfPresent(outputTail, forKey: .outputTail)
    }
}

extension ReportRun {
    /// The last few lines of a failed run's output, for the reports.
    public static func lastLines(_ tail: String?, count: Int = 5) -> [String] {
        guard let tail else { return [] }
        return Array(tail.split(separator: "\n").map(String.init).filter { !$0.isEmpty }.suffix(count))
    }
}

/// A workload of the experiment as reports group it.
public struct ReportWorkload: Codable, Sendable, Hashable {
    public var label: String
    public var suite: String
    public var name: String
    /// `colocated` for a colocated group (`colocate:`, Fig. 14), else `main`. Which figures a
    /// workload appears in is what its metrics declare, never its name.
    public var role: String
    public var cpus: [Int]
    /// A colocated group's members (their labels prefix the group's metrics: `silo.throughput`).
    public var members: [String]?
    /// The metric headlines judge (declared primary, or `analysis.primary_metric`); nil when none is declared.
    public var primaryMetric: String?
    /// Every declaration that applies to this workload's metrics (its own, its members' prefixed,
    /// the collectors'), in priority order.
    public var metrics: [MetricDeclaration]

    enum CodingKeys: String, CodingKey {
        case label, suite, name, role, cpus, members
        case primaryMetric = "primary_metric"
        case metrics
    }

    public init(_ w: WorkloadSpec, in experiment: Experiment) {
        label = w.label
        suite = w.suite
        name = w.name
        role = w.colocated != nil ? "colocated" : "main"
        cpus = w.cpus
        members = w.colocated?.map(\.label)
        primaryMetric = experiment.primaryMetric(of: w)
        metrics = experiment.metricDeclarations(of: w)
    }
}

/// How one configuration's runs were set up: every distinct provenance value and command line.
public struct ConfigurationProvenance: Codable, Sendable, Hashable {
    public var configuration: String
    /// Provenance key (knob:/sys/…, platform, pinning, kernel, qemu command lines, …) → distinct values.
    public var settings: [String: [String]]
    public var commands: [ReportCommandLine]
}

/// One distinct way a workload process was started.
public struct ReportCommandLine: Codable, Sendable, Hashable {
    public var workload: String
    public var argv: [String]
    public var cpus: [Int]
    public var environment: [String: String]
    public var workingDirectory: String

    enum CodingKeys: String, CodingKey {
        case workload, argv, cpus, environment
        case workingDirectory = "working_directory"
    }
}

/// Where a metric came from: its source, unit and every distinct detail (perf event encodings,
/// files read), and what it stands in for.
public struct MetricProvenance: Codable, Sendable, Hashable {
    public var metric: String
    public var source: String
    public var unit: String
    public var proxyFor: String?
    public var details: [String]

    enum CodingKeys: String, CodingKey {
        case metric, source, unit
        case proxyFor = "proxy_for"
        case details
    }
}

/// Everything a report shows about one experiment run.
public struct Report: Codable, Sendable {
    public var runID: String
    public var experiment: String
    public var baseline: String
    public var status: String
    public var seed: String
    public var startedAt: Date
    public var finishedAt: Date?
    public var machine: MachineDescription
    public var tags: [String: String]
    public var runs: [ReportRun]
    public var comparisons: [Comparison]
    public var geomeans: [GeomeanSummary]
    public var unavailable: [UnavailableMetric]
    /// Metrics that stand in for something this machine cannot measure: name → what (e.g.
    /// `perf.page_faults` → `tlb_misses`).
    public var proxies: [String: String]
    public var notes: [String]
    public var description: String?
    public var workloads: [ReportWorkload]
    public var conditions: [String]
    public var configurations: [String]
    /// Why each cell has the repetitions it has (adaptive repetitions).
    public var repetitions: [RepetitionStatus]
    public var provenance: [ConfigurationProvenance]
    public var metricProvenance: [MetricProvenance]
    public var alpha: Double
    /// Published values to compare with (the experiment's `reference:`); nil when it has none.
    public var reference: ReferenceSet? = nil
    /// The campaign and shard of the experiment run (or the campaign the report pools).
    public var campaign: String? = nil
    public var shard: String? = nil
    /// Whether adaptive repetitions ran: "on", "per shard (…)" or "off (--fixed-repetitions)".
    public var adaptiveRepetitions: String? = nil
    /// The testbeds the runs were measured on.
    public var testbeds: [TestbedEntry]? = nil
    /// With two or more testbeds: each primary comparison per testbed and combined.
    public var testbedRatios: [TestbedComparison]? = nil

    /// The testbeds the table, HTML and CSV reports list: when the report spans two or more, or
    /// is one shard of a campaign, or a campaign (nil otherwise: one testbed says nothing new).
    public var listedTestbeds: [TestbedEntry]? {
        guard let testbeds, testbeds.count >= 2 || shard != nil || campaign != nil else { return nil }
        return testbeds
    }

    enum CodingKeys: String, CodingKey {
        case runID = "run_id"
        case experiment, baseline, status, seed
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case machine, tags, runs, comparisons, geomeans, unavailable, proxies, notes
        case description, workloads, conditions, configurations, repetitions, provenance
        case metricProvenance = "metric_provenance"
        case alpha, reference, campaign, shard, testbeds
        case adaptiveRepetitions = "adaptive_repetitions"
        case testbedRatios = "testbed_ratios"
    }

    public init(record: ExperimentRunRecord, runs: [RunRecord]) {
        runID = record.id
        experiment = record.experiment.name
        baseline = record.experiment.baseline
        status = record.status.rawValue
        seed = String(record.seed)
        startedAt = record.startedAt
        finishedAt = record.finishedAt
        machine = record.machine
        tags = record.tags
        self.runs = runs.map { run in
            var metrics: [String: Double?] = [:]
            for m in run.metrics { metrics[m.name] = .some(m.value) }
            return ReportRun(
                sequence: run.planned.sequence, configuration: run.planned.configuration, workload: run.planned.workload,
                condition: run.planned.condition, repetition: run.planned.repetition, status: run.status.rawValue,
                reason: run.reason, metrics: metrics, provenance: run.provenance, invocations: run.invocations.map(\.argv),
                outputTail: run.status == .ok ? nil : run.outputTail)
        }
        comparisons = Comparator.comparisons(experiment: record.experiment, runs: runs)
        geomeans = Comparator.geomeans(experiment: record.experiment, comparisons: comparisons)
        unavailable = Comparator.unavailable(runs)
        var proxies: [String: String] = [:]
        for run in runs {
            for m in run.metrics where !m.name.contains("fault") {
                if let p = m.proxyFor, proxies[m.name] == nil { proxies[m.name] = p }
            }
        }
        self.proxies = proxies
        description = record.experiment.description
        workloads = record.experiment.workloads.map { ReportWorkload($0, in: record.experiment) }
        conditions = record.experiment.conditions.map(\.name)
        configurations = record.experiment.configurations.map(\.name)
        alpha = record.experiment.analysis.alpha
        reference = record.experiment.reference
        repetitions = AdaptiveRepetitions.status(
            experiment: record.experiment, plan: record.plan, comparisons: comparisons, experimentStatus: record.status)
        (provenance, metricProvenance) = Self.provenance(of: runs, configurations: configurations)
        campaign = record.campaign
        shard = record.shard?.description
        if record.fixedRepetitions == true {
            adaptiveRepetitions = "off (--fixed-repetitions)"
        } else if let shard = record.shard {
            adaptiveRepetitions =
                "per shard: each of the \(shard.count) shards repeats its own cells up to its share of repetitions.max (\((record.experiment.repetitions.max + shard.count - 1) / shard.count))"
        } else if record.fixedRepetitions == false {
            adaptiveRepetitions = "on"
        }
        let testbeds = TestbedAnalysis.testbeds(runs)
        self.testbeds = testbeds
        let perTestbed = TestbedAnalysis.comparisons(experiment: record.experiment, runs: runs, comparisons: comparisons)
        testbedRatios = perTestbed.isEmpty ? nil : perTestbed
        var notes: [String] = []
        if let adaptiveRepetitions { notes.append("adaptive repetitions: \(adaptiveRepetitions)") }
        for t in perTestbed {
            for p in t.perTestbed where p.disagrees {
                notes.append(
                    "testbed \(p.testbed) disagrees with the others on \(t.configuration)/\(t.workload)/\(t.condition) \(t.metric): its ratio CI does not overlap the CI of the other testbeds' combined ratio"
                )
            }
        }
        if let warning = record.machine.extra["warning"] { notes.append(warning) }
        let undeclared = workloads.filter { $0.primaryMetric == nil }.map(\.label)
        if !undeclared.isEmpty {
            notes.append(
                "no primary metric is declared for \(undeclared.joined(separator: ", ")) (its suite declares none, or the "
                    + "suite file is missing here): no headline, geometric mean or adaptive repetitions for it")
        }
        let failed = runs.filter { $0.status != .ok }
        if !failed.isEmpty {
            notes.append("\(failed.count) of \(runs.count) runs did not succeed; they are excluded from the statistics")
        }
        // Warnings adapters attached to runs (provenance `warning.*`), e.g. a ROI too short for
        // its printed resolution: one note per distinct warning with the runs it concerns.
        var warnings: [String: [Int]] = [:]
        for run in runs {
            for (key, value) in run.provenance where key.hasPrefix("warning.") {
                warnings["\(run.planned.workload): \(value)", default: []].append(run.planned.sequence)
            }
        }
        for (text, sequences) in warnings.sorted(by: { $0.key < $1.key }) {
            notes.append("WARNING \(text) (runs " + sequences.sorted().map { "#\($0)" }.joined(separator: ", ") + ")")
        }
        let outOfBand = runs.filter { $0.provenance["fragmentation.band"] == "out" }
        if !outOfBand.isEmpty {
            notes.append(
                "FMFI was outside the requested band (target ± tolerance) when the workload started in \(outOfBand.count) fragmented run(s): "
                    + outOfBand.map { "#\($0.planned.sequence)" }.joined(separator: ", ")
                    + " (see their fmfi_before)")
        }
        notes += Self.pagingNotes(runs)
        notes += Self.alignmentNotes(runs, settings: record.experiment.collectors?.alignment)
        let logged = runs.filter { $0.provenance["kernel_log"] != nil }
        if !logged.isEmpty {
            notes.append(
                "the kernel log reported an oops/BUG/WARNING/OOM kill/hung task/RCU stall/KVM error during "
                    + "\(logged.count) run(s): "
                    + logged.map { "#\($0.planned.sequence) (\($0.provenance["kernel_log"] ?? ""))" }.joined(separator: "; "))
        }
        let drifted = runs.filter { $0.provenance["fragmentation.drift"] == "left the band during the run" }
        if !drifted.isEmpty {
            notes.append(
                "in \(drifted.count) fragmented run(s) FMFI moved out of the band during the run (the workload's own "
                    + "allocations; see fmfi_min/fmfi_max): "
                    + drifted.map { "#\($0.planned.sequence)" }.joined(separator: ", "))
        }
        if record.plan.count > runs.count && record.status != .running {
            notes.append("\(record.plan.count - runs.count) planned runs were not executed (status: \(record.status.rawValue))")
        }
        notes.append(
            "verdicts: Welch's t-test at α = \(record.experiment.analysis.alpha), "
                + "a change smaller than \(record.experiment.analysis.minEffect * 100)% is 'same'; "
                + "\(Self.confidencePercent(record.experiment.analysis.alpha))% ratio CIs by Fieller's theorem"
        )
        notes += Self.bootNotes(comparisons)
        notes.append(
            "each metric is summarized as its workload or collector declares: rates by the harmonic mean (Welch and Fieller "
                + "on reciprocals), times and counts by the arithmetic mean, per-run percentiles (p99) by the median of runs "
                + "with Mann–Whitney U and a bootstrap CI (the run is the unit; percentiles are never averaged); log-t and "
                + "bootstrap CIs are given beside; geometric means are taken per declared primary metric, never across metrics")
        self.notes = notes
    }

    /// "95" for α = 0.05, "99" for 0.01, "99.5" for 0.005.
    public static func confidencePercent(_ alpha: Double) -> String {
        String(format: "%g", ((1 - alpha) * 1000).rounded() / 10)
    }

    /// Which paging mode each KVM layer ran (EPT/NPT read back at boot; this machine's too).
    /// When and how often the alignment probe ran: once per run at the end of the measured phase,
    /// and with `collectors.alignment.interval` also on a timeline (its probes and their total time,
    /// the perturbation it added).
    static func alignmentNotes(_ runs: [RunRecord], settings: AlignmentSettings?) -> [String] {
        let probed = runs.filter { $0.metric("align.regions")?.value != nil }
        var notes: [String] = []
        if !probed.isEmpty {
            notes.append(
                "the alignment probe (align.*) ran once per run at the end of the measured phase, with the workload "
                    + "stopped (\(probed.count) of \(runs.count) runs probed)")
        }
        let timed = runs.compactMap { run in
            run.metric("align.timeline_probes")?.value.flatMap { n in
                run.metric("align.timeline_probe_seconds")?.value.map { (probes: n, seconds: $0) }
            }
        }
        if let interval = settings?.intervalMillis, !timed.isEmpty {
            let probes = timed.map(\.probes).reduce(0, +)
            let seconds = timed.map(\.seconds).reduce(0, +)
            let worst = timed.map(\.seconds).max() ?? 0
            notes.append(
                "alignment timeline (collectors.alignment.interval): the probe also ran every \(interval) ms while the "
                    + "workload ran, \(Int(probes)) times in \(timed.count) runs, "
                    + String(format: "%.3f s in all (at most %.3f s in one run)", seconds, worst)
                    + ", each probe holding the workload's memory-map lock while it read pagemap; the points "
                    + "(align.huge.<layer>, align.timeline.probe_ms) are in each run's timeline (nestbench export)")
        }
        return notes
    }

    static func pagingNotes(_ runs: [RunRecord]) -> [String] {
        var modes: [String: Set<String>] = [:]
        for run in runs {
            for (key, value) in run.provenance {
                if key == "paging.host" {
                    modes["this machine", default: []].insert(value)
                } else if key.hasSuffix(".knob:paging") {
                    let layer = String(key.dropLast(".knob:paging".count))
                    modes["\(run.planned.configuration) \(layer)", default: []].insert(value)
                }
            }
        }
        guard !modes.isEmpty else { return [] }
        return [
            "paging mode of each KVM layer (nested paging read back): "
                + modes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.sorted().joined(separator: "/"))" }
                .joined(separator: "; ")
        ]
    }

    /// What the CIs of stack runs cover: boot-to-boot variance only with two boots per side.
    static func bootNotes(_ comparisons: [Comparison]) -> [String] {
        let booted = comparisons.filter { $0.boots != nil && $0.bootsBaseline != nil }
        guard !booted.isEmpty else { return [] }
        let single = booted.filter { ($0.boots ?? 0) < 2 || ($0.bootsBaseline ?? 0) < 2 }
        if single.isEmpty {
            return ["stack runs: every cell has ≥ 2 VM boots per side; primary CIs are the bootstrap over boots (boot → run)"]
        }
        let cells = Set(single.map { "\($0.configuration)/\($0.workload)/\($0.condition)" }).sorted()
        return [
            "stack runs with one VM boot on a side (\(cells.joined(separator: ", "))): their CIs cover run-to-run noise "
                + "only, not boot-to-boot variance (set repetitions.boots ≥ 2)"
        ]
    }

    /// Distinct provenance values and command lines per configuration, and metric details.
    static func provenance(of runs: [RunRecord], configurations: [String]) -> ([ConfigurationProvenance], [MetricProvenance]) {
        var settings: [String: [String: [String]]] = [:]
        var commands: [String: [ReportCommandLine]] = [:]
        var metrics: OrderedDictionary<String, MetricProvenance> = [:]
        for run in runs {
            let config = run.planned.configuration
            for (key, value) in run.provenance where key != "run_directory" {
                if !(settings[config]?[key]?.contains(value) ?? false) {
                    settings[config, default: [:]][key, default: []].append(value)
                }
            }
            for inv in run.invocations {
                let line = ReportCommandLine(
                    workload: run.planned.workload, argv: inv.argv, cpus: inv.cpus, environment: inv.environment,
                    workingDirectory: inv.workingDirectory.contains("/artifacts/") ? "(per-run directory)" : inv.workingDirectory)
                if !(commands[config]?.contains(line) ?? false) { commands[config, default: []].append(line) }
            }
            for m in run.metrics {
                if metrics[m.name] == nil {
                    metrics[m.name] = MetricProvenance(
                        metric: m.name, source: m.source, unit: m.unit, proxyFor: m.proxyFor, details: [])
                }
                if let d = m.detail, !metrics[m.name]!.details.contains(d) { metrics[m.name]!.details.append(d) }
            }
        }
        let layers = configurations.map {
            ConfigurationProvenance(
                configuration: $0, settings: settings[$0] ?? [:],
                commands: (commands[$0] ?? []).map { c in
                    var c = c
                    c.argv = c.argv.map {
                        $0.contains("/artifacts/") ? "(per-run directory)/" + ($0 as NSString).lastPathComponent : $0
                    }
                    return c
                })
        }
        return (layers, Array(metrics.values))
    }
}

/// A report that could not be rendered.
public struct ReportError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Output formats of `nestbench report`.
public enum ReportFormat: String, CaseIterable, Sendable {
    case table, markdown, json, csv
}

/// Renders reports. Pure: returns text, never prints.
public enum ReportRenderer {
    /// The report as text. Table and markdown lead with one verdict line per cell and the
    /// geometric means; the full metric table only with `allMetrics`. JSON and CSV always carry
    /// every comparison. Throws when the report cannot be encoded (JSON).
    public static func render(_ report: Report, as format: ReportFormat, allMetrics: Bool = false) throws(ReportError)
        -> String
    {
        switch format {
        case .json: return try json(report)
        case .csv: return csv(report)
        case .table: return text(report, markdown: false, allMetrics: allMetrics)
        case .markdown: return text(report, markdown: true, allMetrics: allMetrics)
        }
    }

    public static func json(_ report: Report) throws(ReportError) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        do {
            return String(decoding: try encoder.encode(report), as: UTF8.self) + "\n"
        } catch {
            throw ReportError("could not encode report \(report.runID) as JSON: \(error)")
        }
    }

    /// One row per comparison. Where the table report lists testbeds (`listedTestbeds`), a blank
    /// line, then one row per testbed (`testbed,runs,experiment_runs`, the experiment runs separated
    /// by spaces); with per-testbed ratios, another blank line, then per primary comparison one
    /// row per testbed and one `combined` row (`…,testbed,ratio,ratio_ci_lo,ratio_ci_hi,disagrees,method`).
    public static func csv(_ report: Report) -> String {
        func num(_ v: Double?) -> String { v.map { String($0) } ?? "" }
        let header = [
            "workload", "condition", "configuration", "metric", "unit", "mean", "baseline_mean", "ratio", "ratio_ci_lo",
            "ratio_ci_hi", "p_value", "n", "n_baseline", "verdict", "center",
        ]
        let rows = report.comparisons.map { c in
            [
                c.workload, c.condition, c.configuration, c.metric, c.unit, num(c.mean), num(c.baselineMean), num(c.ratio),
                num(c.ratioCI?[0]), num(c.ratioCI?[1]), num(c.pValue), String(c.n), String(c.nBaseline), c.verdict, c.center,
            ]
        }
        var text = CSVText.render(header: header, rows: rows)
        guard let testbeds = report.listedTestbeds else { return text }
        text +=
            "\n"
            + CSVText.render(
                header: ["testbed", "runs", "experiment_runs"],
                rows: testbeds.map { [$0.testbed, String($0.runs), $0.experimentRuns.joined(separator: " ")] })
        guard let ratios = report.testbedRatios, !ratios.isEmpty else { return text }
        let ratioRows = ratios.flatMap { t in
            let cell = [t.workload, t.condition, t.configuration, t.metric]
            return t.perTestbed.map { p in
                cell + [p.testbed, num(p.ratio), num(p.ratioCI?[0]), num(p.ratioCI?[1]), String(p.disagrees), ""]
            } + [cell + ["combined", num(t.ratio), num(t.ratioCI?[0]), num(t.ratioCI?[1]), "", t.method]]
        }
        text +=
            "\n"
            + CSVText.render(
                header: [
                    "workload", "condition", "configuration", "metric", "testbed", "ratio", "ratio_ci_lo", "ratio_ci_hi",
                    "disagrees", "method",
                ], rows: ratioRows)
        return text
    }

    static func format(_ v: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 1e6 || abs(v) < 1e-3 { return String(format: "%.4g", v) }
        return String(format: abs(v) >= 100 ? "%.1f" : "%.4g", v)
    }

    struct Row {
        var workload: String
        var condition: String
        var metric: String
        var configuration: String
        var mean: String
        var baseline: String
        var ratio: String
        var ci: String
        var p: String
        var n: String
        var verdict: String
    }

    /// Metrics shown beside the primary one on a verdict line where measured: TLB misses and the
    /// huge-page alignment rate.
    static func sideMetrics(_ available: [String], prefix: String) -> [String] {
        var result: [String] = []
        if available.contains(prefix + "tlb_misses") { result.append(prefix + "tlb_misses") }
        if let a = available.first(where: {
            $0.hasPrefix(prefix) && ($0.contains("alignment_rate") || $0.contains("aligned_rate"))
        }) {
            result.append(a)
        }
        return result
    }

    /// One line per workload × condition × configuration: the primary metric's ratio, CI and
    /// verdict, runs and boots per side, TLB misses and the alignment rate where measured.
    public static func verdictLines(_ report: Report) -> [String] {
        func ciText(_ c: Comparison) -> String {
            if let ci = c.ratioCI { return String(format: "[%.3f, %.3f]", ci[0], ci[1]) }
            if let ci = c.ratioCILogT ?? c.ratioCIBootstrap {
                return String(format: "CI unbounded (log-t/bootstrap [%.3f, %.3f])", ci[0], ci[1])
            }
            return "no CI"
        }
        var lines: [String] = []
        for w in report.workloads {
            guard let primary = w.primaryMetric else { continue }
            let prefix = primary.contains(".") && w.members != nil ? String(primary.prefix { $0 != "." }) + "." : ""
            for condition in report.conditions {
                for configuration in report.configurations where configuration != report.baseline {
                    let cell = report.comparisons.filter {
                        $0.workload == w.label && $0.condition == condition && $0.configuration == configuration
                            && $0.versus == nil
                    }
                    var line = "\(w.label) / \(condition) / \(configuration): "
                    guard let c = cell.first(where: { $0.metric == primary }) else {
                        let why =
                            report.unavailable.first { $0.workload == w.label && $0.metric == primary }?.reason
                            ?? "no successful runs on both sides"
                        lines.append(line + "\(primary) not compared: \(why)")
                        continue
                    }
                    line +=
                        "\(primary) \(c.ratio.map { String(format: "%.3f", $0) } ?? "n/a") \(ciText(c)) \(c.verdict.uppercased())"
                    var sample = "n \(c.n)/\(c.nBaseline) runs"
                    if let b = c.boots, let bb = c.bootsBaseline { sample += ", \(b)/\(bb) boots" }
                    if c.degenerate { sample += ", degenerate: zero variance" }
                    line += " (\(sample))"
                    for side in sideMetrics(cell.map(\.metric), prefix: prefix) {
                        guard let s = cell.first(where: { $0.metric == side }) else { continue }
                        line += "; \(side) \(s.ratio.map { String(format: "%.3f", $0) } ?? "n/a") \(ciText(s)) \(s.verdict)"
                    }
                    // The cross-layer alignment (a fraction: its mean on each side, not a ratio).
                    if let a = cell.first(where: { $0.metric == prefix + "align.well_aligned" }) {
                        line += String(
                            format:
                                "; align.well_aligned %.3f vs %.3f in %@ (probed once per run, at the end of the measured phase)",
                            a.mean, a.baselineMean, report.baseline)
                    } else if let why = report.unavailable.first(where: {
                        $0.workload == w.label && $0.configuration == configuration && $0.metric == prefix + "align.well_aligned"
                    })?.reason {
                        line += "; align.well_aligned \(why)"
                    }
                    lines.append(line)
                }
            }
        }
        return lines
    }

    /// The heading of the verdict lines: what the numbers are.
    static func verdictHeading(_ report: Report) -> String {
        "verdicts: primary metric's ratio to \(report.baseline), \(Report.confidencePercent(report.alpha))% CI, "
            + "verdict at α = \(report.alpha)"
    }

    /// The geometric means of the primary metric's ratios across workloads.
    static func geomeanSection(_ report: Report, heading: String) -> String {
        guard !report.geomeans.isEmpty else { return "" }
        var out = "\n\(heading)geometric mean of ratios across workloads (one per primary metric)\n"
        for g in report.geomeans {
            let ci = g.ci.map { String(format: " [%.3f, %.3f]", $0[0], $0[1]) } ?? " (one workload: no CI)"
            let each = g.workloads.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.3f", $0.value))" }
            out +=
                "- \(g.configuration) / \(g.condition) / \(g.metric) (\(g.polarity == .neutral ? "neutral" : g.polarity.rawValue + " is better")): "
                + "\(String(format: "%.3f", g.geomean))\(ci); "
                + each.joined(separator: ", ") + "\n"
        }
        return out
    }

    static func text(_ report: Report, markdown: Bool, allMetrics: Bool = false) -> String {
        var out = ""
        let heading = markdown ? "## " : ""
        let style: TextTableStyle.Type = markdown ? Style.pipe : Style.simple
        out += "\(heading)\(report.experiment) — run \(report.runID) (\(report.status))\n"
        out +=
            "baseline: \(report.baseline); machine: \(report.machine.cpuModel), \(report.machine.cores) cores, "
            + "kernel \(report.machine.kernel); seed \(report.seed)\n\n"
        if let warning = report.machine.extra["warning"] { out += "WARNING: \(warning)\n\n" }
        let verdicts = verdictLines(report)
        if !verdicts.isEmpty {
            out += "\(heading)\(verdictHeading(report))\n" + verdicts.map { "- " + $0 }.joined(separator: "\n") + "\n"
        }
        out += geomeanSection(report, heading: heading)
        if !allMetrics {
            let hidden = Set(report.comparisons.map(\.metric)).count
            if hidden > 0 { out += "\n(\(hidden) metrics compared in all: --all-metrics shows the full table)\n" }
        }
        // Metrics that are zero on both sides say nothing; JSON and CSV keep them.
        let rows = report.comparisons.filter { $0.mean != 0 || $0.baselineMean != 0 }.map { c in
            Row(
                workload: c.workload, condition: c.condition,
                metric: "\(c.metric) [\(c.unit)]" + (report.proxies[c.metric].map { " (proxy for \($0))" } ?? ""),
                configuration: c.versus.map { "\(c.configuration) vs \($0)" } ?? c.configuration,
                mean: "\(format(c.mean)) ± \(format(c.sd))",
                baseline: "\(format(c.baselineMean)) ± \(format(c.baselineSD))",
                ratio: c.ratio.map { String(format: "%.3f", $0) } ?? "n/a",
                ci: c.ratioCI.map { String(format: "[%.3f, %.3f]", $0[0], $0[1]) } ?? "—",
                p: c.pValue.map { $0 < 0.0001 ? "<0.0001" : String(format: "%.4f", $0) } ?? "—",
                n: "\(c.n)/\(c.nBaseline)", verdict: c.verdict)
        }
        if rows.isEmpty {
            out += "\nno comparisons: no configuration other than the baseline has successful runs\n"
        } else if allMetrics {
            out += "\n\(heading)all metrics\n"
            let table = TextTable<Row> { r in
                [
                    Column(title: "workload", value: r.workload), Column(title: "condition", value: r.condition),
                    Column(title: "metric", value: r.metric), Column(title: "configuration", value: r.configuration),
                    Column(title: "mean ± sd", value: r.mean), Column(title: "baseline", value: r.baseline),
                    Column(title: "ratio", value: r.ratio),
                    Column(title: "\(Report.confidencePercent(report.alpha))% CI", value: r.ci),
                    Column(title: "p", value: r.p), Column(title: "n", value: r.n),
                    Column(title: "verdict", value: r.verdict),
                ]
            }
            out += table.string(for: rows, style: style) ?? ""
            out += "\n"
        }
        if !report.unavailable.isEmpty {
            out += "\n\(heading)unavailable metrics\n"
            var seen: Set<String> = []
            for u in report.unavailable where seen.insert("\(u.metric)|\(u.reason)").inserted {
                out += "- \(u.metric): \(u.reason)\n"
            }
        }
        // Listed when the report spans testbeds, or is one shard of a campaign.
        if let testbeds = report.listedTestbeds {
            out += "\n\(heading)testbeds\n"
            for t in testbeds {
                out +=
                    "- \(t.testbed): \(t.runs) runs (experiment run\(t.experimentRuns.count == 1 ? "" : "s") \(t.experimentRuns.joined(separator: ", ")))\n"
            }
            func ratio(_ r: Double?, _ ci: [Double]?) -> String {
                (r.map { String(format: "%.4f", $0) } ?? "-")
                    + (ci.map { String(format: " [%.4f, %.4f]", $0[0], $0[1]) } ?? " [no CI]")
            }
            for t in report.testbedRatios ?? [] {
                out +=
                    "- \(t.configuration) / \(t.workload) / \(t.condition) \(t.metric): combined \(ratio(t.ratio, t.ratioCI))\n"
                for p in t.perTestbed {
                    out +=
                        "    \(p.testbed): \(ratio(p.ratio, p.ratioCI))\(p.disagrees ? "  DISAGREES (its CI does not overlap the others' combined CI)" : "")\n"
                }
            }
        }
        if !report.repetitions.isEmpty {
            out += "\n\(heading)repetitions: why each cell stopped\n"
            for r in report.repetitions {
                out += "- \(r.configuration) / \(r.workload) / \(r.condition): \(r.reason.rawValue): \(r.explanation)\n"
            }
        }
        let failed = report.runs.filter { $0.status != "ok" }
        if !failed.isEmpty {
            out += "\n\(heading)runs that did not succeed\n"
            for r in failed {
                out +=
                    "- #\(r.sequence) \(r.configuration)/\(r.workload)/\(r.condition) rep \(r.repetition): "
                    + "\(r.status): \(r.reason ?? "")\n"
                for line in ReportRun.lastLines(r.outputTail) { out += "    | \(line)\n" }
            }
        }
        if !report.notes.isEmpty {
            out += "\n"
            for n in report.notes { out += "note: \(n)\n" }
        }
        return out
    }
}
