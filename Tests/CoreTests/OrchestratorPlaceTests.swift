import Foundation
import Logging
import NestBenchCollectors
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess
import NestBenchStore
import NestBenchWorkloads
import Synchronization
import Testing

@testable import NestBenchOrchestrator

/// A place that runs nothing: it records what it was asked and answers with canned values.
final class FakePlace: Place {
    let name: String
    struct Log {
        var applied: [Knob] = []
        var restores = 0
        var compactions = 0
        var launched: [String] = []
        var helpersStarted = 0
        var helpersStopped = 0
    }
    let log = Mutex(Log())
    /// Set by a launch: the place stops answering (its VM died).
    let loseOnLaunch: Bool
    let lost = Atomic<Bool>(false)

    init(name: String, loseOnLaunch: Bool = false) {
        self.name = name
        self.loseOnLaunch = loseOnLaunch
    }

    func read(_ path: String) async throws(PlaceError) -> String {
        if lost.load(ordering: .relaxed) { throw .unreachable(place: name, reason: "gone") }
        if path == "/proc/buddyinfo" { return "Node 0, zone   Normal   10 10 10 10 10 10 10 10 10 10 10\n" }
        throw .missing(place: name, path: path)
    }

    func apply(_ knobs: [Knob], owner: String) async throws(PlaceError) -> [String: String] {
        log.withLock { $0.applied += knobs }
        return Dictionary(knobs.map { ($0.path, $0.value) }, uniquingKeysWith: { $1 })
    }

    func restoreKnobs() async -> [String] {
        log.withLock { $0.restores += 1 }
        return []
    }

    func dropCachesAndCompact() async throws(PlaceError) { log.withLock { $0.compactions += 1 } }

    func launchMeasured(_ spec: ProcessSpec) async throws(ProcessError) -> MeasuredRun {
        log.withLock { $0.launched.append(spec.program) }
        if loseOnLaunch { lost.store(true, ordering: .relaxed) }
        let outcome = ProcessOutcome(
            pid: 42, exitStatus: 0, signal: nil, timedOut: false,
            usage: ResourceUsage(
                minorFaults: 1, majorFaults: 0, userSeconds: 0.5, systemSeconds: 0.1, maxRSSKiB: 1024,
                voluntaryContextSwitches: 1, involuntaryContextSwitches: 0),
            wallSeconds: 1.5, argv: [spec.program])
        return MeasuredRun(
            outcome: outcome,
            metrics: UsageCollector.metrics(outcome).map { m in
                var m = m
                m.detail = "measured in \(name)"
                return m
            },
            samples: [TimelineSample(tMillis: 1000, name: "mem_free_bytes", value: 1)])
    }

    func startHelper(_ spec: ProcessSpec) async throws(ProcessError) -> any HelperProcess {
        log.withLock { $0.helpersStarted += 1 }
        return FakeHelper(place: self)
    }

    func runDirectory(_ tag: String) -> String { NSTemporaryDirectory() + "nestbench-fake-\(name)-\(tag)" }
}

final class FakeHelper: HelperProcess {
    let place: FakePlace
    let gone = Atomic<Bool>(false)
    init(place: FakePlace) { self.place = place }
    var pid: Int32 { 7 }
    var hasExited: Bool { gone.load(ordering: .relaxed) }
    func signal(_ signal: Int32) async {
        if !gone.exchange(true, ordering: .relaxed) { place.log.withLock { $0.helpersStopped += 1 } }
    }
    func ended() async -> HelperEnd { HelperEnd(exitStatus: nil, description: "killed") }
}

struct FakePlacement: Placement {
    let guests: [FakePlace]
    let host: any Place
    var workloadPlaces: [any Place] { guests }
    func places(forLayer name: String) -> [any Place]? {
        if name == "host" { return [host] }
        return guests.first { $0.name == name }.map { [$0] }
    }
    var provenance: [String: String] { ["fake.layer": guests.map(\.name).joined(separator: ",")] }
    var invocations: [Invocation] {
        [Invocation(argv: ["fake-vm"], environment: [:], workingDirectory: "host", cpus: [])]
    }
    func beginRun() -> any PlacementRun { FakeRun() }
    func state() async -> (metrics: [Metric], provenance: [String: String]) {
        ([Metric(name: "G1.fmfi", value: 0.5, unit: "ratio", polarity: .neutral, source: "layer")], ["G1.thp_enabled": "always"])
    }
    var lostReason: String? { guests.contains { $0.lost.load(ordering: .relaxed) } ? "G1 does not answer" : nil }
}

struct FakeRun: PlacementRun {
    func finish() -> [Metric] {
        [Metric.unavailable("tlb_misses", unit: "events", polarity: .lowerIsBetter, source: "perf", reason: "unavailable: fake")]
    }
}

