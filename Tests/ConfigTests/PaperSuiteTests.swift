import Foundation
import NestBenchModel
import Testing

@testable import NestBenchConfig

/// Suites/xgemini-eval.yaml needs the qemu platform and the tailbench/parsec suites, which other
/// issues add. This test checks what exists today: everything outside `configurations` (workloads,
/// conditions, repetitions, analysis) validates against the current schema, with a catalog that
/// accepts every suite; the configurations are checked fully once the loader accepts them.
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

    @Test func validatesWhatTheCurrentSchemaKnows() throws {
        do {
            let loaded = try ExperimentLoader.load(path: Self.path, catalog: AnySuite())
            let e = loaded.experiment
            #expect(e.baseline == "vanilla")
            #expect(Set(e.configurations.map(\.name)) == ["vanilla", "dual-gemini", "xgemini"])
            check(e)
        } catch {
            let outside = error.problems.filter { !$0.keyPath.hasPrefix("configurations.") }
            #expect(outside.isEmpty, "\(outside.map(\.description))")
            #expect(error.problems.allSatisfy { $0.keyPath.hasPrefix("configurations.") && $0.keyPath.hasSuffix(".platform") })
            // Parse the rest with the configurations replaced by local ones.
            var text = try String(contentsOfFile: Self.path, encoding: .utf8)
            text = text.replacingOccurrences(of: "platform: qemu", with: "platform: local")
            check(try ExperimentLoader.parse(text, file: Self.path, catalog: AnySuite()))
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
        let pairs = Set(e.workloads.filter { $0.label.contains("+") }.map { String($0.label.split(separator: "/")[0]) })
        #expect(pairs == ["img-dnn+img-dnn", "img-dnn+silo", "moses+silo"])
        #expect(e.conditions.map(\.name) == ["clean", "fragmented"])
        #expect(e.conditions[1].fragmentation?.targetFMFI == 0.9)
        #expect(e.repetitions.min == 5 && e.repetitions.max == 10)
    }
}
