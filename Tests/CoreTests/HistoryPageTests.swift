import Foundation
import NestBenchCollectors
import NestBenchModel
import NestBenchStats
import Testing

@testable import NestBenchAnalysis
@testable import NestBenchOrchestrator
@testable import NestBenchStore

/// A synthetic nightly history: `base` flat, `cand` flat then 10% slower from night 6 on (the
/// kernel tag changes there), `late` flat with its newest night 12% slower.
enum StepHistory {
    static let nights = 10
    static let step = 6

    static func level(_ configuration: String, _ night: Int) -> Double {
        switch configuration {
        case "cand": return night >= step ? 90 : 100
        case "late": return night == nights - 1 ? 88 : 100
        default: return 100
        }
    }

    static func kernel(_ night: Int) -> String { night >= step ? "6.2.0" : "6.1.0" }

    /// Stores the nights; returns their ids, oldest first.
    static func store(_ store: Store) throws -> [String] {
        let e = Synthetic.experiment(name: "nightly", configurations: ["base", "cand", "late"])
        var g = SplitMix64(seed: 7)
        let t0 = Date(timeIntervalSince1970: 1_790_000_000)
        var ids: [String] = []
        for night in 0..<nights {
            let at = t0 + Double(night) * 86_400
            let id = String(Orchestrator.newRunID(at).dropLast(4)) + String(format: "%04x", night)
            var byConfiguration: [String: [Double]] = [:]
            for c in ["base", "cand", "late"] {
                byConfiguration[c] = (0..<3).map { _ in level(c, night) * (1 + Double.random(in: -0.01...0.01, using: &g)) }
            }
            let runs = Synthetic.runs(id, byConfiguration)
            // As the orchestrator tags them: a kernel for everything, a layer's kernel scoped to one configuration.
            let tags = ["kernel": kernel(night), RunTags.scoped("L1.kernel", configuration: "cand"): "guest-\(kernel(night))"]
            try store.begin(Synthetic.record(id, e, plan: runs.map(\.planned), at: at, tags: tags))
            for r in runs { try store.record(r) }
            ids.append(id)
        }
        return ids
    }

    static func panels(_ rows: [HistoryRow], groupBy: String? = nil) -> [HistoryPanel] {
        let e = Synthetic.experiment(name: "nightly", configurations: ["base", "cand", "late"])
        let primary = Dictionary(
            uniqueKeysWithValues: e.workloads.compactMap { w in HistoryPage.primaryMetric(of: w, in: e).map { (w.label, $0) } })
        return HistoryPage.panels(rows, primary: primary, settings: NightlySettings(), groupBy: groupBy)
    }
}

@Suite("History page: series, change points, verdicts")
struct HistoryPageTests {
    @Test func changePointAtTheStepAndRegressionsFirst() throws {
        let store = try Synthetic.store()
        let ids = try StepHistory.store(store)
        let panels = StepHistory.panels(try store.history(experiment: "nightly"))
        // Only the primary metric is drawn: one panel per configuration.
        #expect(panels.map(\.key.metric) == ["ops_per_sec", "ops_per_sec", "ops_per_sec"])
        #expect(panels.first?.key.configuration == "late" && panels.first?.latest?.verdict == "regression")
        let cand = try #require(panels.first { $0.key.configuration == "cand" })
        #expect(cand.points.count == StepHistory.nights)
        #expect(cand.changes.map(\.runID) == [ids[StepHistory.step]], "the change point is the first slower night")
        #expect(cand.changes.first?.index == StepHistory.step)
        #expect(abs((cand.changes.first?.forwardChange ?? 0) + 0.10) < 0.01)
        #expect(cand.changes.first?.changedTags["kernel"] == ["6.1.0", "6.2.0"])
        #expect(cand.changes.first?.changedTags["L1.kernel"] == ["guest-6.1.0", "guest-6.2.0"], "scoped tag resolved")
        #expect(cand.latest?.verdict == "same", "the newest night is at the new level")
        // nightly's own line names what changed at the change point, not every tag.
        let line = Nightly.line(try #require(cand.latest))
        #expect(
            line.contains(
                "change point at \(ids[StepHistory.step]) (L1.kernel: guest-6.1.0 → guest-6.2.0, kernel: 6.1.0 → 6.2.0)"),
            "\(line)")
        #expect(cand.segmentStartIndex == StepHistory.step)
        let base = try #require(panels.first { $0.key.configuration == "base" })
        #expect(base.changes.isEmpty && base.latest?.verdict == "same")
        #expect(base.points.allSatisfy { $0.tags["L1.kernel"] == nil }, "cand's scoped tag is not base's")
        // Each point has its run's 95% CI around its center.
        #expect(cand.points.allSatisfy { p in (p.lower ?? .infinity) < p.value && p.value < (p.upper ?? -.infinity) })

        let html = HistoryPage.render(panels, experiment: "nightly", filters: [], groupBy: nil, settings: NightlySettings())
        #expect(!html.contains("<script") && !html.contains("src=") && !html.contains("href=\"http"), "self-contained")
        #expect(html.contains("data-index=\"\(StepHistory.step)\" data-run=\"\(ids[StepHistory.step])\""))
        let firstSection = try #require(html.components(separatedBy: "<section ").dropFirst().first)
        #expect(firstSection.contains("data-verdict=\"regression\""))
        #expect(html.contains("changed there: L1.kernel: guest-6.1.0 → guest-6.2.0; kernel: 6.1.0 → 6.2.0"))
    }

