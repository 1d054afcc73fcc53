import Foundation
import NestBenchModel
import Testing

@testable import NestBenchConfig

/// A catalog that knows one suite with one app, so validation of workloads can be tested here.
struct FakeCatalog: WorkloadCatalog {
    func problems(for spec: WorkloadSpec) -> [WorkloadProblem] {
        if spec.suite != "micro" { return [WorkloadProblem(key: "suite", message: "unknown suite \"\(spec.suite)\"")] }
        if spec.name != "random-access" {
            return [WorkloadProblem(key: "name", message: "unknown micro workload \"\(spec.name)\"")]
        }
        return []
    }
}

let valid = """
    name: t
    baseline: never
    seed: 9
    configurations:
      never:
        host: {thp: {enabled: never}}
      always:
        platform: local
        host:
          thp: {enabled: always, defrag: madvise}
          khugepaged: {defrag: 1, pages_to_scan: 4096}
          sysctl: {vm.compaction_proactiveness: "0"}
    workloads:
      - {name: random-access, suite: micro, params: {size: 1GiB}, cpus: "0-1", timeout: 2m}
    conditions:
      clean: {}
      fragmented: {fragmentation: {target_fmfi: 0.9}}
    repetitions: {min: 3, max: 8, target_ci: 0.05}
    """

@Suite("Experiment files")
struct ExperimentLoaderTests {
    func problems(_ yaml: String) -> [ConfigProblem] {
        do {
            _ = try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog())
            return []
        } catch {
            return error.problems
        }
    }

    @Test func validFileLoads() throws {
        let e = try ExperimentLoader.parse(valid, file: "exp.yaml", catalog: FakeCatalog())
        #expect(e.name == "t" && e.baseline == "never" && e.seed == 9)
        #expect(e.configurations.map(\.name) == ["never", "always"])
        let always = try #require(e.configuration(named: "always"))
        #expect(
            always.host.knobs.map(\.path) == [
                "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/mm/transparent_hugepage/defrag",
                "/sys/kernel/mm/transparent_hugepage/khugepaged/defrag",
                "/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan", "/proc/sys/vm/compaction_proactiveness",
            ])
        #expect(e.workloads[0].cpus == [0, 1] && e.workloads[0].timeoutSeconds == 120)
        #expect(e.workloads[0].params["size"] == "1GiB")
        #expect(e.conditions.map(\.name) == ["clean", "fragmented"])
        #expect(e.conditions[1].fragmentation?.targetFMFI == 0.9)
        #expect(e.repetitions == RepetitionPolicy(min: 3, max: 8, targetRelativeCI: 0.05))
    }

    @Test func unknownKeyNamesPathAndLine() throws {
        let p = problems(
            valid.replacingOccurrences(
                of: "thp: {enabled: always, defrag: madvise}", with: "thp: {enabled: always, defragg: madvise}"))
        let first = try #require(p.first)
        #expect(p.count == 1)
        #expect(first.keyPath == "configurations.always.host.thp.defragg")
        #expect(first.line == 10)
        #expect(first.description.hasPrefix("exp.yaml:10:"))
        #expect(first.message.contains("unknown key"))
    }

    @Test func wrongTypeIsReported() throws {
        let p = problems(valid.replacingOccurrences(of: "min: 3", with: "min: three"))
        #expect(p.count == 1)
        #expect(p.first?.keyPath == "repetitions.min")
        #expect(p.first?.message.contains("whole number") == true)
        #expect(p.first?.line == 18)
    }

    @Test func missingBaselineIsReported() {
        let p = problems(valid.replacingOccurrences(of: "baseline: never\n", with: ""))
        #expect(p.map(\.keyPath) == ["baseline"])
        #expect(p.first?.message.contains("missing required key") == true)
    }

    @Test func baselineMustNameAConfiguration() {
        let p = problems(valid.replacingOccurrences(of: "baseline: never", with: "baseline: nope"))
        #expect(p.map(\.keyPath) == ["baseline"])
        #expect(p.first?.line == 2)
    }

    @Test func unknownWorkloadIsReported() {
        let p = problems(valid.replacingOccurrences(of: "name: random-access", with: "name: random-acess"))
        #expect(p.map(\.keyPath) == ["workloads[0].name"])
        #expect(p.first?.line == 14)
        #expect(p.first?.message.contains("random-acess") == true)
    }

    @Test func everyProblemIsReportedAtOnce() {
        let broken =
            valid
            .replacingOccurrences(of: "min: 3", with: "min: x")
            .replacingOccurrences(of: "enabled: never", with: "enabled: sometimes")
            .replacingOccurrences(of: "seed: 9", with: "sed: 9")
        let p = problems(broken)
        #expect(Set(p.map(\.keyPath)) == ["sed", "configurations.never.host.thp.enabled", "repetitions.min"])
    }

    @Test func invalidYAMLHasALine() {
        let p = problems("name: [unclosed\nbaseline: x\n")
        #expect(p.count == 1)
        #expect(p.first?.line != nil)
        #expect(p.first?.message.hasPrefix("invalid YAML") == true)
    }

    @Test func missingFileIsOneClearError() {
        do {
            _ = try ExperimentLoader.load(path: "/nonexistent/exp.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.hasPrefix("/nonexistent/exp.yaml: cannot read"))
        }
    }

    @Test func repetitionBoundsAreChecked() {
        let p = problems(valid.replacingOccurrences(of: "max: 8", with: "max: 2"))
        #expect(p.map(\.keyPath) == ["repetitions.max"])
    }
}

