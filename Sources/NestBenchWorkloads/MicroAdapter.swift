import Foundation
import NestBenchCollectors
import NestBenchModel
import NestBenchProcess
import NestBenchStats

/// The built-in microbenchmarks of `Harness/micro/nb-micro.c`.
///
/// - `random-access`: the xGemini paper's Fig. 7 benchmark (TLB-sensitive).
/// - `sequential`: the same buffer walked in order (TLB-insensitive control).
/// - `compute`: arithmetic only (overhead control).
public struct MicroAdapter: WorkloadAdapter {
    public let suite = "micro"
    public let harness: HarnessLocator

    struct App {
        var mode: String
        var params: [String: String]  // name → default
    }

    static let apps: [String: App] = [
        "random-access": App(
            mode: "random", params: ["size": "1GiB", "ops": "20000000", "thp": "default", "seed": "1", "progress": "0"]),
        "sequential": App(
            mode: "sequential", params: ["size": "1GiB", "ops": "200000000", "thp": "default", "progress": "0"]),
        "compute": App(mode: "compute", params: ["ops": "200000000"]),
    ]

    public init(harness: HarnessLocator) {
        self.harness = harness
    }

    /// The `metric` lines of nb-micro: throughput is the headline (Fig. 11).
    public static let metrics: [MetricDeclaration] = [
        MetricDeclaration(
            "ops_per_sec", unit: "ops/s", polarity: .higherIsBetter, center: .hmean, role: .primary,
            figures: [.fig11, .fig14], description: "operations per second over the timed loop"),
        MetricDeclaration("ns_per_op", unit: "ns", polarity: .lowerIsBetter, center: .amean, role: .secondary),
        MetricDeclaration(
            "touch_seconds", unit: "s", polarity: .lowerIsBetter, center: .amean, role: .diagnostic,
            description: "time to fault in the buffer"),
        MetricDeclaration(
            "anon_huge_bytes", unit: "bytes", polarity: .neutral, center: .amean, role: .diagnostic,
            description: "AnonHugePages of the buffer after the loop"),
    ]

    public func metricDeclarations(for spec: WorkloadSpec) -> [MetricDeclaration] { Self.metrics }

    public func problems(for spec: WorkloadSpec) -> [WorkloadProblem] {
        guard let app = Self.apps[spec.name] else {
            return [
                WorkloadProblem(
                    key: "name",
                    message: "unknown micro workload \"\(spec.name)\" (known: \(Self.apps.keys.sorted().joined(separator: ", ")))"
                )
            ]
        }
        var problems: [WorkloadProblem] = []
        for (key, value) in spec.params.sorted(by: { $0.key < $1.key }) {
            guard app.params[key] != nil else {
                problems.append(
                    WorkloadProblem(
                        key: "params.\(key)",
                        message:
                            "unknown parameter \"\(key)\" for \(spec.name) (known: \(app.params.keys.sorted().joined(separator: ", ")))"
                    ))
                continue
            }
            switch key {
            case "size":
                if (Units.bytes(value) ?? 0) < 4096 {
                    problems.append(
                        WorkloadProblem(
                            key: "params.size", message: "expected a size of at least 4KiB such as 4GiB, found \"\(value)\""))
                }
            case "ops":
                if (UInt64(value) ?? 0) == 0 {
                    problems.append(
                        WorkloadProblem(key: "params.ops", message: "expected a positive whole number, found \"\(value)\""))
                }
            case "thp":
                if !["huge", "nohuge", "default"].contains(value) {
                    problems.append(
                        WorkloadProblem(
                            key: "params.thp",
                            message: "expected huge (MADV_HUGEPAGE), nohuge (MADV_NOHUGEPAGE) or default, found \"\(value)\""))
                }
            case "progress":
                if !((Double(value) ?? -1) >= 0 && (Double(value) ?? 0) <= 3600) {
                    problems.append(
                        WorkloadProblem(
                            key: "params.progress",
                            message: "expected an interval in seconds (0 = off, at most 3600) such as 0.5, found \"\(value)\""))
                }
            case "seed":
                if UInt64(value) == nil {
                    problems.append(WorkloadProblem(key: "params.seed", message: "expected a whole number, found \"\(value)\""))
                }
            default: break
            }
        }
        return problems
    }

