import Foundation
import NestBenchModel
import NestBenchStats

/// One experiment run's point of a history panel: its center with a confidence interval.
public struct HistoryPanelPoint: Codable, Sendable, Hashable {
    public var runID: String
    public var startedAt: Date
    public var tags: [String: String]
    public var value: Double
    /// The 95% interval of the run's center over its repetitions; nil when it has none (one
    /// repetition, a median of five or fewer).
    public var lower: Double?
    public var upper: Double?
    public var n: Int
}

/// A change point of a panel, at the index of the first point after the step.
public struct HistoryPanelChange: Codable, Sendable, Hashable {
    public var index: Int
    public var runID: String
    public var forwardChange: Double
    public var pValue: Double
    /// Tags whose value differs from the point before: what changed there (`kernel: a → b`).
    public var changedTags: [String: [String]]
}

/// One time series of the history page: a workload × configuration × condition × primary metric
/// (in one group of `--by`), its change points, its last stable segment and the latest run's verdict.
public struct HistoryPanel: Codable, Sendable {
    public var key: SeriesKey
    /// `kernel=6.1.0-28-amd64` when grouped by a tag.
    public var group: String?
    public var unit: String
    public var polarity: Polarity
    public var center: String
    public var points: [HistoryPanelPoint]
    public var changes: [HistoryPanelChange]
    /// The latest point checked against the points before it, as `nestbench nightly` does.
    public var latest: NightlyCheck?
    /// Index of the first point of the last stable segment before the latest point.
    public var segmentStartIndex: Int?

    /// Regressions first, then improvements, then the rest.
    public var rank: Int {
        switch latest?.verdict {
        case "regression": return 0
        case "improvement": return 1
        case "same": return 2
        case "insufficient-history": return 3
        default: return 4
        }
    }
}

/// `nestbench history --html`: a self-contained page of time series (inline SVG, no scripts).
public enum HistoryPage {
    /// The metric a workload's panel shows: the one primary-metric selection of the analysis
    /// (nil when the workload declares none).
    public static func primaryMetric(of workload: WorkloadSpec, in experiment: Experiment) -> String? {
        Comparator.primaryMetric(for: workload, in: experiment)
    }

    /// Splits rows by the value of tag `by` (rows without it in their own group), in value order.
    public static func grouped(_ rows: [HistoryRow], by tag: String?) -> [(group: String?, rows: [HistoryRow])] {
        guard let tag else { return [(nil, rows)] }
        var groups: [String: [HistoryRow]] = [:]
        for r in rows { groups["\(tag)=\(r.tags[tag] ?? "(unset)")", default: []].append(r) }
        return groups.keys.sorted().map { ($0, groups[$0]!) }
    }

    /// The panels of the page. `primary`: workload label → its primary metric; series of other
    /// metrics are not drawn.
    public static func panels(
        _ rows: [HistoryRow], primary: [String: String], settings: NightlySettings, groupBy: String? = nil,
        experiment: Experiment? = nil
    ) -> [HistoryPanel] {
        var panels: [HistoryPanel] = []
        for (group, groupRows) in grouped(rows.filter { primary[$0.cell.workload] == $0.metric }, by: groupBy) {
            var values: [SeriesKey: [String: [Double]]] = [:]
            for r in groupRows {
                let key = SeriesKey(
                    workload: r.cell.workload, configuration: r.cell.configuration, condition: r.cell.condition,
                    metric: r.metric)
                values[key, default: [:]][r.experimentRunID, default: []].append(r.value)
            }
            for s in Nightly.series(groupRows, experiment: experiment) {
                let statistic: CenterStatistic =
                    s.center == "hmean" ? .harmonicMean : s.center == "median" ? .median : .mean
                let points = s.points.map { p in
                    let ci = statistic.interval(values[s.key]?[p.runID] ?? [])
                    return HistoryPanelPoint(
                        runID: p.runID, startedAt: p.startedAt, tags: p.tags, value: p.value, lower: ci?.lower,
                        upper: ci?.upper, n: p.n)
                }
                guard let last = points.last else { continue }
                let check = Nightly.check([s], runID: last.runID, primary: [s.key.metric], settings: settings).first
                let changes = settings.detector.detect(points.map(\.value)).map { c in
                    HistoryPanelChange(
                        index: c.index, runID: points[c.index].runID, forwardChange: c.forwardChange, pValue: c.pValue,
                        changedTags: changed(points[c.index - 1].tags, points[c.index].tags))
                }
                let start = check?.segmentStart.flatMap { id in points.firstIndex { $0.runID == id } }
                panels.append(
                    HistoryPanel(
                        key: s.key, group: group, unit: s.unit, polarity: s.polarity, center: s.center, points: points,
                        changes: changes, latest: check, segmentStartIndex: start))
            }
        }
        return panels.sorted { a, b in
            (a.rank, a.key, a.group ?? "") < (b.rank, b.key, b.group ?? "")
        }
    }