@Suite("Plan")
struct PlanTests {
    @Test func interleavedSeededAndComplete() throws {
        let e = try ExperimentLoader.parse(valid, file: "exp.yaml", catalog: FakeCatalog())
        var g1 = SeededGenerator(seed: 42)
        var g2 = SeededGenerator(seed: 42)
        let p1 = Planner.initialPlan(for: e, generator: &g1)
        let p2 = Planner.initialPlan(for: e, generator: &g2)
        #expect(p1 == p2)
        // 2 configurations × 1 workload × 2 conditions × 3 repetitions
        #expect(p1.count == 12)
        #expect(p1.map(\.sequence) == Array(0..<12))
        // Each block of 4 holds every cell once, with repetition = block + 1.
        for block in 0..<3 {
            let slice = p1[block * 4..<(block + 1) * 4]
            #expect(Set(slice.map(\.cell)).count == 4)
            #expect(slice.allSatisfy { $0.repetition == block + 1 })
        }
        var g3 = SeededGenerator(seed: 43)
        let orders = (0..<5).map { _ in Planner.initialPlan(for: e, generator: &g3).map(\.cell) }
        #expect(Set(orders.map { $0.map(\.configuration) }).count > 1, "the order is randomized, not A-then-B")
    }
}

@Suite("Fragmentation conditions")
struct FragmentationConditionTests {
    @Test func fieldsAndDefaults() throws {
        let yaml = valid.replacingOccurrences(
            of: "fragmented: {fragmentation: {target_fmfi: 0.9}}",
            with:
                "fragmented: {fragmentation: {target_fmfi: 0.5, order: 4, slack: 2GiB, mlock: false, tolerance: 0.1, timeout: 90s, sysctl: {vm.compaction_proactiveness: \"0\"}}}"
        )
        let e = try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog())
        let f = try #require(e.conditions[1].fragmentation)
        #expect(f.targetFMFI == 0.5 && f.order == 4 && f.slackBytes == 2 << 30 && !f.mlock && f.tolerance == 0.1)
        #expect(f.timeoutSeconds == 90 && f.sysctl == ["vm.compaction_proactiveness": "0"])
        let d = try #require(
            try ExperimentLoader.parse(valid, file: "exp.yaml", catalog: FakeCatalog()).conditions[1].fragmentation)
        #expect(d.mlock && d.hold && d.order == 9 && d.sysctl == FragmentationSpec.pinnedCompaction)
        #expect(d.layer == nil, "default: the layer the workload runs in")
    }

    @Test func layerIsHostOrALayerName() throws {
        func load(_ layer: String) throws(ConfigError) -> FragmentationSpec? {
            let yaml = valid.replacingOccurrences(
                of: "fragmented: {fragmentation: {target_fmfi: 0.9}}",
                with: "fragmented: {fragmentation: {target_fmfi: 0.9, layer: \(layer)}}")
            return try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog()).conditions[1].fragmentation
        }
        #expect(try load("L2")?.layer == "L2")
        #expect(try load("host")?.layer == "host")
        do {
            _ = try load("guest")
            Issue.record("expected an error")
        } catch {
            #expect(error.problems.map(\.keyPath) == ["conditions.fragmented.fragmentation.layer"])
            #expect(error.problems.first?.message.contains("must be host or a layer name such as L2") == true)
        }
    }

    @Test func targetOutOfRangeAndUnknownKey() throws {
        let yaml = valid.replacingOccurrences(
            of: "fragmented: {fragmentation: {target_fmfi: 0.9}}",
            with: "fragmented: {fragmentation: {target_fmfi: 1.5, methd: anon-holes}}")
        do {
            _ = try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog())
            Issue.record("expected errors")
        } catch {
            #expect(
                Set(error.problems.map(\.keyPath)) == [
                    "conditions.fragmented.fragmentation.target_fmfi", "conditions.fragmented.fragmentation.methd",
                ])
        }
    }
}