/// A provider of one fake placement (registered as the `qemu` platform).
final class FakeProvider: PlaceProvider {
    let placement: FakePlacement
    let discarded = Mutex<[String]>([])
    init(placement: FakePlacement) { self.placement = placement }
    var kind: PlatformKind { .qemu }
    func thisMachine(_ configuration: Configuration) -> Configuration { configuration }
    func describe(into extra: inout [String: String]) {}
    func preflight(_ configurations: [Configuration], artifacts: String) async -> [String] { [] }
    func open(_ configuration: Configuration, host: any Place, collectors: CollectorSettings, artifacts: String)
        async throws(PlaceError) -> any Placement
    { placement }
    func discard(_ configuration: Configuration) { discarded.withLock { $0.append(configuration.name) } }
    func teardownAll() {}
}

/// Starts a helper, runs the measured process, stops the helper.
struct HelperAndMeasuredAdapter: WorkloadAdapter {
    var suite: String { "fake" }
    func problems(for spec: WorkloadSpec) -> [WorkloadProblem] { [] }
    func unavailableReason(for spec: WorkloadSpec) -> String? { nil }
    func metricDeclarations(for spec: WorkloadSpec) -> [MetricDeclaration] {
        [MetricDeclaration("wall_seconds", unit: "s", polarity: .lowerIsBetter, role: .primary)]
    }
    func run(_ spec: WorkloadSpec, context: WorkloadContext) async -> WorkloadResult {
        do {
            let server = try await context.startHelper(ProcessSpec(program: "fake-server", arguments: []))
            let measured = try await context.launchMeasured(ProcessSpec(program: "fake-client", arguments: []))
            await server.stop()
            return WorkloadResult(status: .ok, metrics: measured.metrics, exitStatus: measured.outcome.exitStatus)
        } catch {
            return WorkloadResult(status: .failed, reason: error.description)
        }
    }
}

@Suite("Orchestrator against a fake place (no VM)")
struct OrchestratorPlaceTests {
    struct Setup {
        let orchestrator: Orchestrator
        let experiment: Experiment
        let runID: String
        let directory: String
        let provider: FakeProvider
    }

    func setup(guests: [FakePlace], condition: Condition) throws -> Setup {
        let directory = Fixtures.temporaryDirectory()
        let store = try Store(path: directory + "/results.sqlite")
        let logger = Logger(label: "test")
        let platform = LocalPlatform(journal: KnobJournal(path: directory + "/journal.json"), logger: logger)
        let host = LocalPlace(platform: platform, collectors: [], runsDirectory: directory)
        let provider = FakeProvider(placement: FakePlacement(guests: guests, host: host))
        let experiment = Experiment(
            name: "fake", baseline: "stack", configurations: [Configuration(name: "stack", platform: .qemu)],
            workloads: [WorkloadSpec(suite: "fake", name: "app")], conditions: [condition],
            repetitions: RepetitionPolicy(min: 1, max: 1))
        let orchestrator = Orchestrator(
            registry: WorkloadRegistry(adapters: [HelperAndMeasuredAdapter()]), platform: platform, store: store,
            collectors: [], providers: [provider], logger: logger)
        let runID = Orchestrator.newRunID()
        try store.begin(
            ExperimentRunRecord(
                id: runID, experiment: experiment, filePath: "fake.yaml", contentHash: "0", content: "", seed: 1,
                plan: [], startedAt: Date(), machine: MachineProbe.describe(), tags: [:]))
        return Setup(orchestrator: orchestrator, experiment: experiment, runID: runID, directory: directory, provider: provider)
    }

    func execute(_ s: Setup, condition: String, sequence: Int = 0) async throws -> RunRecord {
        try await s.orchestrator.execute(
            PlannedRun(sequence: sequence, configuration: "stack", workload: "app", condition: condition, repetition: 1),
            experiment: s.experiment, experimentRunID: s.runID, options: RunOptions(resultsDirectory: s.directory),
            collectors: [])
    }

