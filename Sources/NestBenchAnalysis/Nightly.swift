import Foundation
import NestBenchModel
import NestBenchStats

/// What a history series is kept per.
public struct SeriesKey: Codable, Sendable, Hashable, Comparable {
    public var workload: String
    public var configuration: String
    public var condition: String
    public var metric: String

    public init(workload: String, configuration: String, condition: String, metric: String) {
        self.workload = workload
        self.configuration = configuration
        self.condition = condition
        self.metric = metric
    }

    public static func < (a: SeriesKey, b: SeriesKey) -> Bool {
        (a.workload, a.condition, a.configuration, a.metric) < (b.workload, b.condition, b.configuration, b.metric)
    }
}

/// One experiment run's value of a series: the metric's center statistic over its repetitions.
public struct HistoryPoint: Codable, Sendable, Hashable {
    public var runID: String
    public var startedAt: Date
    public var tags: [String: String]
    public var value: Double
    public var n: Int

    enum CodingKeys: String, CodingKey {
        case runID = "run_id"
        case startedAt = "started_at"
        case tags, value, n
    }
}

/// A series over time.
public struct HistorySeries: Codable, Sendable {
    public var key: SeriesKey
    public var unit: String
    public var polarity: Polarity
    /// How each point summarizes its run's repetitions: amean, hmean or median.
    public var center: String
    public var points: [HistoryPoint]
}

/// A change point found in a series, with the run it starts at.
public struct HistoryChangePoint: Codable, Sendable, Hashable {
    public var runID: String
    public var startedAt: Date
    public var tags: [String: String]
    public var forwardChange: Double
    public var pValue: Double

    enum CodingKeys: String, CodingKey {
        case runID = "run_id"
        case startedAt = "started_at"
        case tags
        case forwardChange = "forward_change"
        case pValue = "p_value"
    }
}

/// The check of one series' newest value.
public struct NightlyCheck: Codable, Sendable {
    public var key: SeriesKey
    public var unit: String
    public var polarity: Polarity
    public var value: Double
    /// The last stable segment (after the last change point before the new run).
    public var segmentMean: Double?
    public var segmentSD: Double?
    public var segmentN: Int
    public var segmentStart: String?
    /// value / segmentMean − 1.
    public var change: Double?
    public var threshold: Double?
    /// Half-width of the prediction interval of one new value from the segment, at the gate's p.
    public var bound: Double?
    /// `regression`, `improvement`, `same`, `insufficient-history`, or `reported` (not judged).
    public var verdict: String
    public var changePoints: [HistoryChangePoint]

    enum CodingKeys: String, CodingKey {
        case key, unit, polarity, value
        case segmentMean = "segment_mean"
        case segmentSD = "segment_sd"
        case segmentN = "segment_n"
        case segmentStart = "segment_start"
        case change, threshold, bound, verdict
        case changePoints = "change_points"
    }
}

/// Settings of `nestbench nightly`.
public struct NightlySettings: Sendable {
    public var detector: ChangePointDetector
    public var thresholds: ThresholdSet
    /// Two-sided p of the gate's prediction interval (default: the detector's).
    public var gatePValue: Double
    /// Fewest points of the last stable segment for the gate to judge.
    public var minSegment: Int

    public init(
        detector: ChangePointDetector = ChangePointDetector(), thresholds: ThresholdSet = ThresholdSet(),
        gatePValue: Double? = nil, minSegment: Int = 3
    ) {
        self.detector = detector
        self.thresholds = thresholds
        self.gatePValue = gatePValue ?? detector.maxPValue
        self.minSegment = max(2, minSegment)
    }
}

/// Nightly history: series per (workload, configuration, condition, metric) and the check of a
/// new run against them.
public enum Nightly {
    /// Groups stored rows into series, one point per experiment run (ordered by start time).
    ///
    /// Each series is summarized per run by the center its metric's declaration gives in
    /// `experiment`, with the declared polarity and unit (undeclared: the arithmetic mean and the
    /// stored metric's own polarity and unit).
    public static func series(_ rows: [HistoryRow], experiment: Experiment? = nil) -> [HistorySeries] {
        struct Acc {
            var unit: String
            var polarity: Polarity
            var runs: [String: (startedAt: Date, tags: [String: String], values: [Double])]
        }
        var acc: [SeriesKey: Acc] = [:]
        for r in rows {
            let key = SeriesKey(
                workload: r.cell.workload, configuration: r.cell.configuration, condition: r.cell.condition, metric: r.metric)
            if acc[key] == nil { acc[key] = Acc(unit: r.unit, polarity: r.polarity, runs: [:]) }
            if acc[key]!.runs[r.experimentRunID] == nil {
                acc[key]!.runs[r.experimentRunID] = (r.startedAt, r.tags, [])
            }
            acc[key]!.runs[r.experimentRunID]!.values.append(r.value)
        }
        return acc.keys.sorted().map { key in
            let a = acc[key]!
            let declaration = experiment?.declaration(of: key.metric, workload: key.workload)
            var center = CenterStatistic(declaration?.center ?? .amean)
            let all = a.runs.values.flatMap(\.values)
            if center == .harmonicMean && !all.allSatisfy({ $0 > 0 }) { center = .mean }
            let points = a.runs.map { id, run in
                HistoryPoint(
                    runID: id, startedAt: run.startedAt, tags: run.tags, value: center.of(run.values), n: run.values.count)
            }.sorted { ($0.startedAt, $0.runID) < ($1.startedAt, $1.runID) }
            return HistorySeries(
                key: key, unit: declaration?.unit ?? a.unit, polarity: declaration?.polarity ?? a.polarity,
                center: center == .mean ? "amean" : center.rawValue, points: points)
        }
    }

