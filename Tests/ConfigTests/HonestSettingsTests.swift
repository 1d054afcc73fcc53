import Foundation
import NestBenchModel
import Testing

@testable import NestBenchConfig

@Suite("Experiment files: boots, reference values, environment")
struct HonestSettingsTests {
    func parse(_ yaml: String) throws(ConfigError) -> Experiment {
        try ExperimentLoader.parse(yaml, file: "exp.yaml", catalog: FakeCatalog())
    }

    func problems(_ yaml: String) -> [ConfigProblem] {
        do {
            _ = try parse(yaml)
            return []
        } catch {
            return error.problems
        }
    }

    @Test func bootsReferenceAndEnvironmentLoad() throws {
        let yaml =
            valid.replacingOccurrences(of: "target_ci: 0.05}", with: "target_ci: 0.05, boots: 3}") + """

                reference:
                  source: "paper §5"
                  values:
                    - {figure: fig11, configuration: always, condition: clean, change: +16.5%, label: throughput}
                    - {figure: fig12, configuration: always, change: −35.0%}
                    - {figure: fig16, configuration: always, ratio: 1.04}
                environment: {aslr: off, ksm: on, governor: performance, kernel_log: fail}
                """
        let e = try parse(yaml)
        #expect(e.repetitions.boots == 3 && e.repetitions.stackBoots == 3)
        let values = try #require(e.reference?.values)
        #expect(e.reference?.source == "paper §5")
        #expect(values.map(\.figure) == ["fig11", "fig12", "fig16"])
        #expect(abs(values[0].ratio - 1.165) < 1e-12 && values[0].condition == "clean" && values[0].label == "throughput")
        #expect(abs(values[1].ratio - 0.65) < 1e-12 && values[1].condition == nil)
        #expect(values[2].ratio == 1.04)
        let env = try #require(e.environment)
        #expect(env.aslr == "off" && env.ksm == "on" && env.governor == "performance" && env.kernelLogFails)
        #expect(env.numaBalancing == nil && env.isExplicit("ksm") && !env.isExplicit("numa_balancing"))
    }

    @Test func badValuesNameTheirKeys() {
        let yaml =
            valid.replacingOccurrences(of: "target_ci: 0.05}", with: "target_ci: 0.05, boots: 4}") + """

                reference:
                  values:
                    - {figure: fig11, configuration: nope, change: "16.5"}
                environment: {aslr: maybe, kernel_log: panic}
                """
        let p = problems(yaml).map { "\($0.keyPath): \($0.message)" }
        #expect(p.contains { $0.hasPrefix("repetitions.boots") && $0.contains("larger than min (3)") }, "\(p)")
        #expect(p.contains { $0.hasPrefix("reference") && $0.contains("\"source\"") }, "\(p)")
        #expect(p.contains { $0.contains("values[0].change") && $0.contains("percentage") }, "\(p)")
        #expect(p.contains { $0.hasPrefix("environment.aslr") && $0.contains("off, on or leave") }, "\(p)")
        #expect(p.contains { $0.hasPrefix("environment.kernel_log") }, "\(p)")
    }
}