    @Test func tagFiltersAndGroups() throws {
        let store = try Synthetic.store()
        _ = try StepHistory.store(store)
        let rows = try store.history(experiment: "nightly")
        let newer = rows.filter { RunTags.matches($0.tags, [("kernel", "6.2.0")]) }
        let panels = StepHistory.panels(newer)
        #expect(panels.allSatisfy { $0.points.count == StepHistory.nights - StepHistory.step })
        let grouped = StepHistory.panels(rows, groupBy: "kernel")
        #expect(grouped.count == 6)
        #expect(Set(grouped.compactMap(\.group)) == ["kernel=6.1.0", "kernel=6.2.0"])
        #expect(grouped.allSatisfy { $0.changes.isEmpty || $0.key.configuration == "late" }, "no step inside a kernel")
    }

    @Test func compareByTagPicksTheTwoNewestValues() {
        let t0 = Date(timeIntervalSince1970: 0)
        func m(_ id: String, _ day: Double, _ c: String, _ v: String?) -> TagSides.Member {
            TagSides.Member(runID: id, startedAt: t0 + day * 86_400, configuration: c, value: v)
        }
        let members = [
            m("r1", 1, "a", "5.10"), m("r2", 2, "a", "6.1"), m("r3", 3, "a", "6.1"), m("r4", 4, "a", "6.2"),
            m("r1", 1, "b", "5.10"), m("r4", 4, "b", nil),
        ]
        let sides = TagSides.pick(members, a: nil, b: nil)
        #expect(sides.count == 1, "b has one tagged value only")
        #expect(sides.first?.a == "6.1" && sides.first?.b == "6.2")
        #expect(sides.first?.baselineRuns == ["r2", "r3"] && sides.first?.candidateRuns == ["r4"])
        let chosen = TagSides.pick(members, a: "5.10", b: "6.1")
        #expect(chosen.map(\.configuration) == ["a"] && chosen.first?.baselineRuns == ["r1"])
        #expect(TagSides.pick(members, a: "6.1", b: "6.1").isEmpty)
    }
}

/// The page as headless Chromium draws it; keeps .build/test-artifacts/history-page.png (not tracked).
@Suite("History page in headless Chromium", .serialized)
struct HistoryPageChromiumTests {
    @Test(.timeLimit(.minutes(2)))
    func seriesAndChangePointAreDrawn() throws {
        let store = try Synthetic.store()
        let ids = try StepHistory.store(store)
        let panels = StepHistory.panels(try store.history(experiment: "nightly"))
        let file = Fixtures.temporaryDirectory() + "/history.html"
        let page = HistoryPage.render(panels, experiment: "nightly", filters: [], groupBy: nil, settings: NightlySettings())
        #expect(FileManager.default.createFile(atPath: file, contents: Data(page.utf8)))
        let (status, dom) = try ChromiumTests.chromium(["--dump-dom", "file://" + file])
        #expect(status == 0)
        #expect(dom.components(separatedBy: "<svg class=\"series\"").count - 1 == 3)
        #expect(dom.components(separatedBy: "<circle class=\"point").count - 1 == 3 * StepHistory.nights)
        // One change point, in cand's series, between night 5 and night 6.
        #expect(dom.components(separatedBy: "<line class=\"changepoint\"").count - 1 == 1)
        #expect(dom.contains("data-index=\"\(StepHistory.step)\" data-run=\"\(ids[StepHistory.step])\""))
        #expect(dom.contains("<rect class=\"band\""))
        let artifacts = CLIPaths.packageRoot + "/.build/test-artifacts"
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let png = artifacts + "/history-page.png"
        try? FileManager.default.removeItem(atPath: png)
        let (shot, _) = try ChromiumTests.chromium(["--screenshot=" + png, "--window-size=1200,1600", "file://" + file])
        #expect(shot == 0)
        let size = (try? FileManager.default.attributesOfItem(atPath: png)[.size] as? Int) ?? 0
        #expect(size > 10_000, "screenshot written: \(png)")
    }
}