    static func changed(_ before: [String: String], _ after: [String: String]) -> [String: [String]] {
        var result: [String: [String]] = [:]
        for key in Set(before.keys).union(after.keys) where before[key] != after[key] {
            result[key] = [before[key] ?? "(unset)", after[key] ?? "(unset)"]
        }
        return result
    }

    // MARK: - Rendering

    static func esc(_ s: String) -> String { HTMLReport.esc(s) }
    static func num(_ x: Double) -> String { String(format: "%.4g", x) }
    static func coordinate(_ x: Double) -> String { String(format: "%.1f", x) }
    static func percent(_ x: Double?) -> String { x.map { String(format: "%+.1f%%", $0 * 100) } ?? "n/a" }

    static let dateFormatter: DateFormatter = {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm"
        return f
    }()

    static func date(_ d: Date) -> String { dateFormatter.string(from: d) }

    /// The whole page. `filters` and `groupBy` are said in its header.
    public static func render(
        _ panels: [HistoryPanel], experiment: String, filters: [(key: String, value: String)], groupBy: String?,
        settings: NightlySettings, generatedAt: Date = Date()
    ) -> String {
        var counts: [String: Int] = [:]
        for p in panels { counts[p.latest?.verdict ?? "no verdict", default: 0] += 1 }
        let runs = Set(panels.flatMap { $0.points.map(\.runID) }).count
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>NestBench history: \(esc(experiment))</title>
            <style>
            body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px;color:#222;background:#fff}
            h1{font-size:20px;margin:0 0 4px} h2{font-size:15px;margin:0 0 4px}
            .meta{color:#555;font-size:12px;margin:2px 0}
            .summary span{display:inline-block;margin-right:12px;font-size:13px}
            .panels{display:flex;flex-wrap:wrap;gap:12px;margin-top:12px}
            .panel{border:1px solid #ccc;border-radius:6px;padding:8px;width:560px;box-sizing:border-box}
            .panel.regression{border:2px solid #c62828} .panel.improvement{border:2px solid #2e7d32}
            .verdict{font-weight:600;padding:1px 6px;border-radius:3px;font-size:12px;color:#fff;background:#757575}
            .verdict.regression{background:#c62828} .verdict.improvement{background:#2e7d32} .verdict.same{background:#546e7a}
            .verdict.insufficient-history{background:#9e9e9e}
            svg.series{display:block} svg text{font-size:10px;fill:#444}
            .axis{stroke:#999;stroke-width:1} .grid{stroke:#eee;stroke-width:1}
            .band{fill:#1565c0;fill-opacity:0.12} .segment-mean{stroke:#1565c0;stroke-dasharray:4 3;stroke-width:1}
            .line{fill:none;stroke:#37474f;stroke-width:1.2} .ci{stroke:#607d8b;stroke-width:1.2}
            .point{fill:#37474f} .point.latest{stroke:#000;stroke-width:1}
            .point.latest.regression{fill:#c62828} .point.latest.improvement{fill:#2e7d32}
            .changepoint{stroke:#e65100;stroke-width:1.5;stroke-dasharray:5 3} text.changelabel{fill:#e65100;font-weight:600}
            ul.changes{margin:4px 0 0 16px;padding:0;font-size:12px;overflow-wrap:anywhere} .detail{font-size:12px;color:#333;margin-top:4px;overflow-wrap:anywhere}
            </style></head><body>
            <h1>NestBench history: \(esc(experiment))</h1>

            """
        html +=
            "<p class=\"meta\">\(panels.count) series (primary metric of each workload), \(runs) experiment runs; "
            + "generated \(esc(date(generatedAt))) UTC.</p>\n"
        html +=
            "<p class=\"meta\">Change points: E-divisive means with a t-test (window \(settings.detector.windowLength), "
            + "p &lt; \(num(settings.detector.maxPValue)), minimum change \(num(settings.detector.minMagnitude * 100))%), "
            + "as <code>nestbench nightly</code>. The latest run is judged against the last stable segment "
            + "(band: its mean ± the prediction interval at p \(num(settings.gatePValue)), needing \(settings.minSegment) runs). "
            + "Whiskers: 95% CI of each run's center over its repetitions.</p>\n"
        if !filters.isEmpty || groupBy != nil {
            var parts: [String] = []
            if !filters.isEmpty { parts.append("runs tagged " + filters.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")) }
            if let groupBy { parts.append("one series per value of tag \(groupBy)") }
            html += "<p class=\"meta\">Only \(esc(parts.joined(separator: "; ")))</p>\n"
        }
        html += "<p class=\"summary\">"
        for verdict in ["regression", "improvement", "same", "insufficient-history", "reported"] where counts[verdict] != nil {
            html += "<span><span class=\"verdict \(verdict)\">\(verdict)</span> \(counts[verdict]!)</span>"
        }
        html += "</p>\n"
        if panels.isEmpty { html += "<p>No stored results match.</p>\n" }
        html += "<div class=\"panels\">\n"
        for (i, panel) in panels.enumerated() { html += render(panel, id: "series-\(i)") }
        html += "</div>\n</body></html>\n"
        return html
    }

    /// One panel: heading with the verdict, the SVG, the change points and the gate's line.
    static func render(_ p: HistoryPanel, id: String) -> String {
        let verdict = p.latest?.verdict ?? "no verdict"
        var html = "<section class=\"panel \(esc(verdict))\" id=\"\(id)\" data-verdict=\"\(esc(verdict))\">\n"
        html +=
            "<h2>\(esc(p.key.workload)) / \(esc(p.key.configuration)) / \(esc(p.key.condition)) "
            + "<span class=\"verdict \(esc(verdict))\">\(esc(verdict))</span></h2>\n"
        html +=
            "<p class=\"meta\">\(esc(p.key.metric)) [\(esc(p.unit)), \(esc(p.center)) of each run's repetitions, "
            + "\(p.polarity == .higherIsBetter ? "higher is better" : p.polarity == .lowerIsBetter ? "lower is better" : "no polarity")]"
            + (p.group.map { " · \(esc($0))" } ?? "") + "</p>\n"
        html += svg(p)
        if !p.changes.isEmpty {
            html += "<ul class=\"changes\">\n"
            for c in p.changes {
                let point = p.points[c.index]
                let what = c.changedTags.keys.sorted().map { "\($0): \(c.changedTags[$0]![0]) → \(c.changedTags[$0]![1])" }
                html +=
                    "<li class=\"change\">Change point \(percent(c.forwardChange)) (p \(String(format: "%.2g", c.pValue))) "
                    + "at run <code>\(esc(c.runID))</code> (\(esc(date(point.startedAt))))"
                    + (what.isEmpty ? "" : "; changed there: \(esc(what.joined(separator: "; ")))") + "</li>\n"
            }
            html += "</ul>\n"
        }
        if let check = p.latest { html += "<p class=\"detail\">Latest run: \(esc(Nightly.line(check)))</p>\n" }
        html += "</section>\n"
        return html
    }

    /// The time series as an SVG: points with CI whiskers, the last stable segment's band,
    /// change points as dashed vertical lines labelled with the step.
    static func svg(_ p: HistoryPanel) -> String {
        let width = 540.0
        let height = 200.0
        let left = 58.0
        let right = 12.0
        let top = 18.0
        let bottom = 30.0
        let n = p.points.count
        var lows = p.points.map { $0.lower ?? $0.value }
        var highs = p.points.map { $0.upper ?? $0.value }
        var band: (Double, Double)?
        if let mean = p.latest?.segmentMean, let bound = p.latest?.bound, p.segmentStartIndex != nil {
            band = (mean - bound, mean + bound)
            lows.append(mean - bound)
            highs.append(mean + bound)
        }
        var lo = lows.min() ?? 0
        var hi = highs.max() ?? 1
        if hi - lo < Swift.max(abs(hi), abs(lo)) * 1e-9 || hi == lo {
            let pad = Swift.max(abs(hi) * 0.05, 1e-9)
            lo -= pad
            hi += pad
        }
        let pad = (hi - lo) * 0.08
        lo -= pad
        hi += pad
        let step = n > 1 ? (width - left - right) / Double(n - 1) : 0
        func x(_ i: Int) -> Double { n > 1 ? left + Double(i) * step : (left + width - right) / 2 }
        func y(_ v: Double) -> Double { top + (hi - v) / (hi - lo) * (height - top - bottom) }
        var s =
            "<svg class=\"series\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" "
            + "viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\">\n"
        s +=
            "<title>\(esc(p.key.workload)) / \(esc(p.key.configuration)) / \(esc(p.key.condition)): \(esc(p.key.metric))</title>\n"
        // Y grid and labels.
        for k in 0...4 {
            let v = lo + (hi - lo) * Double(k) / 4
            let yy = coordinate(y(v))
            s += "<line class=\"grid\" x1=\"\(coordinate(left))\" x2=\"\(coordinate(width - right))\" y1=\"\(yy)\" y2=\"\(yy)\"/>"
            s +=
                "<text x=\"\(coordinate(left - 4))\" y=\"\(yy)\" text-anchor=\"end\" dominant-baseline=\"middle\">\(num(v))</text>\n"
        }
        s +=
            "<line class=\"axis\" x1=\"\(coordinate(left))\" x2=\"\(coordinate(left))\" y1=\"\(coordinate(top))\" y2=\"\(coordinate(height - bottom))\"/>"
        s +=
            "<line class=\"axis\" x1=\"\(coordinate(left))\" x2=\"\(coordinate(width - right))\" y1=\"\(coordinate(height - bottom))\" y2=\"\(coordinate(height - bottom))\"/>\n"
        // The last stable segment's band, from its first run to the latest.
        if let (bl, bh) = band, let start = p.segmentStartIndex, let mean = p.latest?.segmentMean {
            let x0 = Swift.max(left + 1, x(start) - (n > 1 ? step / 3 : 10))
            let x1 = Swift.min(width - 1, x(n - 1) + (n > 1 ? step / 3 : 10))
            s +=
                "<rect class=\"band\" x=\"\(coordinate(x0))\" y=\"\(coordinate(y(bh)))\" width=\"\(coordinate(x1 - x0))\" "
                + "height=\"\(coordinate(Swift.max(1, y(bl) - y(bh))))\"><title>last stable segment: \(num(mean)) ± \(num(bh - mean)) "
                + "(\(n - 1 - start) runs)</title></rect>\n"
            s +=
                "<line class=\"segment-mean\" x1=\"\(coordinate(x0))\" x2=\"\(coordinate(x1))\" y1=\"\(coordinate(y(mean)))\" y2=\"\(coordinate(y(mean)))\"/>\n"
        }
        // Change points between the last run before and the first run after the step.
        for c in p.changes {
            let cx = (x(c.index - 1) + x(c.index)) / 2
            s +=
                "<line class=\"changepoint\" data-index=\"\(c.index)\" data-run=\"\(esc(c.runID))\" x1=\"\(coordinate(cx))\" x2=\"\(coordinate(cx))\" "
                + "y1=\"\(coordinate(top - 6))\" y2=\"\(coordinate(height - bottom))\"><title>change point \(percent(c.forwardChange)) at \(esc(c.runID))</title></line>\n"
            let anchor = cx > width * 0.75 ? "end" : "start"
            s +=
                "<text class=\"changelabel\" x=\"\(coordinate(cx + (anchor == "end" ? -3 : 3)))\" y=\"\(coordinate(top - 6))\" text-anchor=\"\(anchor)\" "
                + "dominant-baseline=\"hanging\">\(percent(c.forwardChange)) at \(esc(date(p.points[c.index].startedAt)))</text>\n"
        }
        // The series, whiskers, points.
        if n > 1 {
            s +=
                "<polyline class=\"line\" points=\""
                + p.points.indices.map { "\(coordinate(x($0))),\(coordinate(y(p.points[$0].value)))" }.joined(separator: " ")
                + "\"/>\n"
        }
        let latestVerdict = p.latest?.verdict ?? ""
        for (i, point) in p.points.enumerated() {
            if let l = point.lower, let u = point.upper {
                s +=
                    "<line class=\"ci\" x1=\"\(coordinate(x(i)))\" x2=\"\(coordinate(x(i)))\" y1=\"\(coordinate(y(l)))\" y2=\"\(coordinate(y(u)))\"/>"
            }
            let latest = i == n - 1
            let tags = RunTags.describe(point.tags)
            let ci = point.lower.map { l in " [\(num(l)), \(num(point.upper!))]" } ?? " (no CI)"
            s +=
                "<circle class=\"point\(latest ? " latest \(esc(latestVerdict))" : "")\" data-run=\"\(esc(point.runID))\" cx=\"\(coordinate(x(i)))\" "
                + "cy=\"\(coordinate(y(point.value)))\" r=\"\(latest ? 4.5 : 3)\"><title>\(esc(point.runID)) \(esc(date(point.startedAt))): "
                + "\(num(point.value))\(ci) n=\(point.n)\(tags.isEmpty ? "" : "\n" + esc(tags))</title></circle>\n"
        }
        // X labels: the runs' dates, first and last always, others where there is room.
        let labelWidth = 92.0
        func anchor(_ i: Int) -> String { n == 1 ? "middle" : i == 0 ? "start" : i == n - 1 ? "end" : "middle" }
        func extent(_ i: Int) -> (Double, Double) {
            switch anchor(i) {
            case "start": return (x(i), x(i) + labelWidth)
            case "end": return (x(i) - labelWidth, x(i))
            default: return (x(i) - labelWidth / 2, x(i) + labelWidth / 2)
            }
        }
        var labelled: [Int] = []
        for i in p.points.indices {
            if let previous = labelled.last, extent(i).0 < extent(previous).1 + 8 { continue }
            if i != n - 1, n > 1, extent(n - 1).0 < extent(i).1 + 8 { continue }
            labelled.append(i)
        }
        for i in labelled {
            let anchor = anchor(i)
            s +=
                "<text x=\"\(coordinate(x(i)))\" y=\"\(coordinate(height - bottom + 12))\" text-anchor=\"\(anchor)\">"
                + "\(esc(date(p.points[i].startedAt)))</text>"
        }
        s += "\n<text x=\"\(coordinate(left))\" y=\"\(coordinate(height - 4))\">\(n) runs, oldest to newest</text>\n"
        s += "</svg>\n"
        return s
    }
}

/// `compare --by TAG`: which runs of each configuration form the baseline and the candidate.
public enum TagSides {
    /// One configuration of one experiment run with its value of the tag (nil: untagged).
    public struct Member: Sendable, Hashable {
        public var runID: String
        public var startedAt: Date
        public var configuration: String
        public var value: String?

        public init(runID: String, startedAt: Date, configuration: String, value: String?) {
            self.runID = runID
            self.startedAt = startedAt
            self.configuration = configuration
            self.value = value
        }
    }

    /// The two sides of one configuration, runs oldest first.
    public struct Side: Sendable, Hashable {
        public var configuration: String
        public var a: String
        public var b: String
        public var baselineRuns: [String]
        public var candidateRuns: [String]
    }

    /// Per configuration (in name order): values `a` and `b`, or when not given the two values
    /// whose latest runs are the most recent (b the newest); configurations without runs of both
    /// are left out.
    public static func pick(_ members: [Member], a: String?, b: String?) -> [Side] {
        var sides: [Side] = []
        for configuration in Set(members.map(\.configuration)).sorted() {
            let mine = members.filter { $0.configuration == configuration && $0.value != nil }
                .sorted { ($0.startedAt, $0.runID) < ($1.startedAt, $1.runID) }
            var latest: [String: Date] = [:]
            for m in mine { latest[m.value!] = m.startedAt }
            let byRecency = latest.keys.sorted { (latest[$0]!, $0) > (latest[$1]!, $1) }
            guard let vb = b ?? byRecency.first, let va = a ?? byRecency.first(where: { $0 != vb }), va != vb else { continue }
            let base = mine.filter { $0.value == va }.map(\.runID)
            let cand = mine.filter { $0.value == vb }.map(\.runID)
            guard !base.isEmpty, !cand.isEmpty else { continue }
            sides.append(Side(configuration: configuration, a: va, b: vb, baselineRuns: base, candidateRuns: cand))
        }
        return sides
    }
}
