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
        /// Where a hooks build's `libhooks` is installed for this platform.
        var hooksLibrary: String
    }

    func paths(_ spec: WorkloadSpec, app: SuiteApp, values: [String: String]) -> Paths? {
        guard let root = values["root"], let platform = values["platform"], let size = values["size"],
            let exec = app.exec
        else { return nil }
        let dir = "\(root)/\(app.dir)"
        let input = (app.inputSizes ?? []).contains(size) ? "\(dir)/inputs/input_\(size).tar" : nil
        return Paths(
            binary: "\(dir)/inst/\(platform)/\(exec)", input: input, parsecmgmt: "\(root)/bin/parsecmgmt",
            hooksLibrary: "\(root)/pkgs/libs/hooks/inst/\(platform)/lib")
    }

    /// The shared hooks library of a gcc-hooks build (`libhooks.so*`), nil when the platform's
    /// hooks are not a shared library (a static `libhooks.a`, or no hooks build).
    static func sharedHooks(in directory: String) -> String? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        // The name the loader looks for (the SONAME libhooks.so.0), else any libhooks.so*.
        let name = names.contains("libhooks.so.0") ? "libhooks.so.0" : names.sorted().first { $0.hasPrefix("libhooks.so") }
        return name.map { "\(directory)/\($0)" }
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
        guard let platform = ParsecPlatform(values["platform"] ?? "") else {
            return
                "params.platform \"\(values["platform"] ?? "")\": not a PARSEC platform <arch>-<os>.<build config> (e.g. amd64-linux.gcc-hooks)"
        }
        let config = platform.config
        let fm = FileManager.default
        if !fm.isExecutableFile(atPath: paths.binary) {
            if fm.fileExists(atPath: paths.binary) {
                return "\(paths.binary): not executable (the tree lost its execute bits); fix it with `chmod +x \(paths.binary)`"
            }
            return
                "\(paths.binary): not built; build it with `\(paths.parsecmgmt) -a build -p \(app.package ?? spec.name) -c \(config)`"
        }
        if config.contains("hooks"), Self.sharedHooks(in: paths.hooksLibrary) == nil,
            !fm.fileExists(atPath: paths.hooksLibrary + "/libhooks.a")
        {
            return
                "\(paths.hooksLibrary): no hooks library (libhooks.so.0 or libhooks.a) for platform \(platform.name); build it with `\(paths.parsecmgmt) -a build -p parsec.hooks -c \(config)`"
        }
        if values["mode"] == "parsecmgmt" {
            if fm.fileExists(atPath: paths.parsecmgmt) && !fm.isExecutableFile(atPath: paths.parsecmgmt) {
                return "\(paths.parsecmgmt): not executable; fix it with `chmod +x \(paths.parsecmgmt)` (or use mode direct)"
            }
            if !fm.isExecutableFile(atPath: paths.parsecmgmt) {
                return "\(paths.parsecmgmt): missing; the suite root is not a PARSEC 3.0 tree (or use mode direct)"
            }
            if platform.extension != nil {
                return
                    "params.platform \(platform.name): parsecmgmt mode takes <arch>-<os>.<build config> without an extension (or use mode direct)"
            }
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
        guard let platform = ParsecPlatform(values["platform"] ?? "") else {
            return WorkloadResult(status: .unavailable, reason: "\(spec.name): bad platform")
        }
        var environment = context.baseEnvironment()
        var provenance: [String: String] = ["parsec.platform": platform.name, "parsec.mode": values["mode"] ?? "direct"]
        environment["PARSECDIR"] = root
        for (key, value) in app.env ?? [:] { environment[key] = Placeholders.expand(value, values) }
        environment.merge(spec.environment) { $1 }

        let program: String
        let arguments: [String]
        if values["mode"] == "parsecmgmt" {
            // parsecmgmt 3.0 appends `-c CONFIG` to $PARSECPLAT (or to the <arch>-<os> it detects):
            // it gets the <arch>-<os> part only, never the full platform.
            environment["PARSECPLAT"] = platform.hostOS
            program = paths.parsecmgmt
            arguments = [
                "-a", "run", "-p", app.package ?? spec.name, "-c", platform.config, "-i", values["size"] ?? "",
                "-n", values["threads"] ?? "1", "-d", run,
            ]
        } else {
            environment["PARSECPLAT"] = platform.name
            // A gcc-hooks build links the hooks as a shared library: the loader must find it, as
            // parsecmgmt's gcc-hooks.bldconf arranges with LD_LIBRARY_PATH.
            if let library = Self.sharedHooks(in: paths.hooksLibrary) {
                let inherited = environment["LD_LIBRARY_PATH"].map { ":" + $0 } ?? ""
                environment["LD_LIBRARY_PATH"] = paths.hooksLibrary + inherited
                provenance["parsec.hooks_library"] = library
            }
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
            signal: outcome.signal, provenance: provenance)
        let roi = ParsecLog.parse(output).last { $0.succeeded } ?? ParsecLog.parse(output).last
        let lastError = Self.lastLine(of: stderr)
        if !outcome.succeeded {
            result.status = .failed
            var reason = "\(spec.name): \(outcome.describe(timeout: spec.timeoutSeconds))"
            if let lastError { reason += " (\(lastError))" }
            if roi?.succeeded != true { reason += "; no ROI time" }
            if outcome.timedOut, values["mode"] == "parsecmgmt", !output.contains("[PARSEC] Running") {
                reason += "; \(Self.parsecmgmtStartupAdvice)"
            }
            if outcome.exitStatus == 127, lastError?.contains("libhooks") == true {
                reason +=
                    "; the hooks library is not where the binary looks: build parsec.hooks for platform \(platform.name) under \(root)"
            }
            result.reason = reason
            result.outputTail = MetricLines.tail(of: stderr) ?? MetricLines.tail(of: stdout)
            return result
        }
        // A ROI printed as zero (canneal test/simdev on a 1 ms tree): the program ran fine, the
        // ROI is below what the line can show. A warning, not a failure; no number is derived.
        if let roi, roi.seconds == 0, let resolution = roi.resolution {
            let why = "ROI printed as 0 s: below the printed resolution (\(resolution) s); use a larger input size"
            result.provenance["parsec.roi_resolution_s"] = "\(resolution)"
            result.provenance["warning.roi_resolution"] = why
            result.metrics =
                [
                    Metric.unavailable("roi_seconds", unit: "s", polarity: .lowerIsBetter, source: "workload", reason: why),
                    Metric.unavailable(
                        "roi_throughput", unit: "1/s", polarity: .higherIsBetter, source: "workload", reason: why),
                    Metric(
                        name: "roi_resolution_seconds", value: resolution, unit: "s", polarity: .neutral, source: "workload",
                        detail: "resolution of the printed ROI time (10^-decimals)"),
                ] + measured.metrics
            return result
        }
        guard let roi, roi.succeeded, let seconds = roi.seconds else {
            result.status = .failed
            var reason = "\(spec.name): \(roi?.failure ?? "no ROI time: the program printed nothing")"
            // parsecmgmt exits 0 after its own errors ("[PARSEC] Error: Binary … cannot be found"):
            // ParsecLog names them; otherwise the program's last complaint.
            if roi?.failure?.contains("parsecmgmt did not run") != true, let lastError { reason += " (\(lastError))" }
            result.reason = reason
            result.outputTail = MetricLines.tail(of: stdout)
            return result
        }
        if let resolution = roi.resolution {
            result.provenance["parsec.roi_resolution_s"] = "\(resolution)"
            if let warning = roi.resolutionWarning { result.provenance["warning.roi_resolution"] = warning }
        }
        result.metrics =
            [
                Metric(
                    name: "roi_seconds", value: seconds, unit: "s", polarity: .lowerIsBetter, source: "workload",
                    detail: "[HOOKS] Total time spent in ROI"),
                Metric(
                    name: "roi_throughput", value: 1 / seconds, unit: "1/s", polarity: .higherIsBetter, source: "workload",
                    detail: "1 / roi_seconds"),
            ]
            + (roi.resolution.map {
                [
                    Metric(
                        name: "roi_resolution_seconds", value: $0, unit: "s", polarity: .neutral, source: "workload",
                        detail: "resolution of the printed ROI time (10^-decimals)")
                ]
            } ?? []) + measured.metrics
        return result
    }
}

