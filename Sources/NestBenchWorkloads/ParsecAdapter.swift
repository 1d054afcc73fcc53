import Foundation
import NestBenchModel
import NestBenchProcess

/// PARSEC 3.0 apps (Suites/parsec.yaml), run directly as parsecmgmt would or through parsecmgmt,
/// measured by the hooks' ROI time.
///
/// Metrics: `roi_seconds` (lower is better) and `roi_throughput` = 1 / roi_seconds (higher is
/// better, the analysis's primary PARSEC metric). A run without the ROI line is failed with the reason.
public struct ParsecAdapter: WorkloadAdapter {
    /// `parsec`, or the name of a suite file that runs its apps as PARSEC's (`runner: parsec`).
    public let suite: String
    let source: SuiteSource
    var definition: SuiteDefinition? { source.definition }
    var locator: SuiteLocator { source.locator }
    var environment: [String: String] { source.environment }
    var context: SuiteContext? { source.context }

    public init(
        locator: SuiteLocator = SuiteLocator(), environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.init(suite: "parsec", locator: locator, environment: environment)
    }

    /// The adapter of the suite file `<suite>.yaml` (its `runner:` is `parsec`).
    public init(suite: String, locator: SuiteLocator, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.suite = suite
        source = SuiteSource(name: suite, locator: locator, environment: environment)
    }

    public init(definition: SuiteDefinition, locator: SuiteLocator, environment: [String: String]) {
        suite = definition.suite
        source = SuiteSource(name: definition.suite, definition: definition, locator: locator, environment: environment)
    }

    /// The suite file's declarations for the app (`metrics:` of the suite, and of the app); none
    /// when the suite file or the app is missing.
    public func metricDeclarations(for spec: WorkloadSpec) -> [MetricDeclaration] {
        guard let definition, let app = definition.apps[spec.name] else { return [] }
        return definition.metrics(of: app)
    }

    public func problems(for spec: WorkloadSpec) -> [WorkloadProblem] {
        guard let context else { return [source.missing] }
        var problems = context.problems(for: spec)
        if problems.isEmpty, let app = context.definition.apps[spec.name], let size = spec.params["size"],
            app.args.arguments(size: size) == nil
        {
            problems.append(
                WorkloadProblem(key: "params.size", message: "\(spec.name) has no run configuration for size \(size)"))
        }
        return problems
    }

    /// Paths of one workload: binary, input archive (nil when the size has none).
    struct Paths {
        var binary: String
        var input: String?
        var parsecmgmt: String
    }

    func paths(_ spec: WorkloadSpec, app: SuiteApp, values: [String: String]) -> Paths? {
        guard let root = values["root"], let platform = values["platform"], let size = values["size"],
            let exec = app.exec
        else { return nil }
        let dir = "\(root)/\(app.dir)"
        let input = (app.inputSizes ?? []).contains(size) ? "\(dir)/inputs/input_\(size).tar" : nil
        return Paths(binary: "\(dir)/inst/\(platform)/\(exec)", input: input, parsecmgmt: "\(root)/bin/parsecmgmt")
    }

    /// The input archive (`parsec-sim`, …) that provides `size`, for fetch hints.
    func archive(providing size: String) -> String? {
        definition?.inputs.first { $0.value.provides?.contains(size) ?? true }?.key
    }

    public func unavailableReason(for spec: WorkloadSpec) -> String? {
        guard let context else { return source.missing.message }
        guard let app = context.definition.apps[spec.name] else { return "unknown parsec app \(spec.name)" }
        guard context.root(spec) != nil else { return context.rootHint }
        let values = context.values(spec, app: app, runDirectory: nil)
        guard let paths = paths(spec, app: app, values: values) else { return "\(spec.name): incomplete suite entry" }
        let config = (values["platform"] ?? "").split(separator: ".", maxSplits: 1).last.map(String.init) ?? "gcc-hooks"
        if !FileManager.default.isExecutableFile(atPath: paths.binary) {
            return
                "\(paths.binary): not built; build it with `\(paths.parsecmgmt) -a build -p \(app.package ?? spec.name) -c \(config)`"
        }
        if values["mode"] == "parsecmgmt", !FileManager.default.isExecutableFile(atPath: paths.parsecmgmt) {
            return "\(paths.parsecmgmt): missing; the suite root is not a PARSEC 3.0 tree (or use mode direct)"
        }
        if let input = paths.input, !FileManager.default.fileExists(atPath: input) {
            let size = values["size"] ?? ""
            if let archive = archive(providing: size), context.definition.inputs[archive] != nil,
                ["simsmall", "simmedium", "simlarge", "native"].contains(size)
            {
                return "\(input): input not fetched; run `nestbench fetch parsec --only \(spec.name)` (archive \(archive))"
            }
            return "\(input): input missing from the PARSEC tree (the core package ships the \(size) inputs)"
        }
        return nil
    }

