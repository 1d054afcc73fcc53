import Foundation
import NestBenchCollectors
import NestBenchModel
import Testing

@testable import NestBenchAnalysis

@Suite("honest numbers: boots, degenerate cells, verdict lines, figures, noise sources, kernel log")
struct HonestNumbersTests {
    static func runs(_ id: String, _ values: [String: [Double]], boots: [String: [Int]] = [:]) -> [RunRecord] {
        var out: [RunRecord] = []
        var seq = 0
        let reps = values.values.map(\.count).max() ?? 0
        for rep in 0..<reps {
            for config in values.keys.sorted() where rep < values[config]!.count {
                let provenance = boots[config].map { [RunRecord.bootProvenanceKey: "\(config)-boot\($0[rep])"] } ?? [:]
                out.append(
                    Synthetic.run(id, seq, config, ops: values[config]![rep], rep: rep + 1, provenance: provenance))
                seq += 1
            }
        }
        return out
    }

    static func comparison(_ runs: [RunRecord], metric: String = "ops_per_sec") throws -> Comparison {
        try #require(
            Comparator.comparisons(experiment: Synthetic.experiment(), runs: runs).first {
                $0.metric == metric && $0.configuration == "cand"
            })
    }

    @Test func twoBootsPerSideUseTheBootLevelBootstrap() throws {
        let values = ["base": [100.0, 101, 99, 120, 121, 119], "cand": [110.0, 111, 109, 90, 91, 89]]
        let booted = try Self.comparison(
            Self.runs("b", values, boots: ["base": [1, 1, 1, 2, 2, 2], "cand": [1, 1, 1, 2, 2, 2]]))
        #expect(booted.boots == 2 && booted.bootsBaseline == 2)
        #expect(booted.method.contains("bootstrap over VM boots (2 vs 2 boots)"), "\(booted.method)")
        #expect(booted.ratioCI == booted.ratioCIBootstrap)
        // The same values as independent runs: a Fieller CI, narrower than the boot-level one.
        let flat = try Self.comparison(Self.runs("f", values))
        #expect(flat.boots == nil)
        #expect(!flat.method.contains("VM boot"))
        let w = { (c: Comparison) in (c.ratioCI?[1] ?? .infinity) - (c.ratioCI?[0] ?? 0) }
        #expect(w(booted) > w(flat), "boot-to-boot variance widens the CI: \(booted.ratioCI ?? []) vs \(flat.ratioCI ?? [])")
    }

    @Test func oneBootSaysTheCICoversRunToRunNoiseOnly() throws {
        let c = try Self.comparison(
            Self.runs(
                "o", ["base": [100.0, 101, 99], "cand": [110.0, 111, 109]], boots: ["base": [1, 1, 1], "cand": [1, 1, 1]]))
        #expect(c.boots == 1 && c.bootsBaseline == 1)
        #expect(c.method.contains("run-to-run noise only"), "\(c.method)")
        #expect(c.ratioCI != nil, "the run-level CI stays")
        let e = Synthetic.experiment()
        let report = Report(
            record: Synthetic.record("o", e, at: Date()),
            runs: Self.runs(
                "o", ["base": [100.0, 101, 99], "cand": [110.0, 111, 109]], boots: ["base": [1, 1, 1], "cand": [1, 1, 1]]))
        #expect(report.notes.contains { $0.contains("cover run-to-run noise only") })
        #expect(ReportRenderer.verdictLines(report).contains { $0.contains("1/1 boots") && $0.contains("n 3/3 runs") })
    }

    @Test func bootsSpreadRepetitionsOverContiguousSpans() {
        let p = RepetitionPolicy(min: 6, max: 10, targetRelativeCI: 0.02)
        #expect(p.stackBoots == 2, "default: two boots")
        #expect((1...10).map { p.bootIndex(repetition: $0) } == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
        var three = p
        three.boots = 3
        #expect((1...6).map { three.bootIndex(repetition: $0) } == [0, 0, 1, 1, 2, 2])
        var many = RepetitionPolicy(min: 2, max: 4, targetRelativeCI: 0.02)
        many.boots = 5
        #expect(many.stackBoots == 2, "never more boots than min blocks")
        var one = p
        one.boots = 1
        #expect((1...8).allSatisfy { one.bootIndex(repetition: $0) == 0 })
    }

    @Test func zeroVarianceIsDegenerateNeverCITargetMet() throws {
        let e = Synthetic.experiment()
        let runs = Self.runs("d", ["base": [100.0, 100, 100], "cand": [110.0, 110, 110]])
        let comparisons = Comparator.comparisons(experiment: e, runs: runs)
        let c = try #require(comparisons.first { $0.metric == "ops_per_sec" })
        #expect(c.degenerate)
        #expect(c.method.contains("degenerate"))
        let plan = runs.map(\.planned)
        let status = AdaptiveRepetitions.status(
            experiment: e, plan: plan, comparisons: comparisons, experimentStatus: .completed)
        #expect(status.first?.reason == .degenerate, "\(status)")
        #expect(
            AdaptiveRepetitions.cellsNeedingMore(experiment: e, plan: plan, comparisons: comparisons).contains {
                $0.configuration == "cand"
            }, "keeps repeating to the maximum")
        // A count with zero variance (requests served) is not continuous: not degenerate.
        let counts = Self.runs("k", ["base": [100.0, 101, 99], "cand": [110.0, 111, 109]]).map { r -> RunRecord in
            var r = r
            r.metrics.append(Metric(name: "requests", value: 3000, unit: "requests", polarity: .neutral, source: "w"))
            return r
        }
        #expect(try Self.comparison(counts, metric: "requests").degenerate == false)
    }

    @Test func terminalReportLeadsWithVerdictsAndHidesTheTableUnlessAsked() throws {
        var e = Synthetic.experiment()
        e.analysis.alpha = 0.01
        let runs = Self.runs("v", ["base": [100.0, 101, 99, 100], "cand": [150.0, 151, 149, 150]])
        let report = Report(record: Synthetic.record("v", e, at: Date()), runs: runs)
        let text = try ReportRenderer.render(report, as: .table)
        let lines = text.split(separator: "\n").map(String.init)
        // The verdicts come first, right after the run's header lines.
        let verdictsAt = try #require(lines.firstIndex { $0.hasPrefix("verdicts:") })
        #expect(verdictsAt <= 3, "\(lines.prefix(5))")
        #expect(lines[verdictsAt].contains("99% CI"), "the CI level follows alpha: \(lines[verdictsAt])")
        #expect(lines[verdictsAt + 1].hasPrefix("- random-access / clean / cand: ops_per_sec 1.500 ["))
        #expect(lines[verdictsAt + 1].contains("BETTER"))
        #expect(!text.contains("mean ± sd"), "no full table without --all-metrics")
        #expect(text.contains("--all-metrics"))
        let all = try ReportRenderer.render(report, as: .table, allMetrics: true)
        #expect(all.contains("mean ± sd") && all.contains("99% CI") && !all.contains("95% CI"))
        #expect(all.contains("wall_seconds"))
    }

    static func bar(_ group: String, _ config: String, _ ratio: Double, ci: [Double]?, logT: [Double]? = nil) -> HTMLReport.Bar {
        let c = Comparison(
            workload: group, condition: "clean", configuration: config, metric: "ops_per_sec", unit: "ops/s",
            polarity: .higherIsBetter, mean: ratio, baselineMean: 1, sd: 0.1, baselineSD: 0.1, ratio: ratio, ratioCI: ci,
            pValue: 0.5, n: 3, nBaseline: 3, verdict: "same", method: "m", ratioCILogT: logT)
        return HTMLReport.Bar(group: group, configuration: config, ratio: ratio, ci: ci, comparison: c, note: "")
    }

    static func emptyReport(reference: ReferenceSet? = nil) -> Report {
        var e = Synthetic.experiment()
        e.reference = reference
        return Report(record: Synthetic.record("h", e, at: Date()), runs: [])
    }

    @Test func unboundedCIsAreOpenWhiskersAndHugeBoundsAreClipped() {
        let bars = [
            Self.bar("a", "cand", 1.1, ci: [1.0, 1.2]), Self.bar("b", "cand", 0.9, ci: nil, logT: [0.5, 1.6]),
            Self.bar("c", "cand", 1.0, ci: [0.2, 400]),
        ]
        let svg = HTMLReport.svg(id: "t", bars: bars, report: Self.emptyReport())
        #expect(svg.contains("class=\"whisker-open\"") && svg.contains("∞"), "unbounded CI drawn as such")
        #expect(svg.contains("class=\"whisker-fallback\""), "the log-t interval drawn beside")
        #expect(svg.contains("class=\"clipped\"") && svg.contains(">400<"), "the 400 bound is clipped and labelled")
        // The axis is set by the bars (≤ 3× the tallest), not by the 400 bound.
        let ticks = svg.components(separatedBy: "class=\"tick\"").dropFirst().compactMap { part -> Double? in
            guard let gt = part.firstIndex(of: ">"), let lt = part.firstIndex(of: "<") else { return nil }
            return Double(part[part.index(after: gt)..<lt])
        }
        #expect((ticks.max() ?? 0) < 10, "axis \(ticks)")
        #expect(HTMLReport.intervalNotes(bars).contains("log-t interval [0.500, 1.600]"))
    }

    @Test func referenceValuesAreDrawnBesideOurGeometricMean() {
        let reference = ReferenceSet(
            source: "paper §5",
            values: [ReferenceValue(figure: "fig11", configuration: "cand", ratio: 1.165, label: "throughput")])
        let report = Self.emptyReport(reference: reference)
        let bars = [
            Self.bar("a", "cand", 1.1, ci: [1.0, 1.2]), Self.bar("b", "cand", 1.2, ci: [1.1, 1.3]),
            HTMLReport.Bar(group: "geomean", configuration: "cand", ratio: 1.149, ci: [1.10, 1.20], comparison: nil, note: ""),
        ]
        let svg = HTMLReport.svg(id: "r", bars: bars, report: report, references: reference.values)
        #expect(svg.contains("class=\"reference\"") && svg.contains("data-ratio=\"1.165\""))
        let caption = HTMLReport.referenceCaption(reference.values, bars: bars, report: report)
        #expect(caption.contains("lies inside our CI"), "\(caption)")
        var outside = bars
        outside[2].ci = [1.12, 1.16]
        #expect(HTMLReport.referenceCaption(reference.values, bars: outside, report: report).contains("lies outside our CI"))
    }

    @Test func noiseSourcesAreAssessedFromFileContents() {
        let files = [
            NoiseSources.aslrPath: "2\n", NoiseSources.ksmPath: "1\n",
            "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "powersave\n",
            "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor": "powersave\n",
            NoiseSources.noTurboPath: "0\n",
        ]
        let by = Dictionary(
            NoiseSources.assess(files: files, processes: ["irqbalance"]).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(by["aslr"]?.state == "on (2)" && by["aslr"]?.knobs == [Knob(path: NoiseSources.aslrPath, value: "0")])
        #expect(by["numa_balancing"]?.present == false, "absent file: nothing to control")
        #expect(by["ksm"]?.controlled == false && by["ksm"]?.warns == true, "KSM is left alone unless the experiment sets it")
        #expect(by["governor"]?.knobs.count == 2 && by["governor"]?.knobs.allSatisfy { $0.value == "performance" } == true)
        #expect(by["boost"]?.knobs == [Knob(path: NoiseSources.noTurboPath, value: "1")])
        #expect(by["irqbalance"]?.state == "running" && by["irqbalance"]?.warns == true)
        let set = NoiseSources.assess(files: files, settings: EnvironmentSettings(aslr: "leave", ksm: "off"))
        #expect(set.first { $0.name == "aslr" }?.knobs.isEmpty == true)
        #expect(set.first { $0.name == "ksm" }?.knobs == [Knob(path: NoiseSources.ksmPath, value: "0")])
        let none = NoiseSources.assess(files: [:])
        #expect(none.first { $0.name == "governor" }?.state.hasPrefix("no cpufreq") == true)
        let doctor = Doctor.noise(files: files, processes: [])
        #expect(doctor.first { $0.name == "aslr" }?.reason.contains("sysctl -w kernel.randomize_va_space=0") == true)
    }

    @Test func kernelLogFindingsAndPagingMode() {
        let text = """
            [  1.0] usb 1-1: new device
            [  2.0] WARNING: CPU: 1 PID: 7 at mm/page_alloc.c:123 foo+0x1/0x2
            [  3.0] Out of memory: Killed process 123 (nb-micro)
            [  4.0] INFO: task kworker/0:1:12 blocked for more than 120 seconds.
            [  5.0] kvm_amd: Nested Virtualization enabled
            [  6.0] BUG: kernel NULL pointer dereference, address: 0000000000000000
            """
        #expect(KernelLog.findings(in: text).map(\.kind) == ["warning", "oom-kill", "hung-task", "bug"])
        #expect(KernelLog.kmsgMessage("4,1234,5678,-;WARNING: x\n SUBSYSTEM=y") == "WARNING: x")
        #expect(NestedPaging.mode(files: ["/sys/module/kvm_amd/parameters/npt": "1\n"]) == "npt on")
        #expect(NestedPaging.mode(files: ["/sys/module/kvm_intel/parameters/ept": "N\n"]) == "ept off (shadow paging)")
        #expect(NestedPaging.mode(files: [:]) == nil)
    }
}