@Suite("Run tags")
struct RunTagsTests {
    @Test func scopedTagsResolvePerConfiguration() {
        let tags = ["commit": "abc", "kernel@vanilla": "6.1", "kernel@gemini": "4.19-gemini", "L1.kernel@gemini": "4.19"]
        #expect(RunTags.resolve(tags, configuration: "vanilla") == ["commit": "abc", "kernel": "6.1"])
        #expect(
            RunTags.resolve(tags, configuration: "gemini") == ["commit": "abc", "kernel": "4.19-gemini", "L1.kernel": "4.19"])
        // Agreeing scoped tags become one; the rest stay scoped; resolution is unchanged.
        let same = ["kernel@a": "6.1", "kernel@b": "6.1", "L1.kernel@b": "6.1"]
        let compacted = RunTags.compact(same, configurations: ["a", "b"])
        #expect(compacted == ["kernel": "6.1", "L1.kernel@b": "6.1"])
        for c in ["a", "b"] { #expect(RunTags.resolve(compacted, configuration: c) == RunTags.resolve(same, configuration: c)) }
        #expect(RunTags.compact(tags, configurations: ["vanilla", "gemini"])["kernel"] == nil)
        // The user's tag wins over every configuration's automatic one.
        #expect(RunTags.yielding(tags, to: ["kernel": "mine"]) == ["commit": "abc", "L1.kernel@gemini": "4.19"])
        #expect(RunTags.parseFilters(["kernel=6.1", "a=b=c"]).filters.map(\.value) == ["6.1", "b=c"])
        #expect(RunTags.parseFilters(["kernel"]).bad == "kernel")
        #expect(RunTags.isVerbose("L1.cmdline@vanilla") && RunTags.isVerbose("nestbench.commit"))
        #expect(!RunTags.isVerbose("L1.kernel@vanilla") && !RunTags.isVerbose("nestbench.version"))
    }

    /// The orchestrator's tags of a stack run, from what the placement records.
    @Test func stackTagsFromThePlacementsProvenance() {
        let stack = Configuration(
            name: "vanilla", platform: .qemu,
            layers: [VMLayer(name: "L0"), VMLayer(name: "L1"), VMLayer(name: "L2", instances: 2)])
        let emulated = [
            "L0.kernel": "6.1.0", "L0.cmdline": "console=ttyS0", "L1.kernel": "6.1.0", "L1.knob:/sys/x": "1",
            "L2.0.kernel": "6.18.0", "L2.1.kernel": "6.18.0", "qemu_version": "7.2.22", "stack_directory": "/tmp/s",
        ]
        let tags = RunTagging.stack(emulated, configuration: stack, named: "vanilla")
        #expect(tags["L0.cmdline@vanilla"] == "console=ttyS0" && tags["L2.1.kernel@vanilla"] == "6.18.0")
        #expect(tags["qemu@vanilla"] == "7.2.22")
        #expect(tags["kernel@vanilla"] == "L0 6.1.0, L1 6.1.0, L2.0 6.18.0, L2.1 6.18.0")
        // With hardware virtualization L0 is this machine: its kernel is the one this machine runs.
        var hardware = emulated
        hardware["L0.kernel"] = nil
        hardware["L0.cmdline"] = nil
        let here = MachineProbe.describe().kernel
        #expect(RunTagging.stack(hardware, configuration: stack, named: "vanilla")["L0.kernel@vanilla"] == here)
    }

    @Test func stackTagsNameEveryLayer() {
        let layers = [
            AutomaticTags.Layer(name: "L0", kernel: "6.1.0-28-amd64", commandLine: "console=ttyS0 nb.agent=/x"),
            AutomaticTags.Layer(name: "L1", kernel: "6.1.0-28-amd64", commandLine: "console=ttyS0"),
            AutomaticTags.Layer(name: "L2", kernel: "6.18.0", commandLine: nil),
        ]
        let tags = AutomaticTags.stack(configuration: "vanilla", layers: layers, qemuVersion: "7.2.15")
        #expect(tags["L0.kernel@vanilla"] == "6.1.0-28-amd64" && tags["L2.kernel@vanilla"] == "6.18.0")
        #expect(tags["L1.cmdline@vanilla"] == "console=ttyS0" && tags["L2.cmdline@vanilla"] == nil)
        #expect(tags["qemu@vanilla"] == "7.2.15")
        #expect(tags["kernel@vanilla"] == "L0 6.1.0-28-amd64, L1 6.1.0-28-amd64, L2 6.18.0")
        let uniform = AutomaticTags.stack(configuration: "v", layers: Array(layers.prefix(2)), qemuVersion: nil)
        #expect(uniform["kernel@v"] == "6.1.0-28-amd64" && uniform["qemu@v"] == nil)
        let unknown = AutomaticTags.stack(
            configuration: "v", layers: [AutomaticTags.Layer(name: "L1", kernel: nil, commandLine: nil)], qemuVersion: nil)
        #expect(unknown.isEmpty, "an unknown kernel is no tag, never a guess")
        let m = MachineDescription(
            hostname: "tb1", cpuModel: "AMD EPYC", cores: 2, memoryBytes: 24 << 30, kernel: "6.1.0", thp: [:],
            extra: ["kernel.cmdline": "root=/dev/vda1"])
        #expect(
            AutomaticTags.machine(m) == [
                "host.kernel": "6.1.0", "host.cmdline": "root=/dev/vda1", "testbed": "tb1 (AMD EPYC, 6.1.0, 24576 MiB)",
            ])
    }
}
