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
            + "The probe ran once per run, at the end of the measured phase, while the workload stood stopped "
            + "(each align.* metric's detail says how long it was held). "
            + "align.huge.host is one layer only (this machine): well-aligned needs every layer of a stack.</p>\n"
        h += layerSection(report)
        h += "</section>\n"
        return h
    }

    /// Layer names below the guest, top to bottom: `L1`, `L0`, then this machine (`host`).
    static func orderLayers(_ names: Set<String>) -> [String] {
        names.sorted { a, b in
            let na = Int(a.dropFirst().prefix { $0.isNumber }) ?? -1
            let nb = Int(b.dropFirst().prefix { $0.isNumber }) ?? -1
            return na > nb
        }
    }

    /// One stacked bar per workload · condition · configuration: of the workload's present regions,
    /// huge in the guest only, also huge in each layer below, and well-aligned (huge at every
    /// layer); means over the runs that measured every part.
    static func stacked(_ report: Report) -> (bars: [(label: String, segments: [Double], n: Int)], names: [String])? {
        var lower = Set<String>()
        var guestLayer: String?
        for run in report.runs {
            for (name, value) in run.metrics where value != nil {
                if name.hasPrefix("align.backed.") { lower.insert(String(name.dropFirst("align.backed.".count))) }
            }
        }
        guard !lower.isEmpty else { return nil }
        let layers = orderLayers(lower)
        for run in report.runs {
            if let g = run.metrics.keys.first(where: {
                $0.hasPrefix("align.huge.") && !lower.contains(String($0.dropFirst("align.huge.".count)))
            }) {
                guestLayer = String(g.dropFirst("align.huge.".count))
                break
            }
        }
        guard let guestLayer else { return nil }
        var groups: [String: [[Double]]] = [:]
        var order: [String] = []
        for run in report.runs {
            guard let h = run.metrics["align.huge.\(guestLayer)"] ?? nil else { continue }
            var cumulative: [Double] = [h]
            var complete = true
            for layer in layers {
                guard let b = run.metrics["align.backed.\(layer)"] ?? nil else {
                    // No huge region to back: nothing lower either.
                    if h == 0 {
                        cumulative.append(0)
                        continue
                    }
                    complete = false
                    break
                }
                cumulative.append(h * b)
            }
            guard complete else { continue }
            var segments: [Double] = []
            for i in 0..<(cumulative.count - 1) { segments.append(cumulative[i] - cumulative[i + 1]) }
            segments.append(cumulative.last!)
            let key = "\(run.workload) · \(run.condition) — \(run.configuration)"
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(segments)
        }
        guard !order.isEmpty else { return nil }
        let bars = order.map { key -> (String, [Double], Int) in
            let all = groups[key]!
            let mean = (0..<all[0].count).map { i in all.map { $0[i] }.reduce(0, +) / Double(all.count) }
            return (key, mean, all.count)
        }
        var names = ["huge in \(guestLayer) only"]
        for layer in layers.dropLast() { names.append("also in \(layer)") }
        names.append("well-aligned (also in \(layers.last!): every layer)")
        return (bars, names)
    }

    static func layerSection(_ report: Report) -> String {
        guard let (bars, names) = stacked(report) else {
            return "<p class=\"absent\" data-figure=\"alignment-layers\">Per-layer stacked bars not drawn: no run has "
                + "align.backed.&lt;layer&gt; with align.huge.&lt;guest&gt; (a guest probed down its stack).</p>\n"
        }
        let colors = ["#d9d9d9", "#a6bddb", "#74a9cf", "#2b8cbe", "#045a8d", "#023858"]
        let rowHeight = 22
        let labelWidth = 330
        let barWidth = 400
        let height = bars.count * rowHeight + 30 + names.count * 16
        var h = "<h3>Per layer: where the workload's huge pages stop being huge</h3>\n"
        h +=
            "<svg class=\"figure\" data-figure=\"alignment-layers\" width=\"\(labelWidth + barWidth + 90)\" height=\"\(height)\" role=\"img\">\n"
        for (i, bar) in bars.enumerated() {
            let y = 10 + i * rowHeight
            h += "<text x=\"4\" y=\"\(y + 14)\" font-size=\"12\">\(HTMLReport.esc(bar.label))</text>"
            var x = Double(labelWidth)
            for (k, v) in bar.segments.enumerated() {
                let w = max(0, min(1, v)) * Double(barWidth)
                let color = k == bar.segments.count - 1 ? colors.last! : colors[min(k, colors.count - 2)]
                h +=
                    "<rect x=\"\(Int(x.rounded()))\" y=\"\(y + 2)\" width=\"\(Int(w.rounded()))\" height=\"\(rowHeight - 6)\" fill=\"\(color)\"><title>\(HTMLReport.esc(names[k])): \(HTMLReport.num(v))</title></rect>"
                x += w
            }
            h += "<text x=\"\(labelWidth + barWidth + 4)\" y=\"\(y + 14)\" font-size=\"12\">n=\(bar.n)</text>\n"
        }
        let legendTop = 10 + bars.count * rowHeight + 10
        for (k, name) in names.enumerated() {
            let color = k == names.count - 1 ? colors.last! : colors[min(k, colors.count - 2)]
            h += "<rect x=\"\(labelWidth)\" y=\"\(legendTop + k * 16)\" width=\"12\" height=\"12\" fill=\"\(color)\"/>"
            h +=
                "<text x=\"\(labelWidth + 16)\" y=\"\(legendTop + k * 16 + 11)\" font-size=\"11\">\(HTMLReport.esc(name))</text>\n"
        }
        h += "</svg>\n"
        h +=
            "<p>Fractions of the workload's present 2 MiB regions, mean over runs: huge in the guest, and how far down "
            + "each stays one huge page (align.huge.&lt;guest&gt; × align.backed.&lt;layer&gt;). The rest of each bar "
            + "(blank) is base pages in the guest. KVM's per-VM page counts (align.kvm.*) are whole-VM figures and are "
            + "not part of these bars.</p>\n"
        return h
    }
}