    public func run(_ spec: WorkloadSpec, context runContext: WorkloadContext) async -> WorkloadResult {
        if let reason = unavailableReason(for: spec) { return WorkloadResult(status: .unavailable, reason: reason) }
        guard let context, let app = context.definition.apps[spec.name] else {
            return WorkloadResult(status: .unavailable, reason: source.loadError ?? "unknown app")
        }
        let run = runContext.runDirectory
        let values = context.values(spec, app: app, runDirectory: run)
        guard let paths = paths(spec, app: app, values: values), let root = values["root"] else {
            return WorkloadResult(status: .unavailable, reason: "\(spec.name): incomplete suite entry")
        }
        var environment = context.baseEnvironment()
        environment["PARSECDIR"] = root
        environment["PARSECPLAT"] = values["platform"]
        for (key, value) in app.env ?? [:] { environment[key] = Placeholders.expand(value, values) }
        environment.merge(spec.environment) { $1 }

        let program: String
        let arguments: [String]
        if values["mode"] == "parsecmgmt" {
            let config = (values["platform"] ?? "").split(separator: ".", maxSplits: 1).last.map(String.init) ?? "gcc-hooks"
            program = paths.parsecmgmt
            arguments = [
                "-a", "run", "-p", app.package ?? spec.name, "-c", config, "-i", values["size"] ?? "",
                "-n", values["threads"] ?? "1", "-d", run,
            ]
        } else {
            // parsecmgmt's run-directory set-up: a fresh directory with the input archive unpacked.
            if let input = paths.input {
                let untar = ProcessSpec(
                    program: "tar", arguments: ["-x", "-f", input, "-C", run], environment: environment,
                    workingDirectory: run, stdoutPath: run + "/untar.log", stderrPath: run + "/untar.log",
                    timeoutSeconds: 1800)
                do {
                    let outcome = try await ProcessRunner.run(untar)
                    guard outcome.succeeded else {
                        return WorkloadResult(
                            status: .failed,
                            reason: "unpacking \(input) into \(run): tar \(outcome.describe(timeout: 1800))",
                            outputTail: MetricLines.tail(of: run + "/untar.log"))
                    }
                } catch {
                    return WorkloadResult(status: .failed, reason: "unpacking \(input): \(error.description)")
                }
            }
            program = paths.binary
            arguments = (app.args.arguments(size: values["size"]) ?? []).map { Placeholders.expand($0, values) }
        }
        let stdout = run + "/stdout.txt"
        let stderr = run + "/stderr.txt"
        let process = ProcessSpec(
            program: program, arguments: arguments, environment: environment, workingDirectory: run, cpus: spec.cpus,
            stdoutPath: stdout, stderrPath: stderr, timeoutSeconds: spec.timeoutSeconds)
        let invocation = Invocation(
            argv: [program] + arguments, environment: environment, workingDirectory: run, cpus: spec.cpus)
        let measured: MeasuredOutcome
        do {
            measured = try await runContext.launchMeasured(process)
        } catch {
            return WorkloadResult(status: .failed, reason: error.description, invocations: [invocation])
        }
        let outcome = measured.outcome
        let output = ((try? String(contentsOfFile: stdout, encoding: .utf8)) ?? "")
        var result = WorkloadResult(
            status: .ok, metrics: measured.metrics, invocations: [invocation], exitStatus: outcome.exitStatus,
            signal: outcome.signal)
        let roi = ParsecLog.parse(output).last { $0.succeeded } ?? ParsecLog.parse(output).last
        if !outcome.succeeded {
            result.status = .failed
            var reason = "\(spec.name): \(outcome.describe(timeout: spec.timeoutSeconds))"
            if roi?.succeeded != true { reason += "; no ROI time" }
            result.reason = reason
            result.outputTail = MetricLines.tail(of: stderr) ?? MetricLines.tail(of: stdout)
            return result
        }
        guard let roi, roi.succeeded, let seconds = roi.seconds else {
            result.status = .failed
            result.reason = "\(spec.name): \(roi?.failure ?? "no ROI time: the program printed nothing")"
            result.outputTail = MetricLines.tail(of: stdout)
            return result
        }
        result.metrics =
            [
                Metric(
                    name: "roi_seconds", value: seconds, unit: "s", polarity: .lowerIsBetter, source: "workload",
                    detail: "[HOOKS] Total time spent in ROI"),
                Metric(
                    name: "roi_throughput", value: 1 / seconds, unit: "1/s", polarity: .higherIsBetter, source: "workload",
                    detail: "1 / roi_seconds"),
            ] + measured.metrics
        return result
    }
}
