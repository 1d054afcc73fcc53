import Foundation
import Logging
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess
import Synchronization
import TestSupport
import Testing

@testable import NestBenchAlignment
@testable import NestBenchAnalysis
@testable import NestBenchCollectors

/// A probe result with `huge` huge and `base` base regions.
func alignmentResult(pid: Int32 = 1, huge: Int, base: Int, seconds: Double = 0.001) -> ProcessAlignment {
    let regions =
        (0..<huge).map { i in
            RegionMapping(
                virtualStart: UInt64(i) << 21, kind: .huge, hugeKind: .thp, physicalStart: UInt64(i) << 21,
                presentPages: 512)
        }
        + (0..<base).map { i in
            RegionMapping(
                virtualStart: UInt64(huge + i) << 21, kind: .base, hugeKind: nil, physicalStart: nil, presentPages: 512)
        }
    return ProcessAlignment(
        pid: pid, mappings: 1, regions: regions, seconds: seconds, pagemapBytes: 4096, kpageflagsBytes: 0)
}

@Suite("Alignment timeline: shape and metrics")
struct AlignmentTimelineShapeTests {
    @Test func knownAnswer() throws {
        var t = AlignmentTimeline(layer: "host", intervalMillis: 250)
        t.record(.success(alignmentResult(huge: 0, base: 4)), at: 250, probeSeconds: 0.002)
        t.record(.failure(AlignmentUnavailable("cannot read /proc/7/maps")), at: 500, probeSeconds: 0.001)
        t.record(.success(alignmentResult(huge: 3, base: 1)), at: 750, probeSeconds: 0.004)
        t.record(.success(alignmentResult(huge: 0, base: 0)), at: 1000, probeSeconds: 0.001)
        let huge = t.samples.filter { $0.name == "align.huge.host" }
        #expect(huge.map(\.tMillis) == [250, 750])
        #expect(huge.map(\.value) == [0, 0.75])
        let cost = t.samples.filter { $0.name == AlignmentTimeline.probeMillisName }
        #expect(cost.map(\.tMillis) == [250, 500, 750, 1000])
        #expect(cost.map(\.value) == [2, 1, 4, 1])
        #expect(t.samples.filter { $0.name == "align.regions" }.map(\.value) == [4, 4, 0])
        let metrics = Dictionary(uniqueKeysWithValues: t.metrics().map { ($0.name, $0) })
        #expect(metrics["align.timeline_probes"]?.value == 4)
        let seconds = try #require(metrics["align.timeline_probe_seconds"]?.value)
        #expect(abs(seconds - 0.008) < 1e-12)
        let detail = try #require(metrics["align.timeline_probes"]?.detail)
        #expect(detail.contains("every 250 ms") && detail.contains("4 time(s) from t=250 ms to t=1000 ms"))
        #expect(detail.contains("2 point(s) of align.huge.host"))
        #expect(detail.contains("unavailable: cannot read /proc/7/maps"), "the first reason a pass had no point")
    }

    @Test func noProbeBeforeTheEndIsStatedNotInvented() {
        let t = AlignmentTimeline(layer: "L2", intervalMillis: 1000)
        #expect(t.samples.isEmpty)
        let metrics = t.metrics()
        #expect(metrics.map(\.name) == ["align.timeline_probes", "align.timeline_probe_seconds"])
        #expect(metrics.map(\.value) == [0, 0], "no probe ran: that is what was measured")
        #expect(metrics[0].detail?.contains("before the first probe") == true)
    }

    @Test func reportStatesWhenAndHowOftenTheProbeRan() {
        let runs = Synthetic.runs("q", ["a": [100, 101, 99]]).enumerated().map { i, r in
            var r = r
            func add(_ name: String, _ v: Double) {
                r.metrics.append(Metric(name: name, value: v, unit: "-", polarity: .neutral, source: "pagemap"))
            }
            add("align.regions", 32)
            if i < 2 {
                add("align.timeline_probes", Double(10 + i))
                add("align.timeline_probe_seconds", 0.25 * Double(i + 1))
            }
            return r
        }
        let notes = Report.alignmentNotes(runs, settings: AlignmentSettings(intervalMillis: 200))
        #expect(notes.count == 2)
        #expect(notes.first?.contains("once per run at the end of the measured phase") == true)
        #expect(notes.first?.contains("3 of 3 runs probed") == true)
        let timeline = notes.last ?? ""
        #expect(timeline.contains("every 200 ms") && timeline.contains("21 times in 2 runs"), "\(timeline)")
        #expect(timeline.contains("0.750 s in all (at most 0.500 s in one run)"), "\(timeline)")
        #expect(Report.alignmentNotes(runs, settings: nil).count == 1, "off: no timeline note")
        #expect(Report.alignmentNotes([], settings: nil).isEmpty)
    }

    @Test func standardCollectorsTimelineIsOffByDefault() {
        func alignment(_ s: CollectorSettings) -> AlignmentCollector? {
            StandardCollectors.make(s).compactMap { $0 as? AlignmentCollector }.first
        }
        #expect(alignment(CollectorSettings()) != nil)
        #expect(alignment(CollectorSettings())?.intervalMillis == nil)
        #expect(alignment(CollectorSettings(alignment: AlignmentSettings(intervalMillis: 300)))?.intervalMillis == 300)
    }
}

