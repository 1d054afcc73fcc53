import Foundation
import NestBenchModel
import NestBenchStats
import OrderedCollections

/// One figure of the paper's evaluation (§5, Figs. 11–16), as data: which workloads it draws,
/// normalized to the baseline configuration. Which metric of a workload it plots is what the
/// workload's (or the collectors') declarations say feeds the figure — never a metric name.
public struct FigureSpec: Sendable {
    /// Which workloads a figure draws.
    public enum Workloads: Sendable {
        /// Single workloads (one per innermost guest).
        case single
        /// Colocated groups, one bar group per member.
        case colocated
        /// Both.
        case any
    }

    public var figure: PaperFigure
    public var title: String
    /// What the bars are, for the caption and for the "no data" message.
    public var measure: String
    public var workloads: Workloads

    public var id: String { figure.rawValue }

    public init(_ figure: PaperFigure, title: String, measure: String, workloads: Workloads) {
        self.figure = figure
        self.title = title
        self.measure = measure
        self.workloads = workloads
    }

    /// Whether the figure draws this workload.
    func draws(_ w: ReportWorkload) -> Bool {
        switch workloads {
        case .any: return true
        case .single: return w.members == nil
        case .colocated: return w.members != nil
        }
    }

    /// Whether a metric of a workload feeds this figure, by its declaration.
    func fed(by metric: String, of w: ReportWorkload) -> Bool {
        w.metrics.declaration(for: metric)?.figures.contains(figure) ?? false
    }

    /// The metric to plot for one bar group: among `available` (names without the member
    /// prefix), those whose declaration feeds the figure, the one declared first.
    func pick(_ available: [String], prefix: String, of w: ReportWorkload) -> String? {
        let candidates = available.filter { self.fed(by: prefix + $0, of: w) }
        func rank(_ name: String) -> Int {
            guard let d = w.metrics.declaration(for: prefix + name) else { return Int.max }
            return w.metrics.firstIndex(of: d) ?? Int.max
        }
        return candidates.min { (rank($0), $0) < (rank($1), $1) }
    }

    /// Figs. 11–16 of the xGemini paper.
    public static let paper: [FigureSpec] = [
        FigureSpec(
            .fig11, title: "Fig. 11 — normalized throughput", measure: "throughput (metrics declared for Fig. 11)",
            workloads: .single),
        FigureSpec(
            .fig12, title: "Fig. 12 — normalized TLB misses",
            measure: "TLB misses (metrics declared for Fig. 12: the PMU's page-walk counters; proxies are not drawn)",
            workloads: .single),
        FigureSpec(
            .fig13Mean, title: "Fig. 13 (a) — normalized mean latency",
            measure: "mean latency (metrics declared for Fig. 13 (a))", workloads: .single),
        FigureSpec(
            .fig13P99, title: "Fig. 13 (b) — normalized p99 latency",
            measure: "p99 latency (metrics declared for Fig. 13 (b), median of per-run p99)", workloads: .single),
        FigureSpec(
            .fig14, title: "Fig. 14 — normalized throughput of colocated workloads",
            measure: "throughput of colocated workloads (members' metrics declared for Fig. 14)", workloads: .colocated),
        FigureSpec(
            .fig15, title: "Fig. 15 — normalized FMFI",
            measure: "FMFI(9) as the workload started (metrics declared for Fig. 15: fmfi_before, else the monitor's reading)",
            workloads: .any),
        FigureSpec(
            .fig16, title: "Fig. 16 — normalized throughput of the overhead workloads",
            measure:
                "throughput of the overhead workloads (metrics declared for Fig. 16, e.g. xapian's and ferret's in the suite files)",
            workloads: .single),
    ]
}

/// One self-contained HTML file: figures as inline SVG (no network, no scripts), the tables
/// behind them, provenance, what was unavailable and why. Pure: returns the text.
public enum HTMLReport {
    static let palette = ["#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5"]