    public func unavailableReason(for spec: WorkloadSpec) -> String? {
        harness.harnessDirectory == nil ? "cannot find NestBench's Harness/ directory (set NESTBENCH_HARNESS)" : nil
    }

    /// The nb-micro arguments for a spec (defaults filled in).
    public static func arguments(for spec: WorkloadSpec) -> [String] {
        guard let app = apps[spec.name] else { return [] }
        var args = [app.mode]
        for key in app.params.keys.sorted() {
            var value = spec.params[key] ?? app.params[key]!
            if key == "size", let bytes = Units.bytes(value) { value = String(bytes) }
            if key == "progress" && Double(value) == 0 { continue }  // off: nb-micro's loop unchanged
            args += ["--\(key)", value]
        }
        return args
    }

    public func run(_ spec: WorkloadSpec, context: WorkloadContext) async -> WorkloadResult {
        let binary: String
        do {
            binary = try await harness.program("micro/nb-micro.c", name: "nb-micro")
        } catch {
            return WorkloadResult(status: .unavailable, reason: error.description)
        }
        let stdout = context.runDirectory + "/stdout.txt"
        let stderr = context.runDirectory + "/stderr.txt"
        let environment = ["PATH": "/usr/bin:/bin"].merging(spec.environment) { $1 }
        let process = ProcessSpec(
            program: binary, arguments: Self.arguments(for: spec), environment: environment,
            workingDirectory: context.runDirectory, cpus: spec.cpus, stdoutPath: stdout, stderrPath: stderr,
            timeoutSeconds: spec.timeoutSeconds)
        let invocation = Invocation(
            argv: [binary] + process.arguments, environment: environment, workingDirectory: context.runDirectory,
            cpus: spec.cpus)
        let measured: MeasuredOutcome
        do {
            measured = try await context.launchMeasured(process)
        } catch {
            return WorkloadResult(status: .failed, reason: error.description, invocations: [invocation])
        }
        let outcome = measured.outcome
        let output = (try? String(contentsOfFile: stdout, encoding: .utf8)) ?? ""
        let own = MetricLines.parse(output, source: "workload")
        var result = WorkloadResult(
            status: .ok, metrics: own + measured.metrics, invocations: [invocation], exitStatus: outcome.exitStatus,
            signal: outcome.signal)
        // With params.progress: the timeline `progress.ops_per_sec`, each interval's rate at its
        // end (milliseconds since the timed loop began, not since the process started).
        let intervals = Self.progress(output)
        result.samples = intervals.map {
            TimelineSample(tMillis: Int64(($0.end * 1000).rounded()), name: "progress.ops_per_sec", value: $0.rate)
        }
        result.progress = Self.progressReport(output)
        if !outcome.succeeded {
            result.status = .failed
            result.reason = "nb-micro: \(outcome.describe(timeout: spec.timeoutSeconds))"
            result.outputTail = MetricLines.tail(of: stderr)
        } else if !own.contains(where: { $0.name == "ops_per_sec" }) {
            result.status = .failed
            result.reason = "nb-micro exited 0 but printed no ops_per_sec metric"
            result.outputTail = MetricLines.tail(of: stdout)
        }
        return result
    }

    /// The progress nb-micro reported (its intervals and the loop's clock start); nil without
    /// either (no --progress).
    public static func progressReport(_ output: String) -> WorkloadProgress? {
        let intervals = progress(output)
        let clockStart = progressClockStart(output)
        return clockStart == nil && intervals.isEmpty ? nil : WorkloadProgress(clockStart: clockStart, intervals: intervals)
    }

    /// nb-micro's `info progress_clock_start C` (its CLOCK_MONOTONIC when the timed loop began,
    /// seconds), printed with --progress; nil when absent.
    public static func progressClockStart(_ output: String) -> Double? {
        for line in output.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 3, f[0] == "info", f[1] == "progress_clock_start", let c = Double(f[2]) { return c }
        }
        return nil
    }

    /// nb-micro's `progress T OPS DT` lines as intervals (T: seconds since the timed loop began).
    public static func progress(_ output: String) -> [Responsiveness.Interval] {
        output.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count == 4, f[0] == "progress", let t = Double(f[1]), let ops = Double(f[2]), let dt = Double(f[3]),
                dt > 0
            else { return nil }
            return Responsiveness.Interval(end: t, seconds: dt, operations: ops)
        }
    }
}
