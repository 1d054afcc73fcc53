import Foundation
import NestBenchAlignment
import NestBenchCollectors
import NestBenchModel

/// The stack probe's timeline in a guest (`collectors.alignment.interval`): once the agent says
/// the workload's pid (its start file), every layer is probed every interval while the workload
/// runs — each fraction (`align.well_aligned`, `align.huge.<layer>`, `align.backed.<layer>`) a point
/// at the probe's time since the workload was seen running, and the probe's own time as
/// `align.timeline.probe_ms`. The next probe starts an interval after the last one ended.
struct StackAlignmentTimeline {
    let intervalMillis: Int
    private(set) var samples: [TimelineSample] = []
    private var pid: Int32?
    private var started: ContinuousClock.Instant?
    private var next: ContinuousClock.Instant?
    private var probes = 0
    private var probeSeconds = 0.0
    private var firstMillis: Int64?
    private var lastMillis: Int64?
    /// The first reason a probe gave no value for a fraction.
    private var unavailableReason: String?

    init(intervalMillis: Int) { self.intervalMillis = intervalMillis }

    static func isPoint(_ name: String) -> Bool {
        name == "align.well_aligned" || name.hasPrefix("align.huge.") || name.hasPrefix("align.backed.")
    }

    /// "started PID" from the agent's start file; nil while it is not there.
    static func startedPID(_ text: String) -> Int32? {
        let f = text.split(separator: " ")
        guard f.count == 2, f[0] == "started" else { return nil }
        return Int32(f[1].trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Called from the run's polling loop: learns the pid, or probes when an interval has passed.
    mutating func step(startFile: String, probe: (Int32) async -> [Metric]) async {
        let now = ContinuousClock.now
        guard let pid, let started, let next else {
            if let text = try? String(contentsOfFile: startFile, encoding: .utf8), let p = Self.startedPID(text) {
                pid = p
                started = now
                next = now + .milliseconds(intervalMillis)
            }
            return
        }
        guard now >= next else { return }
        let metrics = await probe(pid)
        let done = ContinuousClock.now
        let took = (done - now).seconds
        let t = Int64(((now - started).seconds * 1000).rounded())
        probes += 1
        probeSeconds += took
        if firstMillis == nil { firstMillis = t }
        lastMillis = t
        samples.append(TimelineSample(tMillis: t, name: AlignmentTimeline.probeMillisName, value: took * 1000))
        for m in metrics where Self.isPoint(m.name) {
            if let v = m.value {
                samples.append(TimelineSample(tMillis: t, name: m.name, value: v))
            } else if unavailableReason == nil {
                unavailableReason = "\(m.name) at t=\(t) ms: \(m.unavailable ?? "no value")"
            }
        }
        self.next = done + .milliseconds(intervalMillis)
    }

    /// `align.timeline_probes` and `align.timeline_probe_seconds`, saying when and how often.
    func metrics(layer: String) -> [Metric] {
        var when = "the alignment timeline in \(layer): every layer probed every \(intervalMillis) ms while the workload ran"
        if let firstMillis, let lastMillis {
            when += ", \(probes) time(s) from t=\(firstMillis) ms to t=\(lastMillis) ms (since the workload was seen running)"
        } else if pid == nil {
            when += "; the agent never said the workload's pid (no probe)"
        } else {
            when += "; the workload stopped or ended before the first probe"
        }
        if let unavailableReason { when += "; a fraction without a value: \(unavailableReason)" }
        return [
            Metric(
                name: "align.timeline_probes", value: Double(probes), unit: "probes", polarity: .neutral,
                source: AlignmentMetrics.source, detail: when),
            Metric(
                name: "align.timeline_probe_seconds", value: probeSeconds, unit: "s", polarity: .neutral,
                source: AlignmentMetrics.source,
                detail:
                    "total wall time of the timeline's probe passes (each reads the workload's page tables in \(layer) and every layer's below, holding their memory-map locks while it reads); "
                    + when),
        ]
    }
}
