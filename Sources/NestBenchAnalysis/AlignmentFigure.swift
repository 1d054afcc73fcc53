import NestBenchModel

/// The alignment figure of the HTML report: per workload, condition and configuration, the
/// fraction of the workload's 2 MiB regions that are well-aligned (`align.well_aligned`, Gemini's
/// Table 3 metric) — or, for local runs, huge on this machine (`align.huge.host`) — as absolute
/// bars from 0 to 1 (not ratios: a baseline with no huge pages has no ratio). A stacked bar per
/// layer needs the per-layer `align.backed.<layer>` metrics; the figure says when they are absent.
public enum AlignmentFigure {
    /// The metric plotted for one workload, from the metrics it has comparisons for.
    static func pick(_ available: Set<String>) -> String? {
        if available.contains("align.well_aligned") { return "align.well_aligned" }
        return available.filter { $0.hasPrefix("align.huge.") }.sorted().first
    }

    struct Row {
        var label: String
        var configuration: String
        var value: Double
        var n: Int
    }

    static func rows(_ report: Report) -> (rows: [Row], metrics: [String: String]) {
        var rows: [Row] = []
        var metrics: [String: String] = [:]
        for w in report.workloads {
            let comparisons = report.comparisons.filter { $0.workload == w.label }
            guard let metric = pick(Set(comparisons.map(\.metric))) else { continue }
            metrics[w.label] = metric
            let chosen = comparisons.filter { $0.metric == metric }
            for condition in Array(Set(chosen.map(\.condition))).sorted() {
                let here = chosen.filter { $0.condition == condition }
                guard let first = here.first else { continue }
                rows.append(
                    Row(
                        label: "\(w.label) · \(condition)", configuration: report.baseline, value: first.baselineMean,
                        n: first.nBaseline))
                for c in here.sorted(by: { $0.configuration < $1.configuration }) where c.configuration != report.baseline {
                    rows.append(Row(label: "\(w.label) · \(condition)", configuration: c.configuration, value: c.mean, n: c.n))
                }
            }
        }
        return (rows, metrics)
    }

    /// The `<section>` of the figure (with a "not drawn" line naming what is missing).
    public static func section(_ report: Report) -> String {
        var h = "<section class=\"figure-section\" id=\"alignment\">\n<h2>Huge-page alignment — well-aligned rate</h2>\n"
        let (rows, metrics) = rows(report)
        guard !rows.isEmpty else {
            h +=
                "<p class=\"absent\" data-figure=\"alignment\">Not drawn: no run of this experiment has an alignment "
                + "metric (align.well_aligned or align.huge.&lt;layer&gt;); the probe needs root and a workload that stops "
                + "at the end of its measured phase (nb-micro).</p>\n</section>\n"
            return h
        }
        let rowHeight = 22
        let labelWidth = 330
        let barWidth = 400
        let height = rows.count * rowHeight + 30
        h += "<svg class=\"figure\" width=\"\(labelWidth + barWidth + 90)\" height=\"\(height)\" role=\"img\">\n"
        for (i, r) in rows.enumerated() {
            let y = 10 + i * rowHeight
            let w = Int((max(0, min(1, r.value)) * Double(barWidth)).rounded())
            let color = r.configuration == report.baseline ? "#999" : "#4269d0"
            h +=
                "<text x=\"4\" y=\"\(y + 14)\" font-size=\"12\">\(HTMLReport.esc(r.label)) — \(HTMLReport.esc(r.configuration))</text>"
            h += "<rect x=\"\(labelWidth)\" y=\"\(y + 2)\" width=\"\(w)\" height=\"\(rowHeight - 6)\" fill=\"\(color)\"/>"
            h +=
                "<text x=\"\(labelWidth + w + 4)\" y=\"\(y + 14)\" font-size=\"12\">\(HTMLReport.num(r.value)) (n=\(r.n))</text>\n"
        }
        h += "<line x1=\"\(labelWidth)\" y1=\"5\" x2=\"\(labelWidth)\" y2=\"\(height - 20)\" stroke=\"#333\"/>"
        h +=
            "<line x1=\"\(labelWidth + barWidth)\" y1=\"5\" x2=\"\(labelWidth + barWidth)\" y2=\"\(height - 20)\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>"
        h += "<text x=\"\(labelWidth + barWidth - 8)\" y=\"\(height - 5)\" font-size=\"11\">1.0</text>\n</svg>\n"
        let used = Set(metrics.values).sorted().joined(separator: ", ")
        h +=
            "<p>Mean fraction of the workload's present 2 MiB regions per run (\(HTMLReport.esc(used))). "
            + "align.huge.host is one layer only (this machine): well-aligned needs every layer of a stack.</p>\n"
        let layered = report.comparisons.contains { $0.metric.hasPrefix("align.backed.") }
        if !layered {
            h +=
                "<p class=\"absent\" data-figure=\"alignment-layers\">Per-layer stacked bars not drawn: no run has "
                + "align.backed.&lt;layer&gt; (guest layers are not probed yet).</p>\n"
        }
        h += "</section>\n"
        return h
    }
}
