import Foundation
import NestBenchModel
import Testing

@testable import NestBenchConfig

/// The restore scenario's settings: `save_restore:` conditions, `detachable:` guests and an L0
/// that is this machine (`this_machine:`).
@Suite("Experiment files: save/restore")
struct SaveRestoreConfigTests {
    func load(
        condition: String, l0: String = "{this_machine: true}", l1: String = "detachable: true",
        workload: String = "{name: random-access, suite: micro, params: {progress: 0.5}}", more: String = ""
    ) throws(ConfigError) -> Experiment {
        let yaml = """
            name: t
            baseline: a
            configurations:
              a:
                platform: qemu
                layers:
                  L0: \(l0)
                  L1: {kernel: /vmlinuz, vcpus: 1, memory: 512MiB, pinning: [1], \(l1)}
            \(more)
            workloads:
              - \(workload)
            conditions:
              c: \(condition)
            """
        return try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog())
    }

    func problems(
        _ condition: String, l0: String = "{this_machine: true}", l1: String = "detachable: true",
        workload: String = "{name: random-access, suite: micro, params: {progress: 0.5}}", more: String = ""
    ) -> [String] {
        do {
            _ = try load(condition: condition, l0: l0, l1: l1, workload: workload, more: more)
            return []
        } catch {
            return error.problems.map(\.keyPath)
        }
    }

    @Test func saveRestoreReadsItsKeys() throws {
        let e = try load(condition: "{save_restore: {layer: L1, at: 10s, tolerance: 0.2}}")
        #expect(e.conditions[0].saveRestore == SaveRestoreSpec(layer: "L1", atSeconds: 10, tolerance: 0.2))
        let d = try #require(try load(condition: "{save_restore: {layer: L1, at: 500ms}}").conditions[0].saveRestore)
        #expect(d.tolerance == 0.10 && d.atSeconds == 0.5 && d.mode == .eager, "tolerance 10% and eager unless given")
        let lazy = try #require(try load(condition: "{save_restore: {layer: L1, at: 2s, mode: lazy}}").conditions[0].saveRestore)
        #expect(lazy.mode == .lazy)
        let layers = e.configurations[0].layers
        #expect(layers[0].thisMachine && !layers[0].detachable)
        #expect(layers[1].detachable && !layers[1].thisMachine)
    }

    @Test func saveRestoreProblemsNameTheirKey() {
        #expect(problems("{save_restore: {at: 10s}}") == ["conditions.c.save_restore"], "layer is required")
        #expect(problems("{save_restore: {layer: L1}}") == ["conditions.c.save_restore"], "at is required")
        #expect(problems("{save_restore: {layer: L1, at: 0s}}") == ["conditions.c.save_restore.at"])
        #expect(problems("{save_restore: {layer: L1, at: soon}}") == ["conditions.c.save_restore.at"])
        #expect(problems("{save_restore: {layer: L0, at: 1s}}") == ["conditions.c.save_restore.layer"], "L0 hosts")
        #expect(problems("{save_restore: {layer: L1, at: 1s, tolerance: 1}}") == ["conditions.c.save_restore.tolerance"])
        #expect(problems("{save_restore: {layer: L1, at: 1s, lazy: true}}") == ["conditions.c.save_restore.lazy"])
        #expect(problems("{save_restore: {layer: L1, at: 1s, mode: postcopy}}") == ["conditions.c.save_restore.mode"])
    }

    @Test func theLayerMustBeADetachableGuestInEveryConfiguration() {
        #expect(problems("{save_restore: {layer: L1, at: 1s}}", l1: "detachable: false") == ["conditions.c.save_restore.layer"])
        #expect(problems("{save_restore: {layer: L2, at: 1s}}") == ["conditions.c.save_restore.layer"], "no L2")
        #expect(
            problems("{save_restore: {layer: L1, at: 1s}}", more: "  here: {platform: local}").contains(
                "conditions.c.save_restore.layer"), "a local configuration has no guest to save")
    }

    @Test func theWorkloadMustReportItsProgress() {
        #expect(
            problems("{save_restore: {layer: L1, at: 1s}}", workload: "{name: random-access, suite: micro}") == ["workloads[0]"])
        #expect(
            problems(
                "{save_restore: {layer: L1, at: 1s}}", workload: "{name: random-access, suite: micro, params: {progress: 0}}")
                == ["workloads[0]"])
        #expect(problems("{}", workload: "{name: random-access, suite: micro}").isEmpty, "only with save_restore")
    }

    @Test func detachableAndThisMachineOnlyWhereTheyMeanSomething() {
        #expect(problems("{}", l0: "{this_machine: true, detachable: true}") == ["configurations.a.layers.L0.detachable"])
        #expect(
            problems("{}", l1: "this_machine: true") == ["configurations.a.layers.L1.this_machine"], "only L0 is this machine")
        // A detachable guest hosts nothing: not an L1 with an L2 inside.
        let yaml = """
            name: t
            baseline: a
            configurations:
              a:
                platform: qemu
                layers:
                  L0: {kernel: /vmlinuz, vcpus: 2, memory: 2GiB}
                  L1: {kernel: /vmlinuz, vcpus: 1, memory: 1GiB, detachable: true}
                  L2: {kernel: /vmlinuz, vcpus: 1, memory: 512MiB}
            workloads:
              - {name: random-access, suite: micro}
            """
        #expect(throws: ConfigError.self) { try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog()) }
        do {
            _ = try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog())
        } catch {
            #expect(error.problems.map(\.keyPath) == ["configurations.a.layers.L1.detachable"])
            #expect(error.description.hasPrefix("exp.yaml"), "the error names the file: \(error.description)")
        }
    }
}