    static func esc(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for ch in s {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(ch)
            }
        }
        return out
    }

    static func num(_ v: Double?, _ format: String = "%.3f") -> String {
        guard let v, v.isFinite else { return "—" }
        return String(format: format, v)
    }

    static func ci(_ c: [Double]?) -> String { c.map { String(format: "[%.3f, %.3f]", $0[0], $0[1]) } ?? "—" }

    /// One bar: a configuration's ratio for a workload.
    struct Bar {
        var group: String
        var configuration: String
        var ratio: Double
        var ci: [Double]?
        var comparison: Comparison?
        var note: String
        /// The metric plotted, without a colocated member's prefix (geometric means never mix metrics).
        var metric: String = ""
    }

    /// `timelines`: the runs' stored timelines to draw (selected by `timelineSelectors`).
    public static func render(
        _ report: Report, figures: [FigureSpec] = FigureSpec.paper, timelines: [ReportTimeline] = [],
        timelineSelectors: [String] = TimelineFigure.defaultSelectors
    ) -> String {
        var h = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>\(esc(report.experiment)) — NestBench report \(esc(report.runID))</title>
            <style>
            body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}
            table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
            td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
            th{background:#f3f3f3} .absent{color:#a33;font-style:italic} code{font-size:12px}
            svg.figure{border:1px solid #ddd;background:#fff;margin:.3em 0} figure{margin:0 0 1em}
            figcaption{font-size:13px;color:#555}
            </style></head><body>
            <h1>\(esc(report.experiment)) — run \(esc(report.runID)) (\(esc(report.status)))</h1>

            """
        if let d = report.description { h += "<p>\(esc(d))</p>\n" }
        h +=
            "<p>Baseline: <b>\(esc(report.baseline))</b>. Machine: \(esc(report.machine.cpuModel)), "
            + "\(report.machine.cores) cores, kernel \(esc(report.machine.kernel)), host \(esc(report.machine.hostname)). "
            + "Seed \(esc(report.seed)). Started \(esc(ISO8601DateFormatter().string(from: report.startedAt))).</p>\n"
        if !report.tags.isEmpty {
            h +=
                "<p>Tags: "
                + report.tags.sorted { $0.key < $1.key }.map { "<code>\(esc($0.key))=\(esc($0.value))</code>" }
                .joined(separator: " ") + "</p>\n"
        }
        h +=
            "<p>Every bar is the ratio of a configuration to the baseline (<b>1.0</b>, dashed line) with its "
            + "\(Int(((1 - report.alpha) * 100).rounded()))% confidence interval as whiskers; nothing is drawn for a "
            + "value that was not measured.</p>\n"

        for spec in figures { h += figure(spec, report) }
        h += AlignmentFigure.section(report)
        h += TimelineFigure.section(timelines, selectors: timelineSelectors)
        h += tables(report)
        h += "</body></html>\n"
        return h
    }

    /// The bars of one figure, per condition.
    static func bars(_ spec: FigureSpec, _ report: Report) -> (byCondition: [String: [Bar]], metrics: [String: String]) {
        let workloads = report.workloads.filter { spec.draws($0) }
        var byCondition: [String: [Bar]] = [:]
        var chosen: [String: String] = [:]
        for w in workloads {
            let available = Array(Set(report.comparisons.filter { $0.workload == w.label }.map(\.metric)))
            // A colocated group: one bar group per member, from its label-prefixed metrics.
            let groups: [(group: String, prefix: String)] =
                w.members.map { $0.map { ("\(w.label)/\($0)", "\($0).") } } ?? [(w.label, "")]
            for (group, prefix) in groups {
                let own = available.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
                guard let picked = spec.pick(own, prefix: prefix, of: w) else { continue }
                let metric = prefix + picked
                chosen[group] = metric
                for c in report.comparisons where c.workload == w.label && c.metric == metric {
                    guard let r = c.ratio, r.isFinite else { continue }
                    byCondition[c.condition, default: []].append(
                        Bar(
                            group: group, configuration: c.configuration, ratio: r, ci: c.ratioCI, comparison: c,
                            note: "\(c.metric): \(c.verdict), p \(num(c.pValue, "%.4f")), n \(c.n)/\(c.nBaseline)",
                            metric: picked))
                }
            }
        }
        // Geometric mean across workloads per configuration and metric, with its CI, beside the
        // workloads: one per metric drawn (never across different metrics).
        for (condition, bars) in byCondition {
            let metrics = Set(bars.map(\.metric)).sorted()
            let referenced = !references(spec, report, condition: condition).isEmpty
            var extra: [Bar] = []
            for metric in metrics {
                let same = bars.filter { $0.metric == metric }
                guard Set(same.map(\.group)).count >= 2 || referenced else { continue }
                for config in report.configurations where config != report.baseline {
                    let ratios = same.filter { $0.configuration == config && $0.ratio > 0 }.map(\.ratio)
                    guard ratios.count >= 2 || (referenced && ratios.count == 1) else { continue }
                    let g = Statistics.geometricMeanRatio(ratios)
                    extra.append(
                        Bar(
                            group: metrics.count > 1 ? "geomean \(metric)" : "geomean", configuration: config, ratio: g.ratio,
                            ci: g.lower.flatMap { lo in g.upper.map { [lo, $0] } }, comparison: nil,
                            note: "geometric mean of \(metric) over \(ratios.count) workloads, \(g.method)", metric: metric))
                }
            }
            byCondition[condition] = bars + extra
        }
        return (byCondition, chosen)
    }

    static func figure(_ spec: FigureSpec, _ report: Report) -> String {
        var h = "<section class=\"figure-section\" id=\"\(spec.id)\">\n<h2>\(esc(spec.title))</h2>\n"
        // The workloads this figure draws: of the right kind, with a metric declared for it.
        let workloads = report.workloads.filter { w in
            spec.draws(w) && w.metrics.contains { $0.figures.contains(spec.figure) }
        }
        let (byCondition, chosen) = bars(spec, report)
        if workloads.isEmpty {
            let kind =
                switch spec.workloads {
                case .colocated: "colocated workloads"
                case .single: "single workloads"
                case .any: "workloads"
                }
            h +=
                "<p class=\"absent\" data-figure=\"\(spec.id)\">Not drawn: this experiment has no \(kind) with a "
                + "metric declared for this figure, so there is no \(esc(spec.measure)).</p>\n</section>\n"
            return h
        }
        if byCondition.isEmpty {
            var why: OrderedSet<String> = []
            for u in report.unavailable
            where workloads.contains(where: { $0.label == u.workload && spec.fed(by: u.metric, of: $0) }) {
                why.append("\(u.metric): \(u.reason)")
            }
            let failed = report.runs.filter { r in r.status != "ok" && workloads.contains { $0.label == r.workload } }
            for r in failed.prefix(5) {
                why.append("\(r.configuration)/\(r.workload)/\(r.condition) rep \(r.repetition): \(r.status): \(r.reason ?? "")")
            }
            h +=
                "<p class=\"absent\" data-figure=\"\(spec.id)\">Not drawn: no \(esc(spec.measure)) was measured for "
                + workloads.map { esc($0.label) }.joined(separator: ", ") + " in this run"
                + (why.isEmpty ? " (no such metric was collected)." : ":") + "</p>\n"
            if !why.isEmpty { h += "<ul>" + why.map { "<li>\(esc($0))</li>" }.joined() + "</ul>\n" }
            h += "</section>\n"
            return h
        }
        for condition in report.conditions {
            guard let bars = byCondition[condition], !bars.isEmpty else {
                h += "<p class=\"absent\" data-figure=\"\(spec.id)\">\(esc(condition)): no data for this condition.</p>\n"
                continue
            }
            let metrics = Set(chosen.values).sorted().joined(separator: ", ")
            let refs = references(spec, report, condition: condition)
            h += "<figure>\n" + svg(id: "\(spec.id)-\(condition)", bars: bars, report: report, references: refs)
            h +=
                "<figcaption>\(esc(spec.title)), condition <b>\(esc(condition))</b>: \(esc(metrics)) of each configuration "
                + "divided by \(esc(report.baseline)); whiskers: CI of the ratio."
                + intervalNotes(bars) + "</figcaption>\n"
            h += referenceCaption(refs, bars: bars, report: report)
            h += "</figure>\n"
            h += "<table class=\"figure-data\"><tr><th>workload</th><th>configuration</th><th>metric</th><th>ratio</th>"
            h += "<th>CI</th><th>log-t CI</th><th>bootstrap CI</th><th>p</th><th>n</th><th>verdict</th><th>method</th></tr>\n"
            for b in bars {
                let c = b.comparison
                h +=
                    "<tr><td>\(esc(b.group))</td><td>\(esc(b.configuration))</td><td>\(esc(c?.metric ?? "geomean"))</td>"
                    + "<td>\(num(b.ratio))</td><td>\(ci(b.ci))</td><td>\(ci(c?.ratioCILogT))</td>"
                    + "<td>\(ci(c?.ratioCIBootstrap))</td><td>\(num(c?.pValue, "%.4g"))</td>"
                    + "<td>\(c.map { "\($0.n)/\($0.nBaseline)" } ?? "")</td><td>\(esc(c?.verdict ?? ""))</td>"
                    + "<td>\(esc(c?.method ?? b.note))</td></tr>\n"
            }
            h += "</table>\n"
        }
        h += "</section>\n"
        return h
    }

    /// The experiment's reference values for a figure under a condition.
    static func references(_ spec: FigureSpec, _ report: Report, condition: String) -> [ReferenceValue] {
        (report.reference?.values ?? []).filter {
            $0.figure == spec.id && ($0.condition == nil || $0.condition == condition)
        }
    }

    /// The interval drawn for a bar when its primary CI is missing: log-t, else bootstrap.
    static func fallbackInterval(_ b: Bar) -> (ci: [Double], method: String)? {
        guard b.ci == nil, let c = b.comparison else { return nil }
        if let i = c.ratioCILogT { return (i, "log-t") }
        if let i = c.ratioCIBootstrap { return (i, "bootstrap") }
        return nil
    }

    /// What the figure draws for bars without a bounded CI, said beside it.
    static func intervalNotes(_ bars: [Bar]) -> String {
        var notes: [String] = []
        for b in bars where b.ci == nil {
            let what =
                b.comparison.map { c in
                    c.n < 2 || c.nBaseline < 2 ? "no CI (\(c.n)/\(c.nBaseline) runs)" : "primary CI unbounded"
                } ?? "no CI"
            let alt = fallbackInterval(b).map { " — \($0.method) interval \(ci($0.ci)) drawn dotted" } ?? ""
            notes.append("\(b.group)/\(b.configuration): \(what)\(alt)")
        }
        guard !notes.isEmpty else { return "" }
        return " Open whiskers with ∞: " + esc(notes.joined(separator: "; ")) + "."
    }

    /// One line per reference value: the paper's value beside our geometric mean and its CI.
    static func referenceCaption(_ refs: [ReferenceValue], bars: [Bar], report: Report) -> String {
        guard !refs.isEmpty else { return "" }
        var h = "<ul class=\"references\">\n"
        for r in refs {
            let ours = bars.first { $0.group.hasPrefix("geomean") && $0.configuration == r.configuration }
            let what = r.label.map { "\(esc($0)) " } ?? ""
            var line =
                "<li class=\"reference\" data-configuration=\"\(esc(r.configuration))\">\(esc(report.reference?.source ?? "reference")): "
                + "\(esc(r.configuration)) \(what)(ratio \(num(r.ratio))) — "
            if let ours {
                line += "ours: geometric mean \(num(ours.ratio)) \(ci(ours.ci)); "
                if let c = ours.ci {
                    let inside = r.ratio >= c[0] && r.ratio <= c[1]
                    line +=
                        inside ? "<b>the paper's value lies inside our CI</b>" : "<b>the paper's value lies outside our CI</b>"
                } else {
                    line += "our geometric mean has no CI (fewer than 2 workloads): no inside/outside verdict"
                }
            } else {
                line += "<span class=\"absent\">not measured in this run</span>"
            }
            h += line + "</li>\n"
        }
        return h + "</ul>\n"
    }

    /// Grouped bars with CI whiskers and the baseline at 1.0. The y axis is set by the bars and
    /// their finite CIs; a CI bound far above the bars (more than 3× the tallest bar) is clipped at
    /// the top and marked with an arrow and its value. A bar without a bounded CI gets an open
    /// whisker (dashed, to the top, ∞) and, where one exists, the log-t or bootstrap interval
    /// dotted beside it. Reference values are diamonds beside the geometric-mean bar.
    static func svg(id: String, bars: [Bar], report: Report, references: [ReferenceValue] = []) -> String {
        var groups: [String] = []
        for b in bars where !groups.contains(b.group) { groups.append(b.group) }
        var configs: [String] = []
        for b in bars where !configs.contains(b.configuration) { configs.append(b.configuration) }
        let width = 760.0
        let height = 340.0
        let right = 150.0
        let top = 22.0
        let plotWGuess = width - 60 - right
        // Rotated group labels extend left of their group's centre: keep the first one inside.
        let labels = groups.map { $0.count > 18 ? String($0.prefix(17)) + "…" : $0 }
        let longest = Double(labels.map(\.count).max() ?? 0) * 6.2
        let firstCentre = plotWGuess / Double(max(groups.count, 1)) / 2
        let left = max(56.0, longest * cos(Double.pi / 6) - firstCentre + 8)
        let bottom = max(64.0, longest * sin(Double.pi / 6) + 26)
        let plotW = width - left - right
        let plotH = height - top - bottom
        let tallest = max(1.0, bars.map(\.ratio).max() ?? 1, references.map(\.ratio).max() ?? 0)
        // Finite CI bounds count for the axis unless far above the bars (then they are clipped).
        let limit = tallest * 3
        let finiteTops = bars.flatMap { b in [b.ci?[1], fallbackInterval(b)?.ci[1]].compactMap { $0 } }
            .filter { $0.isFinite && $0 <= limit }
        let top1 = max(tallest, finiteTops.max() ?? 0)
        let yMax = max(1.2, top1 * 1.1)
        let steps = [0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
        let step = steps.first { yMax / $0 <= 8 } ?? yMax / 8
        func y(_ v: Double) -> Double { top + plotH * (1 - min(max(v, 0), yMax) / yMax) }
        let groupW = plotW / Double(max(groups.count, 1))
        let barW = min(40, groupW * 0.8 / Double(max(configs.count, 1)))
        var s =
            "<svg class=\"figure\" id=\"\(esc(id))\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" "
            + "height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\">\n"
        // Axes and grid.
        var t = 0.0
        while t <= yMax + 1e-9 {
            s +=
                "<line class=\"grid\" x1=\"\(left)\" x2=\"\(left + plotW)\" y1=\"\(y(t))\" y2=\"\(y(t))\" stroke=\"#eee\"/>"
                + "<text class=\"tick\" x=\"\(left - 6)\" y=\"\(y(t) + 4)\" font-size=\"11\" text-anchor=\"end\">\(String(format: "%g", t))</text>\n"
            t += step
        }
        s += "<line class=\"axis\" x1=\"\(left)\" x2=\"\(left)\" y1=\"\(top)\" y2=\"\(top + plotH)\" stroke=\"#333\"/>\n"
        s +=
            "<line class=\"axis\" x1=\"\(left)\" x2=\"\(left + plotW)\" y1=\"\(top + plotH)\" y2=\"\(top + plotH)\" stroke=\"#333\"/>\n"
        s +=
            "<text x=\"12\" y=\"\(top + plotH / 2)\" font-size=\"11\" transform=\"rotate(-90 12 \(top + plotH / 2))\" "
            + "text-anchor=\"middle\">ratio to \(esc(report.baseline))</text>\n"
        func whisker(_ cx: Double, _ lo: Double, _ hi: Double, dash: String?, cls: String) -> String {
            let style = dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
            var w = ""
            let clipped = hi > yMax
            w += "<line class=\"\(cls)\" x1=\"\(cx)\" x2=\"\(cx)\" y1=\"\(y(lo))\" y2=\"\(y(hi))\" stroke=\"#111\"\(style)/>"
            if lo < 0 {
                // Below the axis (a Fieller bound can be negative): a down arrow and the bound's value.
                let yb = top + plotH
                w +=
                    "<path class=\"clipped\" d=\"M\(cx - 4) \(yb - 6) L\(cx) \(yb) L\(cx + 4) \(yb - 6)\" fill=\"none\" stroke=\"#b00\"/>"
                    + "<text class=\"clipped-label\" x=\"\(cx + 5)\" y=\"\(yb - 3)\" font-size=\"9\" fill=\"#b00\">\(String(format: "%.3g", lo))</text>"
            } else {
                w +=
                    "<line class=\"whisker-cap\" x1=\"\(cx - 4)\" x2=\"\(cx + 4)\" y1=\"\(y(lo))\" y2=\"\(y(lo))\" stroke=\"#111\"/>"
            }
            if clipped {
                // Clipped at the top: an arrowhead and the bound's value.
                w +=
                    "<path class=\"clipped\" d=\"M\(cx - 4) \(top + 6) L\(cx) \(top) L\(cx + 4) \(top + 6)\" fill=\"none\" stroke=\"#b00\"/>"
                    + "<text class=\"clipped-label\" x=\"\(cx + 5)\" y=\"\(top + 8)\" font-size=\"9\" fill=\"#b00\">\(String(format: "%.3g", hi))</text>"
            } else {
                w +=
                    "<line class=\"whisker-cap\" x1=\"\(cx - 4)\" x2=\"\(cx + 4)\" y1=\"\(y(hi))\" y2=\"\(y(hi))\" stroke=\"#111\"/>"
            }
            return w + "\n"
        }
        for (gi, group) in groups.enumerated() {
            let gx = left + groupW * Double(gi)
            let inner = barW * Double(configs.count)
            let x0 = gx + (groupW - inner) / 2
            for b in bars where b.group == group {
                guard let ci = configs.firstIndex(of: b.configuration) else { continue }
                let x = x0 + barW * Double(ci)
                let color = palette[ci % palette.count]
                let yTop = y(b.ratio)
                let title = "\(b.group) / \(b.configuration): \(num(b.ratio)) \(ci_(b.ci)) — \(b.note)"
                s +=
                    "<rect class=\"bar\" data-group=\"\(esc(b.group))\" data-configuration=\"\(esc(b.configuration))\" "
                    + "data-ratio=\"\(b.ratio)\" x=\"\(x + 1)\" y=\"\(yTop)\" width=\"\(barW - 2)\" "
                    + "height=\"\(max(0, top + plotH - yTop))\" fill=\"\(color)\"><title>\(esc(title))</title></rect>\n"
                let cx = x + barW / 2
                if let c = b.ci {
                    s += whisker(cx, c[0], c[1], dash: nil, cls: "whisker")
                } else if b.comparison != nil {
                    // No bounded CI: an open whisker to the top with ∞, and the fallback interval dotted beside.
                    s +=
                        "<line class=\"whisker-open\" x1=\"\(cx)\" x2=\"\(cx)\" y1=\"\(yTop)\" y2=\"\(top)\" stroke=\"#b00\" stroke-dasharray=\"3 3\"/>"
                        + "<text class=\"unbounded\" x=\"\(cx)\" y=\"\(top - 6)\" font-size=\"12\" text-anchor=\"middle\" fill=\"#b00\">∞</text>\n"
                    if let (alt, _) = fallbackInterval(b) {
                        s += whisker(cx + min(8, barW / 3), alt[0], alt[1], dash: "1 2", cls: "whisker-fallback")
                    }
                }
            }
            if group.hasPrefix("geomean") {
                for r in references {
                    guard let ci = configs.firstIndex(of: r.configuration) else { continue }
                    let cx = x0 + barW * Double(ci) + barW / 2
                    let ry = y(r.ratio)
                    s +=
                        "<path class=\"reference\" data-configuration=\"\(esc(r.configuration))\" data-ratio=\"\(r.ratio)\" "
                        + "d=\"M\(cx) \(ry - 6) L\(cx + 6) \(ry) L\(cx) \(ry + 6) L\(cx - 6) \(ry) Z\" fill=\"#fff\" stroke=\"#000\" "
                        + "stroke-width=\"1.5\"><title>\(esc("reference \(num(r.ratio)) (\(r.label ?? "")) — \(report.reference?.source ?? "")"))</title></path>\n"
                }
            }
            let label = labels[gi]
            let lx = gx + groupW / 2
            let ly = top + plotH + 14
            s +=
                "<text class=\"group-label\" x=\"\(lx)\" y=\"\(ly)\" font-size=\"11\" text-anchor=\"end\" "
                + "transform=\"rotate(-30 \(lx) \(ly))\">\(esc(label))</text>\n"
        }
        s +=
            "<line class=\"baseline\" x1=\"\(left)\" x2=\"\(left + plotW)\" y1=\"\(y(1))\" y2=\"\(y(1))\" "
            + "stroke=\"#000\" stroke-dasharray=\"5 3\"/>\n"
        for (ci, config) in configs.enumerated() {
            let ly = top + 14 + Double(ci) * 16
            s +=
                "<rect class=\"legend\" x=\"\(left + plotW + 12)\" y=\"\(ly - 9)\" width=\"10\" height=\"10\" "
                + "fill=\"\(palette[ci % palette.count])\"/><text x=\"\(left + plotW + 26)\" y=\"\(ly)\" font-size=\"11\">"
                + "\(esc(config))</text>\n"
        }
        var ly = top + 14 + Double(configs.count) * 16 + 6
        if !references.isEmpty {
            s +=
                "<path d=\"M\(left + plotW + 17) \(ly - 10) L\(left + plotW + 22) \(ly - 5) L\(left + plotW + 17) \(ly) "
                + "L\(left + plotW + 12) \(ly - 5) Z\" fill=\"#fff\" stroke=\"#000\"/><text x=\"\(left + plotW + 26)\" "
                + "y=\"\(ly - 1)\" font-size=\"11\">paper (reference)</text>\n"
            ly += 16
        }
        if bars.contains(where: { $0.ci == nil && $0.comparison != nil }) {
            s +=
                "<text x=\"\(left + plotW + 12)\" y=\"\(ly)\" font-size=\"11\" fill=\"#b00\">∞ no bounded CI;</text>"
                + "<text x=\"\(left + plotW + 12)\" y=\"\(ly + 13)\" font-size=\"11\" fill=\"#b00\">dotted: log-t/bootstrap</text>\n"
        }
        s += "</svg>\n"
        return s
    }

    static func ci_(_ c: [Double]?) -> String { c.map { String(format: "[%.3f, %.3f]", $0[0], $0[1]) } ?? "(no CI)" }

    static func tables(_ report: Report) -> String {
        var h = "<h2>All comparisons</h2>\n"
        if report.comparisons.isEmpty {
            h += "<p class=\"absent\">No comparisons: no configuration other than the baseline has successful runs.</p>\n"
        } else {
            h += "<table id=\"comparisons\"><tr><th>workload</th><th>condition</th><th>configuration</th><th>metric</th>"
            h += "<th>center</th><th>value</th><th>baseline</th><th>ratio</th><th>CI</th><th>p</th><th>Mann–Whitney p</th>"
            h += "<th>n</th><th>verdict</th></tr>\n"
            for c in report.comparisons {
                h +=
                    "<tr><td>\(esc(c.workload))</td><td>\(esc(c.condition))</td><td>\(esc(c.configuration))</td>"
                    + "<td>\(esc(c.metric)) [\(esc(c.unit))]</td><td>\(esc(c.center))</td><td>\(num(c.mean, "%.4g"))</td>"
                    + "<td>\(num(c.baselineMean, "%.4g"))</td><td>\(num(c.ratio))</td><td>\(ci(c.ratioCI))</td>"
                    + "<td>\(num(c.pValue, "%.4g"))</td><td>\(num(c.mannWhitneyP, "%.4g"))</td>"
                    + "<td>\(c.n)/\(c.nBaseline)</td><td>\(esc(c.verdict))</td></tr>\n"
            }
            h += "</table>\n"
        }
        if !report.geomeans.isEmpty {
            h += "<h2>Geometric means of the primary metric's ratios</h2>\n<ul>\n"
            for g in report.geomeans {
                let each = g.workloads.sorted { $0.key < $1.key }.map { "\(esc($0.key)) \(num($0.value))" }
                h +=
                    "<li>\(esc(g.configuration)) / \(esc(g.condition)) / \(esc(g.metric)): \(num(g.geomean)) \(ci(g.ci)); "
                    + each.joined(separator: ", ") + "</li>\n"
            }
            h += "</ul>\n"
        }
        if let testbeds = report.listedTestbeds {
            h += "<h2>Testbeds</h2>\n<table id=\"testbeds\"><tr><th>testbed</th><th>runs</th><th>experiment runs</th></tr>\n"
            for t in testbeds {
                h +=
                    "<tr><td>\(esc(t.testbed))</td><td>\(t.runs)</td><td>\(esc(t.experimentRuns.joined(separator: ", ")))</td></tr>\n"
            }
            h += "</table>\n"
            func ratio(_ r: Double?, _ ci: [Double]?) -> String {
                (r.map { String(format: "%.4f", $0) } ?? "—") + (ci.map { String(format: " [%.4f, %.4f]", $0[0], $0[1]) } ?? "")
            }
            if let ratios = report.testbedRatios, !ratios.isEmpty {
                h += "<table id=\"testbed-ratios\"><tr><th>cell</th><th>metric</th><th>combined</th><th>per testbed</th></tr>\n"
                for t in ratios {
                    let per = t.perTestbed.map {
                        esc($0.testbed) + ": " + ratio($0.ratio, $0.ratioCI) + ($0.disagrees ? " <strong>disagrees</strong>" : "")
                    }
                    h +=
                        "<tr><td>\(esc("\(t.configuration) / \(t.workload) / \(t.condition)"))</td><td>\(esc(t.metric))</td>"
                        + "<td>\(ratio(t.ratio, t.ratioCI))</td><td>\(per.joined(separator: "<br>"))</td></tr>\n"
                }
                h += "</table>\n"
            }
        }
        h += "<h2>Repetitions: why each cell stopped</h2>\n"
        if report.repetitions.isEmpty {
            h += "<p class=\"absent\">No cells other than the baseline.</p>\n"
        } else {
            h += "<table id=\"repetitions\"><tr><th>configuration</th><th>workload</th><th>condition</th><th>metric</th>"
            h += "<th>repetitions</th><th>n</th><th>CI half-width</th><th>reason</th><th>explanation</th></tr>\n"
            for r in report.repetitions {
                h +=
                    "<tr><td>\(esc(r.configuration))</td><td>\(esc(r.workload))</td><td>\(esc(r.condition))</td>"
                    + "<td>\(esc(r.metric))</td><td>\(r.repetitions) (baseline \(r.baselineRepetitions); min \(r.min), max \(r.max))</td>"
                    + "<td>\(r.n)/\(r.nBaseline)</td><td>\(r.relativeHalfWidth.map { String(format: "±%.2f%%", $0 * 100) } ?? "—")</td>"
                    + "<td>\(esc(r.reason.rawValue))</td><td>\(esc(r.explanation))</td></tr>\n"
            }
            h += "</table>\n"
        }
        h += "<h2>Provenance of every layer</h2>\n"
        for p in report.provenance {
            h += "<h3>\(esc(p.configuration))</h3>\n"
            if p.settings.isEmpty && p.commands.isEmpty {
                h += "<p class=\"absent\">No runs of this configuration were stored.</p>\n"
                continue
            }
            h +=
                "<table class=\"provenance\"><tr><th>setting (knobs read back, platform, pinning, kernels, command lines)</th><th>value(s)</th></tr>\n"
            for (k, v) in p.settings.sorted(by: { $0.key < $1.key }) {
                h +=
                    "<tr><td><code>\(esc(k))</code></td><td>" + v.map { "<code>\(esc($0))</code>" }.joined(separator: "<br>")
                    + "</td></tr>\n"
            }
            h += "</table>\n"
            if !p.commands.isEmpty {
                h +=
                    "<table class=\"commands\"><tr><th>workload</th><th>command line</th><th>CPUs</th><th>environment</th></tr>\n"
                for c in p.commands {
                    h +=
                        "<tr><td>\(esc(c.workload))</td><td><code>\(esc(c.argv.joined(separator: " ")))</code></td>"
                        + "<td>\(esc(CPUList.format(c.cpus)))</td><td><code>"
                        + esc(c.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
                        + "</code></td></tr>\n"
                }
                h += "</table>\n"
            }
        }
        if !report.metricProvenance.isEmpty {
            h += "<h3>Metrics: source, event encodings and files</h3>\n<table id=\"metric-provenance\">"
            h += "<tr><th>metric</th><th>unit</th><th>source</th><th>stands in for</th><th>detail</th></tr>\n"
            for m in report.metricProvenance {
                h +=
                    "<tr><td>\(esc(m.metric))</td><td>\(esc(m.unit))</td><td>\(esc(m.source))</td>"
                    + "<td>\(esc(m.proxyFor ?? ""))</td><td>"
                    + m.details.map { "<code>\(esc($0))</code>" }.joined(separator: "<br>")
                    + "</td></tr>\n"
            }
            h += "</table>\n"
        }
        h += "<h2>Unavailable and why</h2>\n"
        if report.unavailable.isEmpty {
            h += "<p>Every metric the collectors know of was measured.</p>\n"
        } else {
            h += "<table id=\"unavailable\"><tr><th>metric</th><th>reason</th><th>where</th></tr>\n"
            struct Key: Hashable {
                var metric: String
                var reason: String
            }
            // First-seen order of (metric, reason), each with its distinct cells.
            var rows: OrderedDictionary<Key, OrderedSet<String>> = [:]
            for u in report.unavailable {
                rows[Key(metric: u.metric, reason: u.reason), default: []].append(
                    "\(u.configuration)/\(u.workload)/\(u.condition)")
            }
            for (key, cells) in rows {
                h +=
                    "<tr><td>\(esc(key.metric))</td><td>\(esc(key.reason))</td><td>"
                    + esc(cells.joined(separator: ", ")) + "</td></tr>\n"
            }
            h += "</table>\n"
        }
        let failed = report.runs.filter { $0.status != "ok" }
        if !failed.isEmpty {
            h += "<h2>Runs that did not succeed</h2>\n<ul>\n"
            for r in failed {
                h +=
                    "<li>#\(r.sequence) \(esc(r.configuration))/\(esc(r.workload))/\(esc(r.condition)) rep \(r.repetition): "
                    + "\(esc(r.status)): \(esc(r.reason ?? ""))"
                let lines = ReportRun.lastLines(r.outputTail)
                if !lines.isEmpty { h += "<pre>" + esc(lines.joined(separator: "\n")) + "</pre>" }
                h += "</li>\n"
            }
            h += "</ul>\n"
        }
        if !report.notes.isEmpty {
            h += "<h2>Notes</h2>\n<ul>\n" + report.notes.map { "<li>\(esc($0))</li>\n" }.joined() + "</ul>\n"
        }
        return h
    }
}
