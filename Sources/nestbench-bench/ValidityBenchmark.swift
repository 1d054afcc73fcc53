import Foundation
import NestBenchAnalysis
import NestBenchModel
import NestBenchProcess
import NestBenchStats
import NestBenchWorkloads

/// Validity of the statistics on this machine's real noise, with the compute micro (each run
/// measured live, pinned to CPU 0, in a seeded interleaved order):
///
/// - **A/A false-positive rate**: 40 experiments of A vs A (the same program), 5 repetitions per
///   side, judged by the same `Comparator.judge` as reports; the share flagged different
///   (verdict ≠ same) against its reference, the nominal α = 5% (goal ≤ 5%), with a Wilson 95% CI.
/// - **Adaptive vs fixed repetitions**: a known effect (+3%, multiplied into the candidate's
///   measured ops/s, so the noise is real and the truth is known); the adaptive rule (min 3,
///   one more block while the ratio CI is wider than ±1%, max 12) against fixed 5 and fixed 12
///   per side (the references): runs used, and the share that reached the right verdict (better).
enum ValidityBenchmark {
    static let ops = "40000000"

    static func run() async throws {
        let binary = try await HarnessLocator().program("micro/nb-micro.c", name: "nb-micro")
        let dir = NSTemporaryDirectory() + "nestbench-validity-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spec = WorkloadSpec(suite: "micro", name: "compute", params: ["ops": ops])
        let process = ProcessSpec(
            program: binary, arguments: MicroAdapter.arguments(for: spec), environment: ["PATH": "/usr/bin:/bin"],
            workingDirectory: dir, cpus: [0], stdoutPath: dir + "/out", timeoutSeconds: 120)
        let once: () async throws -> Double = {
            let child = try ProcessRunner.start(process)
            try child.release()
            let outcome = await child.wait()
            let text = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
            guard outcome.succeeded,
                let v = MetricLines.parse(text, source: "bench").first(where: { $0.name == "ops_per_sec" })?.value
            else { throw BenchmarkFailure(message: "nb-micro failed: \(outcome.describe(timeout: 120))") }
            return v
        }
        _ = try await once()
        let start = Date()
        try await aa(once: once)
        try await adaptiveVersusFixed(once: once)
        print(String(format: "validity: %.0f s in all (load average now %@)", Date().timeIntervalSince(start), load()))
    }

    static func load() -> String {
        (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)).map {
            $0.split(separator: " ").prefix(3).joined(separator: " ")
        } ?? "?"
    }

    static let metric = Metric(name: "ops_per_sec", value: nil, unit: "ops/s", polarity: .higherIsBetter, source: "bench")
    static let settings = AnalysisSettings(alpha: 0.05, minEffect: 0.01)

    static func values(_ v: [Double], _ prefix: String) -> MetricValues {
        MetricValues(values: v, groups: v.indices.map { "\(prefix)\($0)" }, sample: metric)
    }

    /// Wilson score interval for k of n (95%).
    static func wilson(_ k: Int, _ n: Int) -> (Double, Double) {
        let z = 1.959964
        let p = Double(k) / Double(n)
        let d = 1 + z * z / Double(n)
        let c = (p + z * z / (2 * Double(n))) / d
        let h = z * sqrt(p * (1 - p) / Double(n) + z * z / (4 * Double(n * n))) / d
        return (max(0, c - h), min(1, c + h))
    }

    static func aa(once: () async throws -> Double, experiments: Int = 40, repetitions: Int = 5) async throws {
        var generator = SeededGenerator(seed: 2026)
        var flagged = 0
        var verdicts: [String: Int] = [:]
        for _ in 0..<experiments {
            var a: [Double] = []
            var b: [Double] = []
            for _ in 0..<repetitions {
                for side in [0, 1].shuffled(using: &generator) {
                    let v = try await once()
                    if side == 0 { a.append(v) } else { b.append(v) }
                }
            }
            let j = Comparator.judge(
                candidate: values(b, "b"), baseline: values(a, "a"), polarity: .higherIsBetter, settings: settings)
            verdicts[j.verdict, default: 0] += 1
            if j.verdict != "same" { flagged += 1 }
        }
        let (lo, hi) = wilson(flagged, experiments)
        let rate = Double(flagged) / Double(experiments)
        print(
            String(
                format:
                    "A/A false-positive rate: %d of %d experiments flagged different = %.1f%% (Wilson 95%% CI [%.1f%%, %.1f%%]); "
                    + "reference: nominal α = 5.0%%; goal ≤ 5%%: %@", flagged, experiments, rate * 100, lo * 100, hi * 100,
                rate <= 0.05 ? "met" : (lo > 0.05 ? "NOT met (the CI is above 5%)" : "not met by the point estimate")))
        print("A/A verdicts: " + verdicts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
    }

    static func adaptiveVersusFixed(once: () async throws -> Double, experiments: Int = 12) async throws {
        let effect = 1.03
        let (minimum, maximum, target) = (3, 12, 0.01)
        var generator = SeededGenerator(seed: 77)
        struct Outcome {
            var runs = 0
            var right = 0
            var n = 0
        }
        var adaptive = Outcome()
        var fixed5 = Outcome()
        var fixed12 = Outcome()
        for _ in 0..<experiments {
            // One interleaved sequence of `maximum` blocks serves all three policies (paired designs).
            var a: [Double] = []
            var b: [Double] = []
            var stoppedAt: Int?
            for block in 1...maximum {
                for side in [0, 1].shuffled(using: &generator) {
                    let v = try await once()
                    if side == 0 { a.append(v) } else { b.append(v * effect) }
                }
                if stoppedAt == nil, block >= minimum {
                    let c = Comparator.comparison(
                        workload: "compute", condition: "clean", configuration: "b", metric: "ops_per_sec",
                        candidate: values(b, "b"), baseline: values(a, "a"), settings: settings)
                    let wide = c.degenerate || (AdaptiveRepetitions.relativeHalfWidth(c).map { $0 > target } ?? true)
                    if !wide { stoppedAt = block }
                }
            }
            func judge(_ n: Int, into o: inout Outcome) {
                let j = Comparator.judge(
                    candidate: values(Array(b.prefix(n)), "b"), baseline: values(Array(a.prefix(n)), "a"),
                    polarity: .higherIsBetter, settings: settings)
                o.runs += 2 * n
                o.n += 1
                if j.verdict == "better" { o.right += 1 }
            }
            judge(stoppedAt ?? maximum, into: &adaptive)
            judge(5, into: &fixed5)
            judge(maximum, into: &fixed12)
        }
        func line(_ name: String, _ o: Outcome) -> String {
            String(
                format: "%@: %.1f runs per experiment, right verdict (better) in %d of %d", name,
                Double(o.runs) / Double(o.n), o.right, o.n)
        }
        print("adaptive vs fixed repetitions on a known +3% effect (compute micro, real noise, \(experiments) experiments):")
        print("  " + line("adaptive (min 3, ±1% target, max 12)", adaptive))
        print("  " + line("reference fixed 5 per side", fixed5))
        print("  " + line("reference fixed 12 per side", fixed12))
    }
}
