import Foundation
import Logging
import NestBenchCollectors
import NestBenchModel
import NestBenchProcess
import NestBenchStats

/// What an adapter gets to run one workload once.
public struct WorkloadContext: Sendable {
    /// A directory of this run's own (the working directory of its processes, artifacts).
    public var runDirectory: String
    public var logger: Logger
    /// Starts the measured process with every collector attached, waits for it, and returns
    /// how it ended with the collectors' metrics.
    public var launchMeasured: @Sendable (ProcessSpec) async throws(ProcessError) -> MeasuredOutcome
    /// Starts a helper (e.g. a server) where the workload runs, not measured, in its own process
    /// group; the adapter stops it (`await helper.stop()`).
    public var startHelper: @Sendable (ProcessSpec) async throws(ProcessError) -> any HelperProcess
    /// Reads a file of the kernel the workload runs on (/proc, /sys: e.g. /proc/net/tcp in a
    /// guest); nil when it cannot be read.
    public var readFile: @Sendable (String) async -> String?

    public init(
        runDirectory: String, logger: Logger,
        launchMeasured: @escaping @Sendable (ProcessSpec) async throws(ProcessError) -> MeasuredOutcome,
        startHelper: @escaping @Sendable (ProcessSpec) async throws(ProcessError) -> any HelperProcess,
        readFile: @escaping @Sendable (String) async -> String? = { try? String(contentsOfFile: $0, encoding: .utf8) }
    ) {
        self.runDirectory = runDirectory
        self.logger = logger
        self.launchMeasured = launchMeasured
        self.startHelper = startHelper
        self.readFile = readFile
    }
}

/// A measured process's end and what the collectors measured around it.
public struct MeasuredOutcome: Sendable {
    public var outcome: ProcessOutcome
    public var metrics: [Metric]

    public init(outcome: ProcessOutcome, metrics: [Metric]) {
        self.outcome = outcome
        self.metrics = metrics
    }
}

/// What one workload run produced.
public struct WorkloadResult: Sendable {
    public var status: RunStatus
    public var reason: String?
    public var metrics: [Metric]
    public var invocations: [Invocation]
    public var exitStatus: Int32?
    public var signal: Int32?
    public var outputTail: String?
    /// The workload's own timeline (e.g. nb-micro's `progress` lines), beside the collectors'.
    public var samples: [TimelineSample] = []
    /// The workload's progress intervals as it reported them (nb-micro's `progress` lines, on its
    /// own clock from `clockStart`), for what is measured across an outage (save/restore's TTR).
    public var progress: WorkloadProgress?
    /// What the adapter chose on this machine (e.g. the hooks library a PARSEC binary was given);
    /// keys `warning.*` are warnings every report shows (e.g. a ROI too short for its resolution).
    public var provenance: [String: String]

    public init(
        status: RunStatus, reason: String? = nil, metrics: [Metric] = [], invocations: [Invocation] = [],
        exitStatus: Int32? = nil, signal: Int32? = nil, outputTail: String? = nil, provenance: [String: String] = [:]
    ) {
        self.provenance = provenance
        self.status = status
        self.reason = reason
        self.metrics = metrics
        self.invocations = invocations
        self.exitStatus = exitStatus
        self.signal = signal
        self.outputTail = outputTail
    }
}

/// A workload's own progress report: intervals (end in seconds since its timed loop began) and
/// that loop's start on the clock of the place it ran in (CLOCK_MONOTONIC), when it said.
public struct WorkloadProgress: Sendable, Equatable {
    public var clockStart: Double?
    public var intervals: [Responsiveness.Interval]
    public init(clockStart: Double?, intervals: [Responsiveness.Interval]) {
        self.clockStart = clockStart
        self.intervals = intervals
    }
}