extension ParsecAdapter {
    /// Why a parsecmgmt run can time out before the benchmark starts: parsecmgmt 3.0 starts a
    /// process per package configuration and alias (~300) before its first line, each an exec
    /// that costs seconds in an inner guest on an emulated host.
    static let parsecmgmtStartupAdvice =
        "parsecmgmt had not started the benchmark yet: it starts ~300 processes before it (one per package configuration), minutes in a nested guest on an emulated host; raise the workload's `timeout` or use mode direct"

    /// The last non-empty line of a file (the loader's or the program's last complaint).
    static func lastLine(of path: String) -> String? {
        MetricLines.tail(of: path, lines: 5)?.split(separator: "\n").last.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
    }
}

/// PARSECPLAT as parsecmgmt 3.0 builds it: `<arch>-<os>.<build config>[.<extension>]`. parsecmgmt
/// takes the first part from `$PARSECPLAT` (or detects it) and always appends `-c CONFIG`.
public struct ParsecPlatform: Sendable, Hashable {
    public var hostOS: String
    public var config: String
    public var `extension`: String?

    public init?(_ name: String) {
        let parts = name.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        hostOS = parts[0]
        config = parts[1]
        `extension` = parts.count > 2 ? parts[2] : nil
    }

    public var name: String { [hostOS, config, `extension`].compactMap { $0 }.joined(separator: ".") }
}