/// The collector's timeline on real processes: a fake probe source (known answers, on a real
/// child), and the real probe watching khugepaged promote a buffer.
@Suite(.serialized)
struct AlignmentTimelineCollectorTests {
    final class Calls: Sendable {
        let count = Mutex(0)
    }

    static let isRoot = getuid() == 0
    static let thpRoot = "/sys/kernel/mm/transparent_hugepage"
    static let fakeApps: String = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<2 { dir.deleteLastPathComponent() }
        return dir.path + "/FakeApps"
    }()

    /// Compiles the promotion app once per test process.
    static let promoteApp: String? = {
        let out = NSTemporaryDirectory() + "nestbench-thp-promote-\(getpid())"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["cc", "-O2", "-o", out, fakeApps + "/thp_promote.c"]
        do { try p.run() } catch { return nil }
        p.waitUntilExit()
        return p.terminationStatus == 0 ? out : nil
    }()

    func collect(_ collector: AlignmentCollector, _ spec: ProcessSpec) async throws -> (
        [String: Metric], [TimelineSample], ProcessOutcome
    ) {
        var spec = spec
        spec.environment.merge(([collector] as [any RunCollector]).environment) { $1 }
        let child = try ProcessRunner.start(spec)
        let session = collector.attach(pid: child.pid)
        try child.release()
        session.started()
        let outcome = await child.wait()
        let (metrics, samples) = session.finish(outcome)
        return (Dictionary(metrics.map { ($0.name, $0) }) { a, _ in a }, samples, outcome)
    }

    @Test(.timeLimit(.minutes(1)))
    func fakeSourceGivesOnePointPerIntervalInOrder() async throws {
        let calls = Calls()
        let collector = AlignmentCollector(intervalMillis: 100) { pid throws(AlignmentUnavailable) in
            let n = calls.count.withLock { c in
                c += 1
                return c
            }
            return alignmentResult(pid: pid, huge: min(n, 4), base: 4 - min(n, 4))
        }
        let spec = ProcessSpec(program: "/bin/sleep", arguments: ["1"], environment: ["PATH": "/usr/bin:/bin"])
        let (metrics, samples, outcome) = try await collect(collector, spec)
        #expect(outcome.succeeded)
        let huge = samples.filter { $0.name == "align.huge.host" }
        let probes = try #require(metrics["align.timeline_probes"]?.value)
        #expect(probes == Double(calls.count.withLock { $0 }), "every pass of the source is counted")
        #expect(huge.count == Int(probes) && huge.count >= 3, "one point per pass: \(huge.count) in ~1 s at 100 ms")
        #expect(huge.count <= 11, "not more often than the interval: \(huge.count)")
        #expect(huge.map(\.value) == (1...huge.count).map { Double(min($0, 4)) / 4 }, "the source's answers in order")
        // Times are whole milliseconds (truncated) and the wait's clock is dispatch's: spaced by the
        // interval to within that millisecond (CI once saw 302 → 401).
        let times = huge.map(\.tMillis)
        #expect(zip(times, times.dropFirst()).allSatisfy { $1 - $0 >= 99 }, "spaced by the interval: \(times)")
        #expect(times.first.map { $0 >= 99 } == true)
        let cost = samples.filter { $0.name == AlignmentTimeline.probeMillisName }
        #expect(cost.count == huge.count && cost.map(\.tMillis) == times)
        let total = try #require(metrics["align.timeline_probe_seconds"]?.value)
        #expect(abs(total - cost.map(\.value).reduce(0, +) / 1000) < 1e-9)
        // /bin/sleep never stops at the end of a phase: the end-of-phase metrics say so.
        #expect(metrics["align.huge.host"]?.value == nil)
        let reason = metrics["align.huge.host"]?.unavailable ?? ""
        #expect(reason.contains("without stopping") || reason.contains("ended before"), "\(reason)")
    }

    @Test(.timeLimit(.minutes(1)))
    func unavailableProbesGiveNoPointsAndSayWhy() async throws {
        let collector = AlignmentCollector(intervalMillis: 100) { pid throws(AlignmentUnavailable) in
            throw AlignmentUnavailable("/proc/\(pid)/pagemap shows no page frame numbers (not root)")
        }
        let spec = ProcessSpec(program: "/bin/sleep", arguments: ["0.5"], environment: ["PATH": "/usr/bin:/bin"])
        let (metrics, samples, _) = try await collect(collector, spec)
        #expect(samples.allSatisfy { $0.name == AlignmentTimeline.probeMillisName }, "no fraction is invented")
        let probes = try #require(metrics["align.timeline_probes"])
        #expect(probes.value == Double(samples.count) && samples.count >= 2)
        #expect(probes.detail?.contains("0 point(s) of align.huge.host") == true, "\(probes.detail ?? "")")
        #expect(probes.detail?.contains("unavailable: /proc/") == true && probes.detail?.contains("not root") == true)
    }

    @Test(.timeLimit(.minutes(1)))
    func offRecordsNoTimeline() async throws {
        let calls = Calls()
        let collector = AlignmentCollector(intervalMillis: nil) { pid throws(AlignmentUnavailable) in
            calls.count.withLock { $0 += 1 }
            return alignmentResult(pid: pid, huge: 1, base: 0)
        }
        let spec = ProcessSpec(program: "/bin/sleep", arguments: ["0.5"], environment: ["PATH": "/usr/bin:/bin"])
        let (metrics, samples, _) = try await collect(collector, spec)
        #expect(samples.isEmpty && calls.count.withLock { $0 } == 0)
        #expect(metrics["align.timeline_probes"] == nil && metrics["align.timeline_probe_seconds"] == nil)
    }

    /// khugepaged promoting a buffer the app faulted in base pages and then advised huge: the
    /// timeline's points before the advice are base, and what it saw afterwards agrees with the
    /// kernel's own AnonHugePages of the process. THP and khugepaged knobs are set through a
    /// configuration's host layer (LocalPlatform, journaled) and restored.
    @Test(
        .enabled(if: isRoot && FileManager.default.fileExists(atPath: thpRoot + "/khugepaged/scan_sleep_millisecs")),
        .timeLimit(.minutes(10)))  // the machine-state lock may first wait for a VM test
    func khugepagedPromotionIsVisibleOverTime() async throws {
        try await MachineStateLock.withLock { try await promotionIsVisibleOverTime() }
    }

    func promotionIsVisibleOverTime() async throws {
        let app = try #require(Self.promoteApp, "cc builds Tests/FakeApps/thp_promote.c")
        let dir = Fixtures.temporaryDirectory()
        let platform = LocalPlatform(journal: KnobJournal(path: dir + "/journal.json"), logger: Logger(label: "test"))
        let fast = Configuration(
            name: "khugepaged-fast",
            host: LayerSettings(
                thp: THPSettings(enabled: "madvise"),
                khugepaged: KhugepagedSettings(settings: [
                    "scan_sleep_millisecs": 10, "alloc_sleep_millisecs": 10, "pages_to_scan": 8192, "defrag": 1,
                ])))
        try platform.activate(fast)
        defer { try? platform.restoreAll() }
        let regions = 16
        let spec = ProcessSpec(
            program: app, arguments: [String(regions * 2), "1", "4"], environment: ["PATH": "/usr/bin:/bin"],
            stdoutPath: dir + "/out", stderrPath: dir + "/err", timeoutSeconds: 60)
        let (metrics, samples, outcome) = try await collect(AlignmentCollector(intervalMillis: 200), spec)
        #expect(outcome.succeeded, "\((try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")")
        let probes = try #require(metrics["align.timeline_probes"]?.value)
        #expect(probes >= 10, "~5 s at 200 ms: \(probes)")
        let end = try #require(metrics["align.huge.host"])
        let huge = samples.filter { $0.name == "align.huge.host" }.sorted { $0.tMillis < $1.tMillis }
        guard let fraction = end.value else {
            // The probe cannot read page frames here: the timeline says why, and has no point.
            #expect(end.unavailable?.hasPrefix("unavailable:") == true)
            #expect(huge.isEmpty)
            #expect(metrics["align.timeline_probes"]?.detail?.contains("unavailable:") == true)
            return
        }
        #expect(end.detail?.contains("probed every 200 ms while the workload ran") == true, "\(end.detail ?? "")")
        // Faulted under MADV_NOHUGEPAGE and advised huge only after 1 s: base by construction before.
        let before = huge.filter { $0.tMillis < 800 }
        #expect(before.count >= 2)
        #expect(before.allSatisfy { $0.value <= 0.05 }, "\(before)")
        // The kernel's count of the process's PMD-mapped THP bytes, read after the end-of-phase probe.
        let stdout = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
        let anonHuge = try #require(
            stdout.split(separator: "\n").compactMap { line -> Double? in
                let f = line.split(separator: " ")
                return f.count == 3 && f[1] == "anon_huge_bytes" ? Double(f[2]) : nil
            }.first, "the app printed its AnonHugePages: \(stdout)")
        let hugeRegions = try #require(metrics["align.regions"]?.value) * fraction
        #expect(abs(hugeRegions - anonHuge / Double(2 << 20)) <= 1, "probe \(hugeRegions) vs AnonHugePages \(anonHuge)")
        let last = try #require(huge.last)
        if anonHuge >= Double(2 << 20) {
            // khugepaged promoted the buffer: the timeline shows the fraction rising after the advice.
            #expect(last.value > 0.05 && last.value > before.map(\.value).max()!, "\(huge.map(\.value))")
            let rise = try #require(huge.first { $0.value > 0.05 })
            #expect(rise.tMillis >= 800, "the rise follows the MADV_HUGEPAGE advice at ~1 s: \(rise)")
        } else {
            // khugepaged promoted nothing (e.g. no free 2 MiB blocks): neither did the timeline see any.
            #expect(huge.allSatisfy { $0.value <= 0.05 }, "\(huge.map(\.value))")
        }
    }
}