    @Test("one path: condition in the place it names, helper and measured process there, placement state recorded")
    func runsEverythingInThePlace() async throws {
        let guest = FakePlace(name: "G1")
        let s = try setup(guests: [guest], condition: Condition(name: "compacted", compact: true))
        let record = try await execute(s, condition: "compacted")
        #expect(record.status == .ok, "\(record.reason ?? "")")
        let log = guest.log.withLock { $0 }
        #expect(log.compactions == 1)
        #expect(log.launched == ["fake-client"])
        #expect(log.helpersStarted == 1 && log.helpersStopped == 1)
        #expect(log.restores == 1)
        let names = Set(record.metrics.map(\.name))
        for name in ["wall_seconds", "fmfi_before_compaction", "fmfi_after_compaction", "G1.fmfi", "tlb_misses"] {
            #expect(names.contains(name), "missing \(name)")
        }
        #expect(record.metrics.first { $0.name == "wall_seconds" }?.detail == "measured in G1")
        #expect(record.provenance["fake.layer"] == "G1")
        #expect(record.provenance["G1.thp_enabled"] == "always")
        #expect(record.provenance["condition.layer"] == "G1")
        #expect(record.invocations.first?.argv == ["fake-vm"])
        #expect(s.provider.discarded.withLock { $0 }.isEmpty)
        let samples = try #require(try s.orchestrator.store.export(s.runID)).runs.flatMap(\.samples)
        #expect(samples.contains { $0.name == "mem_free_bytes" })
    }

    @Test("a place lost during the run fails it and discards the placement (typed, no message matching)")
    func lostPlaceIsDiscarded() async throws {
        let guest = FakePlace(name: "G1", loseOnLaunch: true)
        let s = try setup(guests: [guest], condition: Condition(name: "clean"))
        let record = try await execute(s, condition: "clean")
        #expect(record.status == .failed)
        #expect(record.reason?.contains("G1 does not answer") == true)
        #expect(s.provider.discarded.withLock { $0 } == ["stack"])
        #expect(!record.metrics.contains { $0.name == "G1.fmfi" })
    }

    @Test("a condition naming a layer the placement lacks fails the run before anything runs")
    func unknownLayer() async throws {
        let guest = FakePlace(name: "G1")
        let condition = Condition(name: "frag", fragmentation: FragmentationSpec(targetFMFI: 0.5, layer: "L7"))
        let s = try setup(guests: [guest], condition: condition)
        let record = try await execute(s, condition: "frag")
        #expect(record.status == .failed)
        #expect(record.reason?.contains("no layer L7") == true)
        #expect(guest.log.withLock { $0.launched }.isEmpty)
    }

    /// A guest's console is scanned from where it stood when the run's placement opened: a WARNING
    /// of the boot (e.g. the XSAVE warning of a kernel under emulation) is recorded beside the run
    /// and does not mark it; one logged during the run marks it; the next run starts after both.
    @Test("kernel log of a guest console: the boot's lines beside the run, the run's lines mark it")
    func consoleFindingsBeforeTheRunDoNotMarkIt() async throws {
        let s = try setup(guests: [FakePlace(name: "G1")], condition: Condition(name: "plain"))
        let console = s.directory + "/L1.console.log"
        let boot = "[    0.5] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/fpu/xstate.c:800 fpu__init_system_xstate\n"
        try boot.write(toFile: console, atomically: true, encoding: .utf8)
        let kernelLog = KernelLogWatch(path: s.directory + "/no-kmsg")
        var offsets: [String: UInt64] = [:]

        var first = try await execute(s, condition: "plain")
        first.provenance["L1.console"] = console
        first.provenance["L1.console_from"] = String(boot.utf8.count)
        let handle = try #require(FileHandle(forWritingAtPath: console))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("[   42.0] WARNING: CPU: 1 PID: 7 at mm/huge_memory.c:99 during the run\n".utf8))
        try handle.close()
        first = try s.orchestrator.afterRun(first, kernelLog: kernelLog, consoleOffsets: &offsets, environment: nil)
        #expect(first.provenance["kernel_log.L1.before_run"]?.contains("xstate.c") == true, "\(first.provenance)")
        #expect(first.provenance["kernel_log"]?.contains("during the run") == true)
        #expect(first.provenance["kernel_log"]?.contains("xstate.c") == false)
        #expect(first.provenance["kernel_log.L1"] == "scanned (from the run's start)")

        // The next run opens after both lines: nothing before it, nothing during it.
        var second = try await execute(s, condition: "plain", sequence: 1)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: console)[.size] as? NSNumber)
        second.provenance["L1.console"] = console
        second.provenance["L1.console_from"] = size.stringValue
        second = try s.orchestrator.afterRun(second, kernelLog: kernelLog, consoleOffsets: &offsets, environment: nil)
        #expect(second.provenance["kernel_log"] == nil && second.provenance["kernel_log.L1.before_run"] == nil)

        // A run stored without the console's size at its start (older placements): everything not
        // yet scanned counts against it, as before.
        var third = try await execute(s, condition: "plain", sequence: 2)
        third.provenance["L1.console"] = console
        var unscanned: [String: UInt64] = [:]
        third = try s.orchestrator.afterRun(third, kernelLog: kernelLog, consoleOffsets: &unscanned, environment: nil)
        #expect(third.provenance["kernel_log"]?.contains("xstate.c") == true)
        #expect(third.provenance["kernel_log.L1"] == "scanned (console since boot)")
    }
}
