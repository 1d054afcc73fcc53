import Foundation
import NestBenchModel
import NestBenchProcess

/// Tailbench apps (Suites/tailbench.yaml), integrated or loopback, measured from their `lats.bin`.
///
/// Metrics: mean/p50/p95/p99/max of sojourn, service and queue time (ms, from lats.bin),
/// `requests` (measured), `capacity_rps` (server threads / mean service time of the measured
/// requests) and `offered_qps` (TBENCH_QPS as configured). Loopback measures the server.
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
            if FileManager.default.fileExists(atPath: program) {
                return "\(program): not executable (the tree lost its execute bits); fix it with `chmod +x \(program)`"
            }
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
        if loopback, let port {
            let clientArgs = (app.clientArgs ?? []).map { Placeholders.expand($0, values) }
            return await runLoopback(
                spec, runContext: runContext, values: values, environment: environment, port: port,
                server: (programs[0], args), client: (programs[1], clientArgs))
        }
        let stdout = run + "/stdout.txt"
        let stderr = run + "/stderr.txt"
        let process = ProcessSpec(
            program: programs[0], arguments: args, environment: environment, workingDirectory: run,
            cpus: spec.cpus, stdoutPath: stdout, stderrPath: stderr, timeoutSeconds: spec.timeoutSeconds)
        let invocations = [
            Invocation(argv: [programs[0]] + args, environment: environment, workingDirectory: run, cpus: spec.cpus)
        ]
        let measured: MeasuredOutcome
        do {
            measured = try await runContext.launchMeasured(process)
        } catch {
            return WorkloadResult(status: .failed, reason: error.description, invocations: invocations)
        }
        let outcome = measured.outcome
        var result = WorkloadResult(
            status: .ok, metrics: measured.metrics, invocations: invocations, exitStatus: outcome.exitStatus,
            signal: outcome.signal)
        if !outcome.succeeded {
            result.status = .failed
            result.reason = "\(spec.name): \(outcome.describe(timeout: spec.timeoutSeconds))"
            result.outputTail = MetricLines.tail(of: stderr)
            return result
        }
        return Self.finish(result, spec: spec, values: values, lats: run + "/lats.bin", stderr: stderr, who: spec.name)
    }

    /// Reads lats.bin and adds the latency and capacity metrics, or fails the run with the reason.
    static func finish(
        _ measured: WorkloadResult, spec: WorkloadSpec, values: [String: String], lats: String, stderr: String, who: String
    ) -> WorkloadResult {
        var result = measured
        let summary: LatsSummary
        do {
            summary = try LatsFile.analyze(path: lats)
        } catch {
            result.status = .failed
            result.reason = "\(who) exited 0 but \(error.description)"
            result.outputTail = MetricLines.tail(of: stderr)
            return result
        }
        result.metrics = Self.metrics(summary, values: values) + result.metrics
        return result
    }

    /// Loopback: the server is the measured process (started first, collectors attached at its
    /// gate); the client is a helper that drives it, its usage kept under `client.`. The client
    /// writes lats.bin; the harness server exits 0 once its client has left. A server that ends
    /// before its client fails the run with its exit status and last stderr lines.
    func runLoopback(
        _ spec: WorkloadSpec, runContext: WorkloadContext, values: [String: String], environment: [String: String],
        port: Int, server: (program: String, args: [String]), client: (program: String, args: [String])
    ) async -> WorkloadResult {
        let run = runContext.runDirectory
        let serverCPUs = CPUList.parse(values["server_cpus"] ?? "").flatMap { $0.isEmpty ? nil : $0 } ?? spec.cpus
        let serverStderr = run + "/server-stderr.txt"
        let clientStderr = run + "/client-stderr.txt"
        let serverSpec = ProcessSpec(
            program: server.program, arguments: server.args, environment: environment, workingDirectory: run,
            cpus: serverCPUs, stdoutPath: run + "/server-stdout.txt", stderrPath: serverStderr,
            timeoutSeconds: spec.timeoutSeconds)
        let clientSpec = ProcessSpec(
            program: client.program, arguments: client.args, environment: environment, workingDirectory: run,
            cpus: spec.cpus, stdoutPath: run + "/client-stdout.txt", stderrPath: clientStderr,
            timeoutSeconds: spec.timeoutSeconds)
        let invocations = [
            Invocation(argv: [server.program] + server.args, environment: environment, workingDirectory: run, cpus: serverCPUs),
            Invocation(argv: [client.program] + client.args, environment: environment, workingDirectory: run, cpus: spec.cpus),
        ]
        let launch = runContext.launchMeasured
        let ended = EndFlag()
        let serverTask = Task { () -> Result<MeasuredOutcome, ProcessError> in
            defer { ended.set() }
            do throws(ProcessError) {
                return .success(try await launch(serverSpec))
            } catch {
                return .failure(error)
            }
        }
        func serverEnded() async -> WorkloadResult {
            switch await serverTask.value {
            case .failure(let error):
                return WorkloadResult(
                    status: .failed, reason: "starting the \(spec.name) server: \(error.description)", invocations: invocations)
            case .success(let measured):
                let o = measured.outcome
                return WorkloadResult(
                    status: .failed,
                    reason:
                        "the \(spec.name) server ended before its client (\(o.describe(timeout: spec.timeoutSeconds)))"
                        + Self.lastLines(serverStderr).map { ": \($0)" }.orEmpty
                        + Self.harnessBugHint(stderrFiles: [serverStderr, clientStderr]).map { "; \($0)" }.orEmpty,
                    metrics: measured.metrics, invocations: invocations, exitStatus: o.exitStatus, signal: o.signal,
                    outputTail: MetricLines.tail(of: serverStderr))
            }
        }
        // Wait until it listens (or ends), without connecting to it.
        let deadline = ContinuousClock.now + .seconds(Swift.min(spec.timeoutSeconds, 300))
        while !(await Loopback.isListening(port: port, read: runContext.readFile)) {
            if ended.isSet { return await serverEnded() }
            if ContinuousClock.now > deadline {
                Loopback.killGroups(program: server.program, workingDirectory: run)
                _ = await serverTask.value
                return WorkloadResult(
                    status: .failed, reason: "the \(spec.name) server did not listen on 127.0.0.1:\(port) in time (killed)",
                    invocations: invocations, outputTail: MetricLines.tail(of: serverStderr))
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let clientProcess: any HelperProcess
        do {
            clientProcess = try await runContext.startHelper(clientSpec)
        } catch {
            Loopback.killGroups(program: server.program, workingDirectory: run)
            _ = await serverTask.value
            return WorkloadResult(
                status: .failed, reason: "starting the \(spec.name) client: \(error.description)", invocations: invocations)
        }
        while !clientProcess.hasExited {
            if ended.isSet {
                // A server that exits 0 as its client leaves ("All clients exited") can be seen
                // first (in a guest the client's end is seen through the agent): a moment's grace.
                if case .success(let m) = await serverTask.value, m.outcome.succeeded {
                    let grace = ContinuousClock.now + .seconds(5)
                    while !clientProcess.hasExited && ContinuousClock.now < grace {
                        try? await Task.sleep(for: .milliseconds(50))
                    }
                    if clientProcess.hasExited { break }
                }
                await clientProcess.stop()
                return await serverEnded()
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let clientEnd = await clientProcess.ended()
        // The client's usage where its place reports it (this machine); a guest's agent does not.
        let clientOutcome = clientEnd.outcome
        let clientSucceeded = clientOutcome?.succeeded ?? (clientEnd.exitStatus == 0)
        if !clientSucceeded {
            // A client killed by its server's end (SIGPIPE) may be noticed first: the server's
            // failure is the cause.
            let grace = ContinuousClock.now + .seconds(2)
            while !ended.isSet && ContinuousClock.now < grace { try? await Task.sleep(for: .milliseconds(20)) }
            if ended.isSet, case .success(let m) = await serverTask.value, !m.outcome.succeeded {
                var result = await serverEnded()
                result.reason = (result.reason ?? "") + "; the client: \(clientEnd.description)"
                return result
            }
        }
        let measured: MeasuredOutcome
        switch await serverTask.value {
        case .failure(let error):
            return WorkloadResult(
                status: .failed, reason: "starting the \(spec.name) server: \(error.description)", invocations: invocations)
        case .success(let m): measured = m
        }
        let o = measured.outcome
        var result = WorkloadResult(
            status: .ok, metrics: measured.metrics + Self.clientMetrics(clientOutcome), invocations: invocations,
            exitStatus: o.exitStatus, signal: o.signal)
        if !clientSucceeded {
            result.status = .failed
            var reason = "\(spec.name) client: \(clientEnd.description)"
            reason += Self.lastLines(clientStderr).map { ": \($0)" }.orEmpty
            if let hint = Self.harnessBugHint(stderrFiles: [clientStderr, serverStderr]) { reason += "; \(hint)" }
            result.reason = reason
            result.outputTail = MetricLines.tail(of: clientStderr)
            return result
        }
        if o.timedOut {
            result.status = .failed
            result.reason =
                "the \(spec.name) server did not exit after its client left: \(o.describe(timeout: spec.timeoutSeconds))"
            result.outputTail = MetricLines.tail(of: serverStderr)
            return result
        }
        if !o.succeeded {
            // The client got FINISH and wrote lats.bin: the measured region is complete. Tailbench's
            // server may still answer requests in flight to the departed client and abort on the
            // failed send (silo: "Assertion `sent == totalLen' failed"): a warning, not a failure.
            result.provenance["loopback.server_exit"] = o.describe(timeout: spec.timeoutSeconds)
            result.provenance["warning.server_exit"] =
                "the \(spec.name) server ended with \(o.describe(timeout: spec.timeoutSeconds)) after its client had finished and left"
                + Self.lastLines(serverStderr, count: 1).map { " (\($0))" }.orEmpty
                + "; the measured requests were complete"
        }
        return Self.finish(
            result, spec: spec, values: values, lats: run + "/lats.bin", stderr: clientStderr, who: "\(spec.name) client")
    }

    /// The client's usage (it is not the measured process): `client.` metrics.
    static func clientMetrics(_ outcome: ProcessOutcome?) -> [Metric] {
        guard let o = outcome else {
            // Every metric a measured client gives, each unavailable (none silently left out).
            return [
                ("client.wall_seconds", "s"), ("client.user_seconds", "s"), ("client.system_seconds", "s"),
                ("client.minor_faults", "faults"), ("client.max_rss_bytes", "bytes"),
            ].map {
                Metric.unavailable(
                    $0.0, unit: $0.1, polarity: .neutral, source: "rusage",
                    reason: "unavailable: the place the client ran in reported no resource usage of it")
            }
        }
        return [
            Metric(
                name: "client.wall_seconds", value: o.wallSeconds, unit: "s", polarity: .neutral, source: "timing",
                detail: "load generator, exec to exit"),
            Metric(name: "client.user_seconds", value: o.usage.userSeconds, unit: "s", polarity: .neutral, source: "rusage"),
            Metric(
                name: "client.system_seconds", value: o.usage.systemSeconds, unit: "s", polarity: .neutral, source: "rusage"),
            Metric(
                name: "client.minor_faults", value: Double(o.usage.minorFaults), unit: "faults", polarity: .neutral,
                source: "rusage"),
            Metric(
                name: "client.max_rss_bytes", value: Double(o.usage.maxRSSKiB) * 1024, unit: "bytes", polarity: .neutral,
                source: "rusage"),
        ]
    }

    /// The last few stderr lines, joined, for a reason.
    static func lastLines(_ path: String, count: Int = 3) -> String? {
        guard let tail = MetricLines.tail(of: path, lines: count + 1) else { return nil }
        let lines = tail.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return lines.isEmpty ? nil : lines.suffix(count).joined(separator: " | ")
    }

    /// Tailbench v0.9's harness/helpers.h `recvfull` passes `len` instead of the bytes still
    /// missing to recv(), so a split TCP read overruns the message: the server reports
    /// "ERROR! recvd = …" and exits, the client dies of SIGPIPE. The fix is in the user's tree.
    static func harnessBugHint(stderrFiles: [String]) -> String? {
        for file in stderrFiles {
            guard let text = MetricLines.tail(of: file, lines: 50), text.contains("ERROR! recvd =") else { continue }
            return
                "this looks like Tailbench v0.9's recvfull bug: in harness/helpers.h recvfull must call recv(fd, cur, remaining, flags) (not len); fix it in your tree, rebuild the harness and the app"
        }
        return nil
    }

    /// The latency and capacity metrics of one run, all from the measured requests of lats.bin
    /// (warm-up and start-up excluded by construction).
    ///
    /// `capacity_rps` = server threads / mean service time: the request rate the server sustains
    /// when busy, over the measured region only. The harness records no timestamps, so the
    /// achieved rate over the measured region cannot be derived; `offered_qps` is the configured
    /// TBENCH_QPS and is not an achieved rate.
    public static func metrics(_ summary: LatsSummary, values: [String: String]) -> [Metric] {
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
        let threads = values["threads"].flatMap(Double.init) ?? 1
        if summary.service.mean > 0 {
            metrics.append(
                Metric(
                    name: "capacity_rps", value: threads / (summary.service.mean / 1000), unit: "req/s",
                    polarity: .higherIsBetter, source: "workload",
                    detail:
                        "capacity: \(Int(threads)) server thread(s) / mean service time of the measured requests (lats.bin); not the achieved rate, which the harness does not record"
                ))
        } else {
            metrics.append(
                Metric.unavailable(
                    "capacity_rps", unit: "req/s", polarity: .higherIsBetter, source: "workload",
                    reason: "unavailable: the measured requests' mean service time is 0 ns in lats.bin"))
        }
        if let qps = values["qps"].flatMap(Double.init) {
            metrics.append(
                Metric(
                    name: "offered_qps", value: qps, unit: "req/s", polarity: .neutral, source: "params",
                    detail: "TBENCH_QPS as configured (offered load, not achieved)"))
        }
        return metrics
    }
}

extension Optional where Wrapped == String {
    var orEmpty: String { self ?? "" }
}

/// Set once, read from polling loops.
final class EndFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