@Suite("Colocated workloads")
struct ColocationLoaderTests {
    func load(_ workloads: String) throws(ConfigError) -> Experiment {
        let yaml = valid.replacingOccurrences(
            of: "  - {name: random-access, suite: micro, params: {size: 1GiB}, cpus: \"0-1\", timeout: 2m}", with: workloads)
        return try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog())
    }

    @Test func membersAreWorkloadsAndAlikeOnesAreNumbered() throws {
        let e = try load(
            """
              - {colocate: [{name: random-access, suite: micro, timeout: 1m}, {name: random-access, suite: micro, timeout: 3m, cpus: [1]}]}
              - {label: pair, colocate: [{name: random-access, suite: micro, label: a}, {name: random-access, suite: micro, label: b}]}
            """)
        #expect(e.workloads.map(\.label) == ["random-access-1+random-access-2", "pair"])
        let first = try #require(e.workloads[0].colocated)
        #expect(first.map(\.label) == ["random-access-1", "random-access-2"] && first[1].cpus == [1])
        #expect(e.workloads[0].timeoutSeconds == 180, "the group waits for its longest member")
        #expect(e.workloads[1].colocated?.map(\.label) == ["a", "b"])
    }

    @Test func badGroupsAreNamed() {
        do {
            _ = try load(
                """
                  - {colocate: [{name: random-access, suite: micro}]}
                  - {suite: micro, colocate: [{name: nope, suite: micro}, {name: random-access, suite: micro}]}
                """)
            Issue.record("expected errors")
        } catch {
            let paths = Set(error.problems.map(\.keyPath))
            #expect(paths.contains("workloads[0].colocate"), "\(error.problems)")
            #expect(paths.contains("workloads[1].suite"), "only label and colocate at group level")
            #expect(paths.contains("workloads[1].colocate[0].name"), "members validated like workloads")
        }
    }

    @Test func stackSplitsTheInnermostLayerEvenly() throws {
        let l2 = VMLayer(name: "L2", vcpus: 4, memoryBytes: 3 << 30, pinning: [4, 5, 6, 7])
        let c = Configuration(name: "vanilla", platform: .qemu, layers: [VMLayer(name: "L0"), VMLayer(name: "L1"), l2])
        let two = try #require(c.colocating(2))
        let last = try #require(two.layers.last)
        #expect(last.instances == 2 && last.vcpus == 2 && last.memoryBytes == 1536 << 20)
        #expect(last.instancePinning == [[4, 5], [6, 7]])
        #expect(two.name == "vanilla-2guests", "its own stack")
        var already = c
        already.layers[2].instances = 2
        #expect(already.colocating(2) == already)
        #expect(already.colocating(3) == nil)
        #expect(Configuration(name: "l").colocating(2) == nil, "a local configuration has no guests to split")
        let one = try #require(
            Configuration(name: "s", platform: .qemu, layers: [VMLayer(name: "L0"), VMLayer(name: "L1", vcpus: 1, pinning: [1])])
                .colocating(2))
        #expect(one.layers[1].vcpus == 1 && one.layers[1].instancePinning == [[1], [1]], "one vCPU each, on the same CPU")
    }
}

@Suite("Experiment files: collectors")
struct CollectorSettingsLoaderTests {
    func load(_ section: String) throws(ConfigError) -> Experiment {
        try ExperimentLoader.parse(valid + "\n" + section, file: "exp.yaml", catalog: FakeCatalog())
    }

