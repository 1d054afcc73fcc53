import NestBenchModel
import NestBenchPlatforms
import NestBenchStats

/// The metrics of a `save_restore:` condition: what the save and the restore took, and the
/// workload's time-to-responsiveness (TTR) on this machine's clock.
///
/// The workload reports its progress per interval on the guest's clock, which stands still while
/// the VM is stopped, saved and restored. Its timeline is put on this machine's clock by
/// inserting the outage — from the stop until the restored guest ran again, measured here — at
/// the guest's time when its agent heard the doorbell (just after the guest ran again: the guest
/// clock had not moved meanwhile). The interval that contains that moment is split there in
/// proportion to its length (its work assumed even over its few seconds); the outage is an
/// interval without work. TTR is then `Responsiveness.timeToResponsiveness` from the restore's
/// start, so it is never shorter than the restore itself.
public enum SaveRestoreMetrics {
    /// The workload's intervals on this machine's clock (seconds since its progress began), with
    /// the times of the stop (the disruption), the restore's start and the guest running again.
    public struct HostTimeline: Sendable, Hashable {
        public var intervals: [Responsiveness.Interval]
        public var stopped: Double
        public var restoreStart: Double
        public var resumed: Double
    }

    /// nil when the save happened outside the timeline (before its first interval began or after
    /// its last ended): there is nothing to compare.
    public static func hostTimeline(
        _ intervals: [Responsiveness.Interval], progressStart: Double, times: SaveRestoreTimes
    ) -> HostTimeline? {
        let frozen = times.guestResumed - progressStart
        let outage = times.restoreStart + times.restoreSeconds
        let sorted = intervals.filter { $0.seconds > 0 }.sorted { $0.end < $1.end }
        guard let last = sorted.last, frozen > 0, frozen < last.end else { return nil }
        var out: [Responsiveness.Interval] = []
        for i in sorted {
            if i.end <= frozen {
                out.append(i)
            } else if i.start >= frozen {
                out.append(Responsiveness.Interval(end: i.end + outage, seconds: i.seconds, operations: i.operations))
            } else {
                let before = frozen - i.start
                let share = before / i.seconds
                out.append(Responsiveness.Interval(end: frozen, seconds: before, operations: i.operations * share))
                out.append(
                    Responsiveness.Interval(
                        end: i.end + outage, seconds: i.seconds - before, operations: i.operations * (1 - share)))
            }
        }
        out.append(Responsiveness.Interval(end: frozen + outage, seconds: outage, operations: 0))
        return HostTimeline(
            intervals: out.sorted { $0.end < $1.end }, stopped: frozen, restoreStart: frozen + times.restoreStart,
            resumed: frozen + outage)
    }

    /// `save_seconds`, `restore_seconds`, `restore.image_bytes`, `ttr_seconds`, `degraded_ops`,
    /// `restore.baseline_ops_per_sec`; TTR and the lost work unavailable (with the reason) when
    /// the timeline cannot give them.
    public static func metrics(
        times: SaveRestoreTimes, intervals: [Responsiveness.Interval], progressStart: Double?, tolerance: Double,
        layer: String
    ) -> [Metric] {
        let source = "save_restore"
        let lazy = times.postcopySeconds != nil
        let notSaved =
            "unavailable: a lazy restore saves nothing (\(layer) moved to a new QEMU by postcopy migration from the live one)"
        var metrics = [
            times.saveSeconds.map {
                Metric(
                    name: "save_seconds", value: $0, unit: "s", polarity: .lowerIsBetter, source: source,
                    detail: "\(layer): from the VM's stop until its image was written and its QEMU gone")
            } ?? .unavailable("save_seconds", unit: "s", polarity: .lowerIsBetter, source: source, reason: notSaved),
            Metric(
                name: "restore_seconds", value: times.restoreSeconds, unit: "s", polarity: .lowerIsBetter, source: source,
                detail: lazy
                    ? "\(layer): from the VM's stop until it ran again in the new QEMU (device state moved, pages to follow: lazy)"
                    : "\(layer): from the restore's start (a new QEMU) until the guest ran again (image loaded, eager)"),
            times.imageBytes.map {
                Metric(
                    name: "restore.image_bytes", value: Double($0), unit: "bytes", polarity: .neutral, source: source,
                    detail: "\(layer): the saved image")
            } ?? .unavailable("restore.image_bytes", unit: "bytes", polarity: .neutral, source: source, reason: notSaved),
        ]
        if let postcopy = times.postcopySeconds {
            metrics.append(
                Metric(
                    name: "restore.postcopy_seconds", value: postcopy, unit: "s", polarity: .lowerIsBetter, source: source,
                    detail: "\(layer): from the VM's stop until every page had come over to the new QEMU (postcopy completed)"))
            metrics.append(
                times.transferredBytes.map {
                    Metric(
                        name: "restore.transferred_bytes", value: Double($0), unit: "bytes", polarity: .neutral, source: source,
                        detail: "\(layer): memory the migration sent (QEMU's ram.transferred)")
                }
                    ?? .unavailable(
                        "restore.transferred_bytes", unit: "bytes", polarity: .neutral, source: source,
                        reason: "unavailable: QEMU's query-migrate reported no ram.transferred"))
        }
        func unavailable(_ reason: String) -> [Metric] {
            [
                Metric.unavailable("ttr_seconds", unit: "s", polarity: .lowerIsBetter, source: source, reason: reason),
                Metric.unavailable("degraded_ops", unit: "ops", polarity: .lowerIsBetter, source: source, reason: reason),
            ]
        }
        guard let progressStart else {
            return metrics + unavailable("unavailable: the workload printed no progress_clock_start (no progress timeline)")
        }
        guard let timeline = hostTimeline(intervals, progressStart: progressStart, times: times) else {
            return metrics
                + unavailable(
                    "unavailable: the save fell outside the workload's progress timeline (it ended before the save, or had not begun)"
                )
        }
        switch Responsiveness.timeToResponsiveness(
            timeline.intervals, disruption: timeline.stopped, from: timeline.restoreStart, tolerance: tolerance)
        {
        case .success(let r):
            // The guest answers nothing before it runs again: TTR includes the whole restore. The
            // timeline's times are sums and differences of measured seconds, so the interval after
            // the outage can start a few ulps before `resumed`; the restore time itself bounds it.
            let ttr = max(r.ttrSeconds, times.restoreSeconds)
            metrics += [
                Metric(
                    name: "ttr_seconds", value: ttr, unit: "s", polarity: .lowerIsBetter, source: source,
                    detail:
                        "\(layer): from the restore's start until the progress rate stayed within \(Int((tolerance * 100).rounded()))% of its rate before the save"
                ),
                Metric(
                    name: "degraded_ops", value: r.degradedOperations, unit: "ops", polarity: .lowerIsBetter, source: source,
                    detail: "operations not done during the TTR relative to the rate before the save"),
                Metric(
                    name: "restore.baseline_ops_per_sec", value: r.baselineRate, unit: "ops/s", polarity: .neutral,
                    source: source, detail: "the progress rate before the save"),
            ]
        case .failure(let failure):
            metrics += unavailable("unavailable: \(failure)")
        }
        return metrics
    }
}