/// Runs one suite's apps.
public protocol WorkloadAdapter: Sendable {
    /// The suite name experiment files use.
    var suite: String { get }
    /// Problems with a workload entry of this suite (unknown app, bad parameter).
    func problems(for spec: WorkloadSpec) -> [WorkloadProblem]
    /// Why this workload cannot run on this machine right now (missing binary, input), or nil.
    func unavailableReason(for spec: WorkloadSpec) -> String?
    /// Runs it once. A workload failing is a result, not an error.
    func run(_ spec: WorkloadSpec, context: WorkloadContext) async -> WorkloadResult
    /// What this workload's own metrics are (exactly one primary); the collectors' are declared
    /// by `CollectorMetricDeclarations`.
    func metricDeclarations(for spec: WorkloadSpec) -> [MetricDeclaration]
}

/// All adapters, as the experiment loader's catalog and source of metric declarations.
public struct WorkloadRegistry: WorkloadCatalog, MetricDeclaring {
    public var adapters: [any WorkloadAdapter]

    public init(adapters: [any WorkloadAdapter]) {
        self.adapters = adapters
    }

    public static func standard(
        harness: HarnessLocator = HarnessLocator(), suites: SuiteLocator = SuiteLocator()
    ) -> WorkloadRegistry {
        var adapters: [any WorkloadAdapter] = [
            MicroAdapter(harness: harness), TailbenchAdapter(locator: suites), ParsecAdapter(locator: suites),
        ]
        // Further suites added through a YAML file only: `Suites/<name>.yaml` with `runner: tailbench`
        // or `runner: parsec` runs its apps as that suite's adapter does, with its own metric declarations.
        for (name, runner) in suites.additionalSuites() {
            switch runner {
            case "tailbench": adapters.append(TailbenchAdapter(suite: name, locator: suites))
            case "parsec": adapters.append(ParsecAdapter(suite: name, locator: suites))
            default: break
            }
        }
        return WorkloadRegistry(adapters: adapters)
    }

    public func adapter(for suite: String) -> (any WorkloadAdapter)? {
        adapters.first { $0.suite == suite }
    }

    public func problems(for spec: WorkloadSpec) -> [WorkloadProblem] {
        guard let adapter = adapter(for: spec.suite) else {
            return [
                WorkloadProblem(
                    key: "suite",
                    message: "unknown suite \"\(spec.suite)\" (known: \(adapters.map(\.suite).joined(separator: ", ")))")
            ]
        }
        return adapter.problems(for: spec)
    }

    /// The experiment with every workload's declarations (its adapter's) and the collectors'
    /// filled in where missing. The loader calls it, so new runs store them; readers call it on
    /// experiments stored before declarations existed (their workloads get today's declarations
    /// of the same suite and app: the fallback for old stores). A workload whose suite or app is
    /// unknown keeps none: its metrics are then reported as undeclared (never a headline).
    public func declaring(_ experiment: Experiment) -> Experiment {
        var e = experiment
        if e.collectorMetrics == nil { e.collectorMetrics = CollectorMetricDeclarations.standard }
        func declare(_ w: inout WorkloadSpec) {
            if let members = w.colocated {
                w.colocated = members.map { m in
                    var m = m
                    declare(&m)
                    return m
                }
            } else if w.metrics == nil, let adapter = adapter(for: w.suite) {
                let declared = adapter.metricDeclarations(for: w)
                if !declared.isEmpty { w.metrics = declared }
            }
        }
        for i in e.workloads.indices { declare(&e.workloads[i]) }
        return e
    }
}

/// Parses the `metric NAME VALUE UNIT POLARITY` lines of NestBench's own harness programs.
public enum MetricLines {
    public static func parse(_ text: String, source: String) -> [Metric] {
        var metrics: [Metric] = []
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count == 5, f[0] == "metric", let value = Double(f[2]), value.isFinite else { continue }
            let polarity = Polarity(rawValue: String(f[4])) ?? .neutral
            metrics.append(Metric(name: String(f[1]), value: value, unit: String(f[3]), polarity: polarity, source: source))
        }
        return metrics
    }

    /// The last `lines` lines of a file, for failed-run reports.
    public static func tail(of path: String, lines: Int = 20) -> String? {
        guard let data = FileManager.default.contents(atPath: path), !data.isEmpty else { return nil }
        let text = String(decoding: data.suffix(16_384), as: UTF8.self)
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}
