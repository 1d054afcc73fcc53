import Foundation
import NestBenchModel

/// One run's stored timeline of one sample name (seconds since its workload started → value).
public struct ReportTimeline: Sendable, Hashable {
    public struct Point: Sendable, Hashable {
        public var seconds: Double
        public var value: Double
        public init(seconds: Double, value: Double) {
            self.seconds = seconds
            self.value = value
        }
    }
    public var name: String
    public var sequence: Int
    public var configuration: String
    public var condition: String
    public var repetition: Int
    public var points: [Point]

    public init(name: String, sequence: Int, configuration: String, condition: String, repetition: Int, points: [Point]) {
        self.name = name
        self.sequence = sequence
        self.configuration = configuration
        self.condition = condition
        self.repetition = repetition
        self.points = points
    }
}

/// The HTML report's timelines: one line chart per sample name (the alignment timeline's
/// `align.huge.<layer>`, the micro's `progress.ops_per_sec`, a save/restore's progress on this
/// machine's clock, or what `--timeline` names), one line per run, coloured by configuration and
/// condition. Values are drawn as stored: nothing is smoothed or filled in.
public enum TimelineFigure {
    /// What is drawn unless the user names other timelines.
    public static let defaultSelectors = ["align.huge.", "progress.ops_per_sec", "restore.host_progress.ops_per_sec"]
    /// Lines per figure and figures per report (the rest is named in a note).
    static let maxSeries = 24
    static let maxFigures = 16

    /// Whether a stored sample name is selected: a selector ending in `.` is a prefix, any other an
    /// exact name; both also match under a colocated member's label (`<label>.<name>`).
    public static func matches(_ name: String, _ selector: String) -> Bool {
        if selector.hasSuffix(".") { return name.hasPrefix(selector) || name.contains("." + selector) }
        return name == selector || name.hasSuffix("." + selector)
    }