    /// Checks the point of `runID` in every series against the points before it.
    public static func check(_ series: [HistorySeries], runID: String, primary: Set<String>, settings: NightlySettings)
        -> [NightlyCheck]
    {
        var checks: [NightlyCheck] = []
        for s in series {
            guard let at = s.points.firstIndex(where: { $0.runID == runID }) else { continue }
            let upto = Array(s.points[...at])
            let history = Array(upto.dropLast())
            let new = upto[at]
            let found = settings.detector.detect(upto.map(\.value)).map { p in
                HistoryChangePoint(
                    runID: upto[p.index].runID, startedAt: upto[p.index].startedAt, tags: upto[p.index].tags,
                    forwardChange: p.forwardChange, pValue: p.pValue)
            }
            let before = settings.detector.detect(history.map(\.value))
            let start = before.last?.index ?? 0
            let segment = Array(history[start...].map(\.value))
            let threshold = settings.thresholds.threshold(for: s.key.metric, primary: primary)
            let polarity = threshold?.polarity ?? s.polarity
            var check = NightlyCheck(
                key: s.key, unit: s.unit, polarity: polarity, value: new.value, segmentMean: nil, segmentSD: nil,
                segmentN: segment.count, segmentStart: history.isEmpty ? nil : history[start].runID, change: nil,
                threshold: threshold?.relative, bound: nil, verdict: "same", changePoints: found)
            guard segment.count >= settings.minSegment else {
                check.verdict = "insufficient-history"
                checks.append(check)
                continue
            }
            let mean = Statistics.mean(segment)
            let sd = Statistics.standardDeviation(segment)
            let n = Double(segment.count)
            let t = Distributions.studentTQuantile(1 - settings.gatePValue / 2, df: n - 1)
            let bound = t * sd * (1 + 1 / n).squareRoot()
            check.segmentMean = mean
            check.segmentSD = sd
            check.bound = bound
            check.change = mean != 0 ? new.value / mean - 1 : nil
            guard let threshold, polarity != .neutral else {
                check.verdict = "reported"
                checks.append(check)
                continue
            }
            let outside = abs(new.value - mean) > bound
            let large = (check.change.map { abs($0) } ?? .infinity) >= threshold.relative
            if outside && large {
                let up = new.value > mean
                check.verdict = (up == (polarity == .higherIsBetter)) ? "improvement" : "regression"
            }
            checks.append(check)
        }
        return checks
    }

    /// JUnit XML: one testcase per cell (workload/condition/configuration); a failure lists the
    /// metrics that regressed; a cell whose every judged metric lacks history is skipped.
    public static func junit(_ checks: [NightlyCheck], experiment: String, runID: String, timestamp: Date = Date()) -> String {
        func esc(_ s: String) -> String { HTMLReport.esc(s) }
        var cells: [String: [NightlyCheck]] = [:]
        for c in checks { cells["\(c.key.workload)/\(c.key.condition)/\(c.key.configuration)", default: []].append(c) }
        let names = cells.keys.sorted()
        var failures = 0
        var skipped = 0
        var body = ""
        for name in names {
            let list = cells[name]!
            let judged = list.filter { $0.verdict != "reported" }
            let regressions = list.filter { $0.verdict == "regression" }
            body += "    <testcase classname=\"\(esc(experiment))\" name=\"\(esc(name))\">\n"
            if !regressions.isEmpty {
                failures += 1
                let message = regressions.map { "\($0.key.metric) \(percent($0.change))" }.joined(separator: ", ")
                body += "      <failure message=\"regression: \(esc(message))\" type=\"regression\">"
                body += esc(regressions.map(line).joined(separator: "\n")) + "</failure>\n"
            } else if !judged.isEmpty && judged.allSatisfy({ $0.verdict == "insufficient-history" }) {
                skipped += 1
                body += "      <skipped message=\"insufficient history for the gate\"/>\n"
            }
            body += "      <system-out>\(esc(list.map(line).joined(separator: "\n")))</system-out>\n"
            body += "    </testcase>\n"
        }
        let stamp = ISO8601DateFormatter().string(from: timestamp)
        return """
            <?xml version="1.0" encoding="UTF-8"?>
            <testsuites name="nestbench nightly" tests="\(names.count)" failures="\(failures)" skipped="\(skipped)">
              <testsuite name="\(esc(experiment)) \(esc(runID))" tests="\(names.count)" failures="\(failures)" skipped="\(skipped)" timestamp="\(stamp)">

            """ + body + "  </testsuite>\n</testsuites>\n"
    }

    static func percent(_ x: Double?) -> String { x.map { String(format: "%+.2f%%", $0 * 100) } ?? "n/a" }

    /// One human-readable line per check.
    public static func line(_ c: NightlyCheck) -> String {
        var s = "\(c.key.metric): \(c.verdict); value \(String(format: "%.6g", c.value)) \(c.unit)"
        if let m = c.segmentMean {
            s +=
                " vs last stable segment \(String(format: "%.6g", m)) ± \(String(format: "%.3g", c.segmentSD ?? 0)) "
                + "(n \(c.segmentN), since \(c.segmentStart ?? "?")): \(percent(c.change))"
            if let t = c.threshold { s += ", threshold \(String(format: "%.3g", t * 100))%" }
        } else {
            s += " (last stable segment has \(c.segmentN) points)"
        }
        for p in c.changePoints {
            let tags = p.tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
            s += "; change point at \(p.runID)\(tags.isEmpty ? "" : " (\(tags))") \(percent(p.forwardChange))"
        }
        return s
    }
}
