import Foundation
import NestBenchModel
import NestBenchProcess

/// Tailbench apps (Suites/tailbench.yaml), integrated or loopback, measured from their `lats.bin`.
///
/// Metrics: mean/p50/p95/p99/max of sojourn, service and queue time (ms, from lats.bin),
/// `requests` (measured), `throughput_rps` (achieved: measured requests / wall seconds of the
/// measured process, from exec to exit) and `offered_qps` (TBENCH_QPS as configured).
public struct TailbenchAdapter: WorkloadAdapter {
    /// `tailbench`, or the name of a suite file that runs its apps as Tailbench's (`runner: tailbench`).
    public let suite: String
    let source: SuiteSource
    var definition: SuiteDefinition? { source.definition }
    var locator: SuiteLocator { source.locator }
    var environment: [String: String] { source.environment }
    var context: SuiteContext? { source.context }

    /// Every harness variable, all set explicitly on both processes.
    public static let harnessVariables = [
        "TBENCH_MAXREQS", "TBENCH_WARMUPREQS", "TBENCH_QPS", "TBENCH_MINSLEEPNS", "TBENCH_RANDSEED",
        "TBENCH_CLIENT_THREADS", "TBENCH_SERVER", "TBENCH_SERVER_PORT", "TBENCH_NCLIENTS",
    ]

    public init(
        locator: SuiteLocator = SuiteLocator(), environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.init(suite: "tailbench", locator: locator, environment: environment)
    }

