import Foundation
import NestBenchModel
import Testing

@testable import NestBenchConfig

/// The memory-overcommit scenarios' settings: `memory_pressure:` conditions and `ksm:` knobs.
@Suite("Experiment files: memory pressure and KSM")
struct OvercommitConfigTests {
    func load(condition: String, host: String = "thp: {enabled: never}") throws(ConfigError) -> Experiment {
        let yaml = """
            name: t
            baseline: a
            configurations:
              a: {host: {\(host)}}
              b: {host: {thp: {enabled: always}}}
            workloads:
              - {name: random-access, suite: micro}
            conditions:
              c: \(condition)
            """
        return try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog())
    }

    @Test func memoryPressureReadsItsKeys() throws {
        let e = try load(condition: "{memory_pressure: {available: 512MiB, step: 64MiB, timeout: 90s, layer: L0}}")
        let p = try #require(e.conditions[0].memoryPressure)
        #expect(p == MemoryPressureSpec(availableBytes: 512 << 20, stepBytes: 64 << 20, timeoutSeconds: 90, layer: "L0"))
        #expect(!e.conditions[0].compact, "pressure alone does not compact")
        let d = try #require(try load(condition: "{memory_pressure: {available: 1GiB}}").conditions[0].memoryPressure)
        #expect(d.stepBytes == 16 << 20 && d.layer == nil && d.timeoutSeconds == 600 && d.method == .hold)
        let b = try #require(
            try load(condition: "{memory_pressure: {available: 1GiB, method: balloon, layer: L0}}").conditions[0].memoryPressure)
        #expect(b.method == .balloon)
    }

    @Test func memoryPressureProblemsNameTheirKey() {
        func problems(_ condition: String) -> [String] {
            do {
                _ = try load(condition: condition)
                return []
            } catch { return error.problems.map(\.keyPath) }
        }
        #expect(problems("{memory_pressure: {step: 1MiB}}") == ["conditions.c.memory_pressure"])
        #expect(problems("{memory_pressure: {available: lots}}") == ["conditions.c.memory_pressure.available"])
        #expect(problems("{memory_pressure: {available: 0}}") == ["conditions.c.memory_pressure.available"])
        #expect(problems("{memory_pressure: {available: 63MiB}}") == ["conditions.c.memory_pressure.available"])
        #expect(problems("{memory_pressure: {available: 1GiB, step: 100}}") == ["conditions.c.memory_pressure.step"])
        #expect(problems("{memory_pressure: {available: 1GiB, layer: guest}}") == ["conditions.c.memory_pressure.layer"])
        #expect(problems("{memory_pressure: {available: 1GiB, hold: yes}}") == ["conditions.c.memory_pressure.hold"])
        #expect(problems("{memory_pressure: {available: 1GiB, method: swap}}") == ["conditions.c.memory_pressure.method"])
        #expect(
            problems("{memory_pressure: {available: 1GiB, layer: L0}, fragmentation: {target_fmfi: 0.5, layer: L1}}")
                == ["conditions.c.memory_pressure.layer"])
    }

    @Test func ksmBlockBecomesKnobsUnderSysKernelMmKsm() throws {
        let e = try load(condition: "{}", host: "ksm: {run: 1, pages_to_scan: 2000, sleep_millisecs: 10}")
        let knobs = Dictionary(uniqueKeysWithValues: e.configurations[0].host.knobs.map { ($0.path, $0.value) })
        #expect(knobs["/sys/kernel/mm/ksm/run"] == "1")
        #expect(knobs["/sys/kernel/mm/ksm/pages_to_scan"] == "2000")
        #expect(knobs["/sys/kernel/mm/ksm/sleep_millisecs"] == "10")
        do {
            _ = try load(condition: "{}", host: "ksm: {run: 3, scan: 1}")
            Issue.record("expected errors")
        } catch {
            #expect(Set(error.problems.map(\.keyPath)) == ["configurations.a.host.ksm.run", "configurations.a.host.ksm.scan"])
        }
    }

    @Test func theScenarioFileLoads() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../Suites/scenario-ksm.yaml")
        let text = try String(contentsOf: url, encoding: .utf8)
        let e = try ExperimentLoader.parse(text, file: url.path, catalog: FakeCatalog())
        #expect(e.configurations.map(\.name).sorted() == ["ksm-thp-off", "thp-ksm", "thp-nosharing"])
        #expect(e.conditions.first?.memoryPressure?.layer == "L0")
        for c in e.configurations {
            let l0 = try #require(c.layers.first { $0.name == "L0" })
            let ksmOn = c.name != "thp-nosharing"
            #expect(l0.settings.sysfs["/sys/kernel/mm/ksm/run"] == (ksmOn ? "1" : "0"), "\(c.name)")
        }
    }

    @Test func swapAndQemuMemoryMaxAreLayerKeys() throws {
        func load(l0: String = "", l1: String) throws(ConfigError) -> Experiment {
            let yaml = """
                name: t
                baseline: a
                configurations:
                  a:
                    platform: qemu
                    layers:
                      L0: {kernel: /vmlinuz, memory: 2GiB\(l0)}
                      L1: {kernel: /vmlinuz, memory: 512MiB\(l1)}
                workloads:
                  - {name: random-access, suite: micro}
                """
            return try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog())
        }
        guard FileManager.default.isReadableFile(atPath: "/vmlinuz") else { return }
        let e = try load(l0: ", swap: 1GiB, balloon: true", l1: ", swap: 256MiB, qemu_memory_max: 320MiB")
        let layers = e.configurations[0].layers
        #expect(layers[0].swapBytes == 1 << 30 && layers[0].qemuMemoryMaxBytes == nil && layers[0].balloon)
        #expect(!layers[1].balloon)
        #expect(layers[1].swapBytes == 256 << 20 && layers[1].qemuMemoryMaxBytes == 320 << 20)
        do {
            _ = try load(l0: ", qemu_memory_max: 1GiB", l1: ", swap: 1MiB")
            Issue.record("expected errors")
        } catch {
            #expect(
                Set(error.problems.map(\.keyPath)) == [
                    "configurations.a.layers.L0.qemu_memory_max", "configurations.a.layers.L1.swap",
                ])
        }
    }
}
