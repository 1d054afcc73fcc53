import Foundation
import NestBenchModel
import Testing

@testable import NestBenchConfig

/// Suites/xgemini-eval.yaml loads against the current schema, its configurations included from
/// Suites/configurations/ with the kernel variables pointing at a readable file (any file stands in
/// for an image here; the preflight checks the knobs in the booted kernel).
@Suite("The paper's evaluation file")
struct PaperSuiteTests {
    struct AnySuite: WorkloadCatalog {
        func problems(for spec: WorkloadSpec) -> [WorkloadProblem] { [] }
    }

    static let path: String = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { dir.deleteLastPathComponent() }
        return dir.path + "/Suites/xgemini-eval.yaml"
    }()

    @Test func loadsWithItsIncludedConfigurations() throws {
        let image = Self.path
        let environment = [
            "GEMINI_KERNEL": image, "XGEMINI_HOST_KERNEL": image, "XGEMINI_GUEST_KERNEL": image,
            "NESTBENCH_KERNEL": image,
        ]
        let e = try ExperimentLoader.load(path: Self.path, catalog: AnySuite(), environment: environment).experiment
        #expect(e.baseline == "vanilla")
        #expect(e.configurations.map(\.name) == ["vanilla", "dual-gemini", "xgemini"])
        #expect(e.configurations.allSatisfy { $0.platform == .qemu && $0.layers.map(\.name) == ["L0", "L1", "L2"] })
        check(e)
    }

    @Test func unsetKernelVariablesAreNamed() {
        do {
            _ = try ExperimentLoader.load(path: Self.path, catalog: AnySuite(), environment: [:])
            Issue.record("expected errors for the unset kernel variables")
        } catch {
            #expect(error.description.contains("XGEMINI_HOST_KERNEL"), "\(error.description)")
        }
    }

    func check(_ e: Experiment) {
        let tailbench = e.workloads.filter { $0.suite == "tailbench" }
        let parsec = e.workloads.filter { $0.suite == "parsec" }
        #expect(Set(tailbench.map(\.name)) == ["img-dnn", "masstree", "moses", "silo", "specjbb", "sphinx", "xapian"])
        #expect(
            Set(parsec.map(\.name)) == [
                "canneal", "facesim", "raytrace", "streamcluster", "dedup", "x264", "splash2x.fft", "ferret",
            ])
        let pairs = e.workloads.filter { $0.colocated != nil }
        #expect(pairs.map(\.label) == ["img-dnn+img-dnn", "img-dnn+silo", "moses+silo"])
        #expect(
            pairs.map { $0.colocated?.map(\.label) ?? [] } == [
                ["img-dnn-1", "img-dnn-2"], ["img-dnn", "silo"], ["moses", "silo"],
            ])
        #expect(pairs.allSatisfy { $0.colocated?.allSatisfy { $0.suite == "tailbench" } == true })
        #expect(e.conditions.map(\.name) == ["clean", "fragmented"])
        #expect(e.conditions[1].fragmentation?.targetFMFI == 0.9)
        // The paper's §5 headlines, drawn beside our geometric means.
        let reference = e.reference?.values ?? []
        #expect(e.reference?.source.contains("§5") == true)
        #expect(reference.contains { $0.figure == "fig11" && $0.condition == "clean" && abs($0.ratio - 1.165) < 1e-9 })
        #expect(reference.contains { $0.figure == "fig12" && $0.condition == "fragmented" && abs($0.ratio - 0.462) < 1e-9 })
        #expect(reference.allSatisfy { $0.configuration == "xgemini" })
        #expect(e.repetitions.min == 5 && e.repetitions.max == 10)
    }
}
