import Foundation
import NestBenchCollectors
import NestBenchModel
import NestBenchProcess
import NestBenchStats
import NestBenchWorkloads

/// Perturbation of the micro by the collectors (perf counters + proxies, vmstat, memory monitor
/// at 250 ms) — on vs off, interleaved in random order, ratio of ops/s with a Fieller 95% CI;
/// target < 1% — and the monitor's cost per sample against reading /proc/buddyinfo alone.
enum CollectorsBenchmark {
    static func run() async throws {
        let binary = try await HarnessLocator().program("micro/nb-micro.c", name: "nb-micro")
        let spec = WorkloadSpec(suite: "micro", name: "random-access", params: ["size": "256MiB", "ops": "20000000"])
        let dir = NSTemporaryDirectory() + "nestbench-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let process = ProcessSpec(
            program: binary, arguments: MicroAdapter.arguments(for: spec), environment: ["PATH": "/usr/bin:/bin"],
            workingDirectory: dir, cpus: [0], stdoutPath: dir + "/out", timeoutSeconds: 120)
        let collectors = StandardCollectors.make()

        func once(_ on: Bool) async throws -> Double {
            let child = try ProcessRunner.start(process)
            let sessions = on ? collectors.map { $0.attach(pid: child.pid) } : []
            try child.release()
            sessions.forEach { $0.started() }
            let outcome = await child.wait()
            for s in sessions { _ = s.finish(outcome) }
            let text = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
            guard outcome.succeeded,
                let ops = MetricLines.parse(text, source: "bench").first(where: { $0.name == "ops_per_sec" })?.value
            else { throw BenchmarkFailure(message: "nb-micro failed: \(outcome.describe(timeout: 120))") }
            return ops
        }

        _ = try await once(false)
        var withCollectors: [Double] = []
        var without: [Double] = []
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<12 {
            for on in [true, false].shuffled(using: &generator) {
                let ops = try await once(on)
                if on { withCollectors.append(ops) } else { without.append(ops) }
            }
        }
        let r = Statistics.fiellerRatio(withCollectors, without)
        let ci = r.lower.flatMap { lo in r.upper.map { String(format: "[%.4f, %.4f]", lo, $0) } } ?? "(unbounded)"
        print(
            String(format: "micro ops/s, collectors off (reference): mean %.4g (n=%d)", Statistics.mean(without), without.count))
        print(
            String(format: "micro ops/s, collectors on: mean %.4g (n=%d)", Statistics.mean(withCollectors), withCollectors.count))
        print(String(format: "ratio on/off: %.4f %@ 95%% CI; target: perturbation < 1%%", r.ratio, ci))

        let sources = MonitorSources()
        let pid = getpid()
        let read = measure(iterations: 500) { _ = KernelFile.read("/proc/buddyinfo") }
        let sample = measure(iterations: 500) { _ = sources.read(pid: pid, order: 9) }
        print(describe("read /proc/buddyinfo (reference)", read))
        print(describe("one monitor sample (buddyinfo+FMFI, meminfo, vmstat, smaps_rollup)", sample))
        print(
            String(
                format: "ratio to reference: %.2fx; at 250 ms a sample costs %.3f%% of one CPU", median(sample) / median(read),
                median(sample) / 0.25 * 100))
    }
}

struct BenchmarkFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