    func problems(_ section: String) -> [ConfigProblem] {
        do {
            _ = try load(section)
            return []
        } catch {
            return error.problems
        }
    }

    @Test func absentMeansDefaults() throws {
        let e = try ExperimentLoader.parse(valid, file: "exp.yaml", catalog: FakeCatalog())
        #expect(e.collectors == nil)
        #expect(CollectorSettings().monitor.intervalMillis == 250 && CollectorSettings().perf.defaultEvents)
    }

    @Test func eventsScopeAndInterval() throws {
        let e = try load(
            """
            collectors:
              perf:
                default_events: false
                events: {dtlb_2m_walks: "DTLB_LOAD_MISSES:WALK_COMPLETED_2M_4M"}
                scope: guest
                proxies: false
              monitor: {interval: 100ms, order: 4}
            """)
        let c = try #require(e.collectors)
        #expect(!c.perf.defaultEvents && !c.perf.proxies && c.perf.scope == "guest")
        #expect(c.perf.events == ["dtlb_2m_walks": "DTLB_LOAD_MISSES:WALK_COMPLETED_2M_4M"])
        #expect(c.monitor == MonitorSettings(intervalMillis: 100, order: 4))
        #expect(try load("collectors: {monitor: {interval: off}}").collectors?.monitor.intervalMillis == nil)
    }

    @Test func unknownKeysAndBadValuesAreNamed() {
        #expect(problems("collectors: {perf: {event: {a: B}}}").map(\.keyPath) == ["collectors.perf.event"])
        #expect(problems("collectors: {pmu: {}}").map(\.keyPath) == ["collectors.pmu"])
        #expect(problems("collectors: {perf: {scope: vm}}").map(\.keyPath) == ["collectors.perf.scope"])
        #expect(problems("collectors: {monitor: {interval: 1ms}}").map(\.keyPath) == ["collectors.monitor.interval"])
        #expect(problems("collectors: {monitor: {order: 11}}").map(\.keyPath) == ["collectors.monitor.order"])
        #expect(problems("collectors: {perf: {events: {\"a b\": X}}}").map(\.keyPath) == ["collectors.perf.events.a b"])
        let nothing = problems("collectors: {perf: {default_events: false, proxies: false}}")
        #expect(nothing.map(\.keyPath) == ["collectors.perf"])
        #expect(nothing.first?.message.contains("nothing to count") == true)
        #expect(problems("collectors: {perf: {scope: vm}}").first?.line == 19)
    }

    @Test func alignmentTimelineIsOptInAndValidated() throws {
        #expect(try load("collectors: {monitor: {order: 9}}").collectors?.alignment == nil, "default: off")
        #expect(try load("collectors: {alignment: {interval: 500ms}}").collectors?.alignment?.intervalMillis == 500)
        #expect(try load("collectors: {alignment: {interval: 2s}}").collectors?.alignment?.intervalMillis == 2000)
        #expect(try load("collectors: {alignment: {interval: off}}").collectors?.alignment?.intervalMillis == nil)
        #expect(try load("collectors: {alignment: {interval: 100ms}}").collectors?.alignment?.intervalMillis == 100)
        for bad in ["50ms", "99ms", "2h", "often", "-1s", "[1s]"] {
            let found = problems("collectors: {alignment: {interval: \(bad)}}")
            #expect(found.map(\.keyPath) == ["collectors.alignment.interval"], "\(bad): \(found)")
            let line = try #require(found.first?.description)
            #expect(line.hasPrefix("exp.yaml:19:") && !line.contains("\n"), "one line naming file and field: \(line)")
        }
        #expect(problems("collectors: {alignment: {interval: 50ms}}").first?.message.contains("100ms") == true)
        #expect(problems("collectors: {alignment: {every: 1s}}").map(\.keyPath) == ["collectors.alignment.every"])
    }

    /// The timeline runs in stacks too (the stack probe, every layer, while the workload runs).
    @Test func alignmentTimelineOnAStackIsRead() throws {
        let stack = valid.replacingOccurrences(
            of: "  always:\n    platform: local\n",
            with: "  always:\n    platform: qemu\n    layers: {L0: {}, L1: {kernel: /vmlinuz}}\n")
        #expect(stack != valid)
        let e = try ExperimentLoader.parse(
            stack + "\ncollectors: {alignment: {interval: 1s}}", file: "exp.yaml", catalog: FakeCatalog())
        #expect(e.collectors?.alignment?.intervalMillis == 1000)
    }
}