    /// The adapter of the suite file `<suite>.yaml` (its `runner:` is `tailbench`).
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
        for key in spec.environment.keys.sorted() where key.hasPrefix("TBENCH_") {
            problems.append(
                WorkloadProblem(
                    key: "env",
                    message: "\(key) is set by NestBench from params (qps, requests, warmup_requests, …): remove it from env"))
        }
        if let app = context.definition.apps[spec.name], spec.params["mode"] == "loopback",
            app.server == nil || app.client == nil
        {
            problems.append(
                WorkloadProblem(
                    key: "params.mode", message: "\(spec.name) has no networked server/client binaries: use mode integrated"))
        }
        return problems
    }

    /// The programs a workload would run (binary paths), for readiness reports.
    func programs(_ spec: WorkloadSpec, app: SuiteApp, values: [String: String]) -> [String] {
        let mode = values["mode"] ?? "integrated"
        let names = mode == "loopback" ? [app.server, app.client] : [app.integrated]
        return names.compactMap { $0 }.map { name in
            let expanded = Placeholders.expand(name, values)
            return expanded.hasPrefix("/") ? expanded : "\(values["app"] ?? "")/\(expanded)"
        }
    }

    public func unavailableReason(for spec: WorkloadSpec) -> String? {
        guard let context else { return source.missing.message }
        guard let app = context.definition.apps[spec.name] else { return "unknown tailbench app \(spec.name)" }
        guard let root = context.root(spec) else { return context.rootHint }
        let values = context.values(spec, app: app, runDirectory: "/")
        if spec.name == "specjbb", (values["jdk"] ?? "").isEmpty {
            return "specjbb needs a JDK: set JDK_PATH (as in Tailbench's configs.sh) or params.jdk"
        }
        for program in programs(spec, app: app, values: values) where !FileManager.default.isExecutableFile(atPath: program) {
            return "\(program): not built; build it with `cd \(root)/\(app.dir) && ./build.sh` (Tailbench's build scripts)"
        }
        let required = (app.requires ?? []).map { Placeholders.expand($0, values) }
        return context.missingInputs(required, app: spec.name)
    }

    /// The harness variables of a run (both sides get all of them).
    static func harnessEnvironment(values: [String: String], port: Int?) -> [String: String] {
        [
            "TBENCH_MAXREQS": values["requests"] ?? "1",
            "TBENCH_WARMUPREQS": values["warmup_requests"] ?? "0",
            "TBENCH_QPS": values["qps"] ?? "1",
            "TBENCH_MINSLEEPNS": values["min_sleep_ns"] ?? "0",
            "TBENCH_RANDSEED": values["seed"] ?? "0",
            "TBENCH_CLIENT_THREADS": values["client_threads"] ?? "1",
            "TBENCH_SERVER": "127.0.0.1",
            "TBENCH_SERVER_PORT": String(port ?? 7000),
            "TBENCH_NCLIENTS": "1",
        ]
    }

    public func run(_ spec: WorkloadSpec, context runContext: WorkloadContext) async -> WorkloadResult {
        if let reason = unavailableReason(for: spec) { return WorkloadResult(status: .unavailable, reason: reason) }
        guard let context, let app = context.definition.apps[spec.name] else {
            return WorkloadResult(status: .unavailable, reason: source.loadError ?? "unknown app")
        }
        let run = runContext.runDirectory
        let values = context.values(spec, app: app, runDirectory: run)
        let loopback = values["mode"] == "loopback"
        do {
            try SuiteContext.runSetup(app.setup ?? [], values: values)
        } catch {
            return WorkloadResult(status: .failed, reason: "\(spec.name) set-up in \(run): \(error.description)")
        }
        var port: Int?
        if loopback {
            guard let free = Loopback.freePort() else {
                return WorkloadResult(status: .failed, reason: "no free TCP port on 127.0.0.1 for the loopback server")
            }
            port = free
        }
        var environment = context.baseEnvironment()
        for (key, value) in app.env ?? [:] { environment[key] = Placeholders.expand(value, values) }
        environment.merge(spec.environment) { $1 }
        environment.merge(Self.harnessEnvironment(values: values, port: port)) { $1 }

        let programs = programs(spec, app: app, values: values)
        let args = (app.args.arguments(size: nil) ?? []).map { Placeholders.expand($0, values) }
        let clientArgs = (app.clientArgs ?? []).map { Placeholders.expand($0, values) }
        var invocations: [Invocation] = []
        var server: (any HelperProcess)?
        if loopback, let port {
            let serverCPUs = CPUList.parse(values["server_cpus"] ?? "") ?? spec.cpus
            let serverSpec = ProcessSpec(
                program: programs[0], arguments: args, environment: environment, workingDirectory: run,
                cpus: serverCPUs.isEmpty ? spec.cpus : serverCPUs, stdoutPath: run + "/server-stdout.txt",
                stderrPath: run + "/server-stderr.txt", timeoutSeconds: spec.timeoutSeconds + 30)
            invocations.append(
                Invocation(
                    argv: [programs[0]] + args, environment: environment, workingDirectory: run, cpus: serverSpec.cpus))
            do {
                server = try await runContext.startHelper(serverSpec)
            } catch {
                return WorkloadResult(
                    status: .failed, reason: "starting the server: \(error.description)", invocations: invocations)
            }
            // Wait until it listens (or dies), without connecting to it.
            let deadline = ContinuousClock.now + .seconds(Swift.min(spec.timeoutSeconds, 300))
            while !(await Loopback.isListening(port: port, read: runContext.readFile)) {
                if server!.hasExited || ContinuousClock.now > deadline {
                    let outcome = server!.hasExited ? await server!.ended().description : "not listening in time"
                    await server?.stop()
                    return WorkloadResult(
                        status: .failed,
                        reason: "the \(spec.name) server did not start listening on 127.0.0.1:\(port) (\(outcome))",
                        invocations: invocations, outputTail: MetricLines.tail(of: run + "/server-stderr.txt"))
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        let measuredProgram = loopback ? programs[1] : programs[0]
        let measuredArgs = loopback ? clientArgs : args
        let stdout = run + "/stdout.txt"
        let stderr = run + "/stderr.txt"
        let process = ProcessSpec(
            program: measuredProgram, arguments: measuredArgs, environment: environment, workingDirectory: run,
            cpus: spec.cpus, stdoutPath: stdout, stderrPath: stderr, timeoutSeconds: spec.timeoutSeconds)
        invocations.append(
            Invocation(argv: [measuredProgram] + measuredArgs, environment: environment, workingDirectory: run, cpus: spec.cpus))
        let launched: Result<MeasuredOutcome, ProcessError>
        do {
            launched = .success(try await runContext.launchMeasured(process))
        } catch {
            launched = .failure(error)
        }
        // The server never exits on its own after its client: kill its whole group.
        await server?.stop()
        let measured: MeasuredOutcome
        switch launched {
        case .success(let m): measured = m
        case .failure(let error): return WorkloadResult(status: .failed, reason: error.description, invocations: invocations)
        }
        let outcome = measured.outcome
        var result = WorkloadResult(
            status: .ok, metrics: measured.metrics, invocations: invocations, exitStatus: outcome.exitStatus,
            signal: outcome.signal)
        let who = loopback ? "\(spec.name) client" : spec.name
        if !outcome.succeeded {
            result.status = .failed
            result.reason = "\(who): \(outcome.describe(timeout: spec.timeoutSeconds))"
            result.outputTail = MetricLines.tail(of: stderr)
            return result
        }
        let lats = run + "/lats.bin"
        let summary: LatsSummary
        do {
            summary = try LatsFile.analyze(path: lats)
        } catch {
            result.status = .failed
            result.reason = "\(who) exited 0 but \(error.description)"
            result.outputTail = MetricLines.tail(of: stderr)
            return result
        }
        result.metrics = Self.metrics(summary, wallSeconds: outcome.wallSeconds, values: values) + measured.metrics
        return result
    }

    /// The latency and throughput metrics of one run.
    public static func metrics(_ summary: LatsSummary, wallSeconds: Double, values: [String: String]) -> [Metric] {
        var metrics: [Metric] = []
        for (name, column) in [("sojourn", summary.sojourn), ("service", summary.service), ("queue", summary.queue)] {
            for (stat, value) in [
                ("mean", column.mean), ("p50", column.p50), ("p95", column.p95), ("p99", column.p99), ("max", column.max),
            ] {
                metrics.append(
                    Metric(
                        name: "\(name)_\(stat)_ms", value: value, unit: "ms", polarity: .lowerIsBetter, source: "workload",
                        detail: "lats.bin"))
            }
        }
        metrics.append(
            Metric(name: "requests", value: Double(summary.requests), unit: "requests", polarity: .neutral, source: "workload"))
        if wallSeconds > 0 {
            metrics.append(
                Metric(
                    name: "throughput_rps", value: Double(summary.requests) / wallSeconds, unit: "req/s",
                    polarity: .higherIsBetter, source: "timing",
                    detail:
                        "achieved QPS: measured requests / wall seconds of the measured process from exec to exit (the harness marks no ROI boundary, so start-up and warm-up are included)"
                ))
        }
        if let qps = values["qps"].flatMap(Double.init) {
            metrics.append(
                Metric(name: "offered_qps", value: qps, unit: "req/s", polarity: .neutral, source: "params", detail: "TBENCH_QPS")
            )
        }
        return metrics
    }
}
