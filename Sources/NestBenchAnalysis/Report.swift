import Foundation
import NestBenchModel
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

    enum CodingKeys: String, CodingKey {
        case runID = "run_id"
        case experiment, baseline, status, seed
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case machine, tags, runs, comparisons, geomeans, unavailable, proxies, notes
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
                reason: run.reason, metrics: metrics, provenance: run.provenance, invocations: run.invocations.map(\.argv))
        }
        comparisons = Comparator.comparisons(experiment: record.experiment, runs: runs)
        geomeans = Comparator.geomeans(experiment: record.experiment, comparisons: comparisons)
        unavailable = Comparator.unavailable(runs)
        var proxies: [String: String] = [:]
        for run in runs { for m in run.metrics { if let p = m.proxyFor, proxies[m.name] == nil { proxies[m.name] = p } } }
        self.proxies = proxies
        var notes: [String] = []
        if let warning = record.machine.extra["warning"] { notes.append(warning) }
        let failed = runs.filter { $0.status != .ok }
        if !failed.isEmpty {
            notes.append("\(failed.count) of \(runs.count) runs did not succeed; they are excluded from the statistics")
        }
        let outOfBand = runs.filter { $0.provenance["fragmentation.band"] == "out" }
        if !outOfBand.isEmpty {
            notes.append(
                "FMFI left the requested band (target ± tolerance) in \(outOfBand.count) fragmented run(s): "
                    + outOfBand.map { "#\($0.planned.sequence)" }.joined(separator: ", ")
                    + " (see their fmfi_min/fmfi_max)")
        }
        if record.plan.count > runs.count && record.status != .running {
            notes.append("\(record.plan.count - runs.count) planned runs were not executed (status: \(record.status.rawValue))")
        }
        notes.append(
            "verdicts: Welch's t-test at α = \(record.experiment.analysis.alpha), "
                + "a change smaller than \(record.experiment.analysis.minEffect * 100)% is 'same'; ratio CIs by Fieller's theorem"
        )
        self.notes = notes
    }
}

/// Output formats of `nestbench report`.
public enum ReportFormat: String, CaseIterable, Sendable {
    case table, markdown, json, csv
}

/// Renders reports. Pure: returns text, never prints.
public enum ReportRenderer {
    public static func render(_ report: Report, as format: ReportFormat) -> String {
        switch format {
        case .json: return json(report)
        case .csv: return csv(report)
        case .table: return text(report, markdown: false)
        case .markdown: return text(report, markdown: true)
        }
    }

    public static func json(_ report: Report) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let data = (try? encoder.encode(report)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// One row per comparison.
    public static func csv(_ report: Report) -> String {
        var lines = [
            "workload,condition,configuration,metric,unit,mean,baseline_mean,ratio,ratio_ci_lo,ratio_ci_hi,p_value,n,n_baseline,verdict"
        ]
        func field(_ s: String) -> String {
            s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        func num(_ v: Double?) -> String { v.map { String($0) } ?? "" }
        for c in report.comparisons {
            lines.append(
                [
                    field(c.workload), field(c.condition), field(c.configuration), field(c.metric), field(c.unit),
                    num(c.mean), num(c.baselineMean), num(c.ratio), num(c.ratioCI?[0]), num(c.ratioCI?[1]),
                    num(c.pValue), String(c.n), String(c.nBaseline), c.verdict,
                ].joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
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

    static func text(_ report: Report, markdown: Bool) -> String {
        var out = ""
        let heading = markdown ? "## " : ""
        let style: TextTableStyle.Type = markdown ? Style.pipe : Style.simple
        out += "\(heading)\(report.experiment) — run \(report.runID) (\(report.status))\n"
        out +=
            "baseline: \(report.baseline); machine: \(report.machine.cpuModel), \(report.machine.cores) cores, "
            + "kernel \(report.machine.kernel); seed \(report.seed)\n\n"
        if let warning = report.machine.extra["warning"] { out += "WARNING: \(warning)\n\n" }
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
            out += "no comparisons: no configuration other than the baseline has successful runs\n"
        } else {
            let table = TextTable<Row> { r in
                [
                    Column(title: "workload", value: r.workload), Column(title: "condition", value: r.condition),
                    Column(title: "metric", value: r.metric), Column(title: "configuration", value: r.configuration),
                    Column(title: "mean ± sd", value: r.mean), Column(title: "baseline", value: r.baseline),
                    Column(title: "ratio", value: r.ratio), Column(title: "95% CI", value: r.ci),
                    Column(title: "p", value: r.p), Column(title: "n", value: r.n),
                    Column(title: "verdict", value: r.verdict),
                ]
            }
            out += table.string(for: rows, style: style) ?? ""
            out += "\n"
        }
        if !report.geomeans.isEmpty {
            out += "\n\(heading)geometric mean of ratios across workloads\n"
            for g in report.geomeans {
                let ci = g.ci.map { String(format: " [%.3f, %.3f]", $0[0], $0[1]) } ?? " (one workload: no CI)"
                let each = g.workloads.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.3f", $0.value))" }
                out +=
                    "- \(g.configuration) / \(g.condition) / \(g.metric): \(String(format: "%.3f", g.geomean))\(ci); "
                    + each.joined(separator: ", ") + "\n"
            }
        }
        if !report.unavailable.isEmpty {
            out += "\n\(heading)unavailable metrics\n"
            var seen: Set<String> = []
            for u in report.unavailable where seen.insert("\(u.metric)|\(u.reason)").inserted {
                out += "- \(u.metric): \(u.reason)\n"
            }
        }
        let failed = report.runs.filter { $0.status != "ok" }
        if !failed.isEmpty {
            out += "\n\(heading)runs that did not succeed\n"
            for r in failed {
                out +=
                    "- #\(r.sequence) \(r.configuration)/\(r.workload)/\(r.condition) rep \(r.repetition): "
                    + "\(r.status): \(r.reason ?? "")\n"
            }
        }
        if !report.notes.isEmpty {
            out += "\n"
            for n in report.notes { out += "note: \(n)\n" }
        }
        return out
    }
}