@Suite("qemu configurations")
struct QemuConfigurationTests {
    static let suites: String = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { dir.deleteLastPathComponent() }
        return dir.appendingPathComponent("Suites").path
    }()

    func experiment(_ configurations: String) -> String {
        """
        name: q
        baseline: a
        configurations:
        \(configurations)
        workloads:
          - {name: random-access, suite: micro}
        """
    }

    @Test func includesAreRelativeToTheExperimentFileAndVariablesExpand() throws {
        let file = Self.suites + "/nested-smoke.yaml"
        let text = try String(contentsOfFile: file, encoding: .utf8)
        let kernel = Self.suites + "/nested-smoke.yaml"  // any readable file stands in for an image
        let e = try ExperimentLoader.parse(text, file: file, environment: ["NESTBENCH_KERNEL": kernel])
        let vanilla = try #require(e.configuration(named: "vanilla"))
        #expect(vanilla.platform == .qemu)
        #expect(vanilla.layers.map(\.name) == ["L0", "L1", "L2"])
        #expect(vanilla.layers.allSatisfy { $0.kernel == kernel })
        #expect(vanilla.layers[2].settings.thp.enabled == "never")
        #expect(vanilla.layers[1].pinning == [1] && vanilla.layers[1].vcpus == 1)
        #expect(vanilla.layers[2].pinning == [0] && vanilla.layers[2].memoryBytes == 768 << 20)
        #expect(vanilla.layers[0].modules == [KernelModule(name: "kvm_vendor", parameters: ["nested": "1", "tdp": "1"])])
        let stock = try #require(e.configuration(named: "stock-thp"))
        #expect(stock.layers.allSatisfy { $0.settings.knobs.isEmpty })
    }

    @Test func unsetVariableNamesTheIncludedFileKeyAndLine() throws {
        let file = Self.suites + "/gemini-test.yaml"
        let text = experiment("  a: {include: configurations/gemini.yaml}")
        do {
            _ = try ExperimentLoader.parse(text, file: file, environment: [:])
            Issue.record("no error")
        } catch {
            let p = try #require(error.problems.first)
            #expect(p.file.hasSuffix("configurations/gemini.yaml"))
            #expect(p.keyPath == "layers.L0.kernel")
            #expect(p.line == 7)
            #expect(p.message.contains("GEMINI_KERNEL is not set"))
        }
    }

    @Test func missingKernelImageAndBadLayersAreReported() throws {
        let text = experiment(
            """
              a:
                platform: qemu
                layers:
                  L0: {kernel: /nonexistent/vmlinuz}
                  L2: {kernel: /vmlinuz}
            """)
        do {
            _ = try ExperimentLoader.parse(text, file: "x.yaml", environment: [:])
            Issue.record("no error")
        } catch {
            let text = error.description
            #expect(text.contains("x.yaml:7:"))
            #expect(text.contains("configurations.a.layers.L0.kernel: kernel image /nonexistent/vmlinuz does not exist"))
            #expect(text.contains("configurations.a.layers.L2: layers are named L0, L1, L2 … in order; expected L1 here"))
        }
    }

    @Test func pinningHugetlbPoolAndMemoryAreValidated() throws {
        let text = experiment(
            """
              a:
                platform: qemu
                layers:
                  L0: {vcpus: 2, memory: 2GiB}
                  L1: {kernel: /vmlinuz, vcpus: 2, memory: 1GiB, pinning: [0], backing: hugetlb-2m}
                  L2: {kernel: /vmlinuz, vcpus: 1, memory: 1GiB, pinning: [3]}
            """)
        do {
            _ = try ExperimentLoader.parse(text, file: "x.yaml", environment: [:])
            Issue.record("no error")
        } catch {
            let text = error.description
            #expect(text.contains("layers.L1.pinning: pin each of the 2 vCPUs to one CPU (found 1 CPUs)"))
            #expect(text.contains("layers.L1.backing: hugetlb-2m needs a pool of at least 512 huge pages in L0"))
            #expect(text.contains("layers.L2.memory: L2 needs less memory than its host L1"))
            #expect(text.contains("layers.L2.pinning: CPU 3 does not exist in L1, which has 2 vCPUs"))
        }
    }
}