    /// The selected timelines of `runs` (each with its samples), in run order.
    public static func timelines(
        _ runs: [(record: RunRecord, samples: [(tMillis: Int64, name: String, value: Double)])], selectors: [String]
    ) -> [ReportTimeline] {
        var out: [ReportTimeline] = []
        for run in runs.sorted(by: { $0.record.planned.sequence < $1.record.planned.sequence }) {
            var byName: [String: [ReportTimeline.Point]] = [:]
            var order: [String] = []
            for s in run.samples where s.value.isFinite && selectors.contains(where: { matches(s.name, $0) }) {
                if byName[s.name] == nil { order.append(s.name) }
                byName[s.name, default: []].append(.init(seconds: Double(s.tMillis) / 1000, value: s.value))
            }
            let p = run.record.planned
            for name in order {
                out.append(
                    ReportTimeline(
                        name: name, sequence: p.sequence, configuration: p.configuration, condition: p.condition,
                        repetition: p.repetition, points: byName[name]!.sorted { $0.seconds < $1.seconds }))
            }
        }
        return out
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    /// The `<section>` of the timelines; empty when there are none (`selectors` named in the note).
    public static func section(_ timelines: [ReportTimeline], selectors: [String]) -> String {
        guard !timelines.isEmpty else { return "" }
        let esc = HTMLReport.esc
        var h = "<section class=\"figure-section\" id=\"timelines\">\n<h2>Timelines</h2>\n"
        h +=
            "<p>Each line is one run's stored samples (x: seconds since its workload started; y: the value as "
            + "measured, points joined by straight lines). Selected: "
            + selectors.map { "<code>\(esc($0))</code>" }.joined(separator: ", ") + ".</p>\n"
        var names: [String] = []
        for t in timelines where !names.contains(t.name) { names.append(t.name) }
        for name in names.prefix(maxFigures) {
            h += figure(name: name, series: timelines.filter { $0.name == name })
        }
        if names.count > maxFigures {
            h +=
                "<p class=\"absent\">Not drawn: \(names.count - maxFigures) more timeline(s) ("
                + names.dropFirst(maxFigures).prefix(8).map { "<code>\(esc($0))</code>" }.joined(separator: ", ")
                + (names.count - maxFigures > 8 ? ", …" : "") + "); name them with --timeline.</p>\n"
        }
        return h + "</section>\n"
    }

    static func figure(name: String, series all: [ReportTimeline]) -> String {
        let esc = HTMLReport.esc
        let series = Array(all.prefix(maxSeries))
        var cells: [String] = []
        for s in series where !cells.contains("\(s.configuration) · \(s.condition)") {
            cells.append("\(s.configuration) · \(s.condition)")
        }
        func color(_ s: ReportTimeline) -> String {
            palette[(cells.firstIndex(of: "\(s.configuration) · \(s.condition)") ?? 0) % palette.count]
        }
        let points = series.flatMap(\.points)
        let xMax = max(points.map(\.seconds).max() ?? 1, 1e-9)
        let lo = min(0, points.map(\.value).min() ?? 0)
        let hi = max(points.map(\.value).max() ?? 1, lo + 1e-9)
        let (width, height, left, right, top, bottom) = (760.0, 260.0, 70.0, 190.0, 16.0, 36.0)
        let plotW = width - left - right
        let plotH = height - top - bottom
        func x(_ v: Double) -> Double { left + plotW * v / xMax }
        func y(_ v: Double) -> Double { top + plotH * (1 - (v - lo) / (hi - lo)) }
        var s =
            "<figure><svg class=\"figure timeline\" data-timeline=\"\(esc(name))\" xmlns=\"http://www.w3.org/2000/svg\" "
            + "width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\">\n"
        for (value, anchor) in [(lo, "end"), (hi, "end")] {
            s +=
                "<line x1=\"\(left)\" x2=\"\(left + plotW)\" y1=\"\(y(value))\" y2=\"\(y(value))\" stroke=\"#eee\"/>"
                + "<text class=\"tick\" x=\"\(left - 6)\" y=\"\(y(value) + 4)\" font-size=\"11\" text-anchor=\"\(anchor)\">"
                + "\(esc(tick(value)))</text>\n"
        }
        s += "<line x1=\"\(left)\" x2=\"\(left)\" y1=\"\(top)\" y2=\"\(top + plotH)\" stroke=\"#333\"/>\n"
        s += "<line x1=\"\(left)\" x2=\"\(left + plotW)\" y1=\"\(top + plotH)\" y2=\"\(top + plotH)\" stroke=\"#333\"/>\n"
        s +=
            "<text class=\"tick\" x=\"\(left)\" y=\"\(top + plotH + 16)\" font-size=\"11\">0 s</text>"
            + "<text class=\"tick\" x=\"\(left + plotW)\" y=\"\(top + plotH + 16)\" font-size=\"11\" text-anchor=\"end\">"
            + "\(esc(tick(xMax))) s</text>\n"
        for t in series {
            let coordinates = t.points.map { String(format: "%.1f,%.1f", x($0.seconds), y($0.value)) }
            let title = "<title>\(esc(t.configuration)) · \(esc(t.condition)) · rep \(t.repetition) (run #\(t.sequence))</title>"
            if coordinates.count == 1 {
                s +=
                    "<circle class=\"series\" data-run=\"\(t.sequence)\" cx=\"\(x(t.points[0].seconds))\" "
                    + "cy=\"\(y(t.points[0].value))\" r=\"2.5\" fill=\"\(color(t))\">\(title)</circle>\n"
            } else {
                s +=
                    "<polyline class=\"series\" data-run=\"\(t.sequence)\" fill=\"none\" stroke=\"\(color(t))\" "
                    + "stroke-width=\"1.4\" points=\"\(coordinates.joined(separator: " "))\">\(title)</polyline>\n"
            }
        }
        for (i, cell) in cells.enumerated() {
            let ly = top + 14 + Double(i) * 16
            s +=
                "<rect x=\"\(left + plotW + 14)\" y=\"\(ly - 9)\" width=\"10\" height=\"10\" fill=\"\(palette[i % palette.count])\"/>"
                + "<text x=\"\(left + plotW + 30)\" y=\"\(ly)\" font-size=\"11\">\(esc(cell))</text>\n"
        }
        s += "</svg>\n<figcaption><code>\(esc(name))</code>: \(series.count) run(s)"
        if all.count > series.count { s += "; \(all.count - series.count) more run(s) not drawn" }
        s += ".</figcaption></figure>\n"
        return s
    }

    /// A tick label: plain for ordinary magnitudes, scientific beyond.
    static func tick(_ v: Double) -> String {
        let a = abs(v)
        return a != 0 && (a >= 1e6 || a < 1e-3) ? String(format: "%.3g", v) : String(format: "%.4g", v)
    }
}
