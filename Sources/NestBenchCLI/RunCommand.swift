import ArgumentParser
import Dispatch
import Foundation
import Logging
import NestBenchAnalysis
import NestBenchBuildInfo
import NestBenchConfig
import NestBenchModel
import NestBenchOrchestrator
import NestBenchPlatforms
import NestBenchProcess
import NestBenchStore
import NestBenchVM
import NestBenchWorkloads

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run an experiment file and report the comparison against its baseline.",
        discussion: """
            Runs configurations × workloads × conditions × repetitions in a seeded, randomized, \
            interleaved order. Every run is stored as soon as it ends; knobs changed on this machine \
            are restored at the end, on Ctrl-C and SIGTERM, and by the next nestbench after a kill -9.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var resultsOptions: ResultsOptions

    @Argument(help: "The experiment file (YAML), e.g. Suites/quickstart.yaml.")
    var file: String

    @Option(help: "Seed of the run order (default: the file's seed, else a random one; always recorded).")
    var seed: UInt64?

    @Option(name: .customLong("tag"), help: "A key=value tag stored with the run (commit, kernel id, …); repeatable.")
    var tags: [String] = []

    @Flag(help: "Run exactly the minimum repetitions (no adaptive follow-up blocks).")
    var fixedRepetitions = false

    @Flag(help: "Validate the file and print the planned order; change and run nothing.")
    var dryRun = false

    @Option(help: "Report format on stdout: table, markdown, json, csv.")
    var format: ReportFormat = .table

    @Flag(help: "Show every metric's comparison in the table/markdown report (JSON, CSV and HTML always have them).")
    var allMetrics = false

    @Option(
        help: ArgumentHelp(
            "Continue a stopped experiment run of this file: its id (or a unique prefix), 'latest' (the newest of this experiment and shard, and --campaign), or 'auto' (that one if it can be resumed; nothing when it is a completed shard of the --campaign; else start a new run).",
            valueName: "RUN_ID|latest|auto"))
    var resume: String?

    @Flag(help: "With --resume: also run the failed runs again.")
    var retryFailed = false

    @Flag(help: "Wait for the result store's and this machine's locks instead of exiting 1 when another nestbench holds them.")
    var wait = false

    @Option(
        help: ArgumentHelp(
            "Run only share K of N (K from 0, as Slurm's array task ids): whole repetition blocks K, K+N, …",
            valueName: "K/N"))
    var shard: String?

    @Option(help: "A campaign id stored with the experiment run (the shards of one experiment; report --campaign ID).")
    var campaign: String?

    var parsedShard: Shard? { shard.flatMap { Shard(parsing: $0) } }

    func validate() throws {
        if let shard, Shard(parsing: shard) == nil {
            throw ValidationError("--shard takes K/N with 0 ≤ K < N (e.g. 0/4), found \"\(shard)\"")
        }
        if resume != nil && seed != nil { throw ValidationError("--resume continues with the stored seed; drop --seed") }
        if retryFailed && resume == nil { throw ValidationError("--retry-failed goes with --resume") }
        if resume != nil && dryRun { throw ValidationError("--dry-run plans a new run; drop --resume") }
        if let campaign, campaign.isEmpty || campaign.count > 200 {
            throw ValidationError("--campaign takes an id of 1…200 characters")
        }
        for tag in tags where !tag.contains("=") || tag.split(separator: "=", maxSplits: 1)[0].contains(RunTags.scopeSeparator) {
            throw ValidationError("--tag takes key=value with no \"@\" in the key, found \"\(tag)\"")
        }
    }

    func run() async throws {
        let logger = global.makeLogger()
        let registry = WorkloadRegistry.standard()
        let loaded: LoadedExperiment
        do {
            loaded = try ExperimentLoader.load(path: file, catalog: registry)
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
        // NestBench's own version and commit are automatic tags (a --tag of the same name wins).
        var parsedTags: [String: String] = BuildInfo.tags
        for tag in tags {
            let parts = tag.split(separator: "=", maxSplits: 1)
            parsedTags[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }

        if dryRun {
            // The seed the real run would use: --seed, else the file's, else a fresh one, printed so
            // `run --seed N` reproduces exactly this order.
            let chosen = Orchestrator.seed(option: seed, experiment: loaded.experiment)
            var generator = SeededGenerator(seed: chosen)
            let plan: [PlannedRun]
            if let shard = parsedShard {
                do {
                    plan = try Planner.initialPlan(for: loaded.experiment, shard: shard, generator: &generator)
                } catch {
                    throw CommandFailure(code: ExitCodes.error, message: "\(file): \(error.message)")
                }
            } else {
                plan = Planner.initialPlan(for: loaded.experiment, generator: &generator)
            }
            let source = seed != nil ? "--seed" : loaded.experiment.seed != nil ? "the file's seed" : "drawn now"
            Console.out("seed \(chosen) (\(source)); `nestbench run \(file) --seed \(chosen)` runs this order\n")
            Console.out(Self.bootCost(loaded.experiment))
            let stacks = Set(loaded.experiment.configurations.filter { $0.platform == .qemu }.map(\.name))
            for p in plan {
                let boot =
                    stacks.contains(p.configuration)
                    ? "\tboot \(loaded.experiment.repetitions.bootIndex(repetition: p.repetition) + 1)" : ""
                Console.out("\(p.sequence)\t\(p.configuration)\t\(p.workload)\t\(p.condition)\trep \(p.repetition)\(boot)\n")
            }
            Console.out(
                "then adaptive blocks (cells with a wide CI, up to \(loaded.experiment.repetitions.max) repetitions) "
                    + "drawn from the same seed\n")
            let availability = Availability(loaded.experiment, registry: registry)
            for line in availability.lines { Console.error("preflight: \(line)") }
            if availability.nothingRuns {
                throw CommandFailure(code: ExitCodes.error, message: "\(file): no cell of the experiment can run here")
            }
            // The same machine checks as `run` (knobs, pinned CPUs), on this machine.
            let problems =
                LocalPlatform.preflight(loaded.experiment.configurations) + Orchestrator.cpuProblems(loaded.experiment)
            for problem in problems { Console.error("preflight (as run would check it on this machine): \(file): \(problem)") }
            if !problems.isEmpty { throw CommandFailure(code: ExitCodes.error, message: "") }
            Console.error("nestbench: preflight passed on this machine (knobs, pinned CPUs); nothing was changed")
            if !availability.unavailable.isEmpty {
                throw CommandFailure(
                    code: ExitCodes.workloadFailed,
                    message:
                        "\(availability.unavailable.count) workload(s) cannot run here; their cells would be stored as unavailable"
                )
            }
            return
        }

        // Pinned CPUs this machine cannot give: before anything is opened or changed.
        let cpuProblems = Orchestrator.cpuProblems(loaded.experiment)
        if !cpuProblems.isEmpty {
            throw CommandFailure(
                code: ExitCodes.error, message: cpuProblems.map { "\(file): \($0)" }.joined(separator: "\n"))
        }

        // A shard too small for its own ratio: refused before anything is taken or changed.
        if let shard = parsedShard {
            var generator = SeededGenerator(seed: 0)
            do {
                _ = try Planner.initialPlan(for: loaded.experiment, shard: shard, generator: &generator)
            } catch {
                throw CommandFailure(code: ExitCodes.error, message: "\(file): \(error.message)")
            }
        }

        // One writer per store, one measurement per machine: both locks before any knob or
        // measurement, held until this process exits.
        let locks = try await takeLocks()

        let journal = KnobJournal()
        do {
            OrphanedExperiments.mark(journal)
            let restored = try journal.recover()
            for entry in restored {
                Console.error(
                    "nestbench: restored \(entry.path) to \"\(entry.original)\" (left changed by an earlier nestbench that was killed)"
                )
            }
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }

        let store = try resultsOptions.openStore()
        // This process holds the store's writer lock: a `running` experiment run left in it has no
        // live owner, even one on another host (a crashed node; a batch job requeued elsewhere).
        for id in (try? store.markKilledUnderLock()) ?? [] {
            Console.error(
                "nestbench: experiment run \(id) was left running by a nestbench that no longer holds the store: marked killed")
        }
        let resumeID: String?
        do {
            resumeID = try resume.flatMap { try resumeTarget($0, loaded: loaded, store: store) }
        } catch let done as AlreadyComplete {
            Console.error(
                "nestbench: \(parsedShard.map { "shard \($0) of " } ?? "")campaign \(campaign ?? "") already completed as experiment run \(done.id): nothing to run (--resume auto)"
            )
            guard let record = try store.experimentRun(done.id) else { return }
            let report = Report(record: record.declared(), runs: try store.runs(of: done.id))
            Console.out(try ReportRenderer.render(report, as: format, allMetrics: allMetrics))
            return
        }
        let platform = LocalPlatform(journal: journal, logger: logger)
        var vmPlatform: QemuPlatform?
        if loaded.experiment.configurations.contains(where: { $0.platform == .qemu }) {
            do {
                vmPlatform = try await Self.makeQemuPlatform(logger: logger)
            } catch {
                throw CommandFailure(code: ExitCodes.error, message: "\(file): \(error)")
            }
            if case .emulated(let reason) = vmPlatform!.virtualization {
                Console.error("nestbench: \(HostVirtualization.emulatedNote) — \(reason)")
            }
        }
        let orchestrator = Orchestrator(
            registry: registry, platform: platform, store: store, vmPlatform: vmPlatform, logger: logger)
        do {
            try orchestrator.preflight(loaded.experiment)
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: "\(file): \(error.description)")
        }

        // Some cells cannot run: said up front; the run goes on and exits 3 at the end.
        let availability = Availability(loaded.experiment, registry: registry)
        for line in availability.lines { Console.error("nestbench: \(line) (its cells will be stored as unavailable)") }

        let signals = SignalTrap.install(cooperative: true)
        defer { signals.cancel() }
        let interactive = isatty(STDERR_FILENO) == 1
        let id: String
        do {
            id = try await orchestrator.run(
                loaded,
                options: RunOptions(
                    resultsDirectory: resultsOptions.results, seed: seed, tags: parsedTags,
                    fixedRepetitions: fixedRepetitions, shard: parsedShard, campaign: campaign,
                    resume: resumeID.map { RunOptions.Resume(id: $0, retryFailed: retryFailed) },
                    started: { id in
                        for lock in locks { lock.note(run: id) }
                        if resumeID != nil { Console.error("nestbench: resuming experiment run \(id)") }
                    }),
                progress: { p in
                    if let finished = p.finished {
                        let status = finished.status == .ok ? "ok" : "\(finished.status.rawValue): \(finished.reason ?? "")"
                        if !interactive || finished.status != .ok {
                            Console.status("\(interactive ? "\r\u{1B}[K" : "")  #\(p.index + 1) \(status)\n")
                        }
                        return
                    }
                    let eta = p.etaSeconds.map { " ETA ~\(Self.duration($0))" } ?? ""
                    let line =
                        "[\(p.index + 1)/\(p.total)] \(p.planned.configuration) | \(p.planned.workload) | "
                        + "\(p.planned.condition) | rep \(p.planned.repetition) — elapsed \(Self.duration(p.elapsedSeconds))\(eta)"
                    Console.status(interactive ? "\r\u{1B}[K" + line : line + "\n")
                })
        } catch let interrupted as Interrupted {
            throw CommandFailure(
                code: 128 + interrupted.signal,
                message:
                    "interrupted by signal \(interrupted.signal): the workload was stopped, the machine restored, the experiment run marked interrupted in \(resultsOptions.databasePath)"
            )
        }
        if let signal = Cancellation.shared.signal {
            throw CommandFailure(
                code: 128 + signal, message: "interrupted by signal \(signal) after the experiment finished (stored as run \(id))"
            )
        }
        if interactive { Console.status("\r\u{1B}[K") }
        guard let record = try store.experimentRun(id) else {
            throw CommandFailure(code: ExitCodes.error, message: "run \(id) vanished from the store")
        }
        let runs = try store.runs(of: id)
        let report = Report(record: record.declared(), runs: runs)
        do {
            Console.out(try ReportRenderer.render(report, as: format, allMetrics: allMetrics))
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: "run \(id) is stored, but \(error.description)")
        }
        Console.error("nestbench: stored as run \(id) in \(resultsOptions.databasePath)")
        if runs.contains(where: { $0.status == .failed || $0.status == .unavailable }) {
            throw CommandFailure(
                code: ExitCodes.workloadFailed, message: "some runs failed or could not run here (see the report)")
        }
    }

    /// The store's lock (`<results>/nestbench.sqlite.lock`) and the machine's
    /// (`Locks.machineLockPath`), in that order; with `--wait` polled until free, else a holder
    /// is an error naming it.
    func takeLocks() async throws -> [FileLock] {
        try await CommandLocks.take(
            [CommandLocks.store(resultsOptions.databasePath), CommandLocks.machine], wait: wait,
            refusal: "; pass --wait to wait for it")
    }

    /// `--resume auto --campaign ID`: this campaign's shard has a completed experiment run.
    struct AlreadyComplete: Error {
        var id: String
    }

    /// The experiment run `--resume` continues (nil: `auto` found none, a new run starts), or an
    /// error naming why it cannot be resumed.
    func resumeTarget(_ reference: String, loaded: LoadedExperiment, store: Store) throws -> String? {
        let id: String
        if reference == "latest" || reference == "auto" {
            let shardText = parsedShard?.description
            guard
                let newest = try store.list().first(where: {
                    $0.experiment == loaded.experiment.name && $0.shard == shardText
                        && (campaign == nil || $0.campaign == campaign)
                })
            else {
                if reference == "auto" { return nil }
                throw CommandFailure(
                    code: ExitCodes.baselineNotFound,
                    message:
                        "\(resultsOptions.databasePath): no experiment run of \(loaded.experiment.name)\(shardText.map { " shard \($0)" } ?? "") to resume"
                )
            }
            id = newest.id
        } else {
            guard let found = try store.resolve(reference) else {
                throw CommandFailure(
                    code: ExitCodes.baselineNotFound,
                    message: "no run \"\(reference)\" in \(resultsOptions.databasePath) (nestbench list shows the stored runs)")
            }
            id = found
        }
        guard let stored = try store.experimentRun(id) else {
            throw CommandFailure(code: ExitCodes.baselineNotFound, message: "run \(id) vanished from the store")
        }
        let hasFailed = try store.runs(of: id).contains { $0.status == .failed }
        if reference == "auto" && !ResumeCheck.resumable.contains(stored.status) && !(retryFailed && hasFailed) {
            // A campaign's shard that already completed (a batch job run again) is not measured twice.
            if let campaign, stored.status == .completed, stored.campaign == campaign {
                throw AlreadyComplete(id: id)
            }
            return nil
        }
        if let problem = ResumeCheck.problem(
            stored: stored, loaded: loaded, shard: parsedShard, retryFailed: retryFailed, hasFailedRuns: hasFailed)
        {
            throw CommandFailure(code: ExitCodes.error, message: "--resume: \(problem)")
        }
        return id
    }

    /// The qemu platform: the guest agent built from Harness/guest, images cached beside the harness.
    static func makeQemuPlatform(logger: Logger) async throws -> QemuPlatform {
        let harness = HarnessLocator()
        guard let directory = harness.harnessDirectory else {
            throw VMError("cannot find NestBench's Harness/ directory; run from the checkout or set NESTBENCH_HARNESS")
        }
        guard ProcessRunner.resolve("qemu-system-x86_64") != nil else {
            throw VMError("qemu-system-x86_64 not found; install qemu-system-x86 (make deps)")
        }
        let agent = try await harness.program("guest/nb-agent.c", name: "nb-agent")
        let cache = (harness.cacheDirectory as NSString).deletingLastPathComponent
        var booter = StackBooter(
            images: GuestImages(harnessDirectory: directory, cacheDirectory: cache), agentBinary: agent,
            virtualization: HostVirtualization.detect(), logger: logger)
        // `detachable:` guests run statically linked copies of the agent and the micro, put where
        // the dynamic ones are seen (their paths in this machine's root).
        // Only those guests need them: a build that fails (no libc.a) fails only their boot.
        if let micro = try? await harness.program("micro/nb-micro.c", name: "nb-micro"),
            let staticAgent = try? await harness.program("guest/nb-agent.c", name: "nb-agent-static", flags: ["-static"]),
            let staticMicro = try? await harness.program("micro/nb-micro.c", name: "nb-micro-static", flags: ["-static"])
        {
            booter.standaloneFiles = [(staticAgent, agent), (staticMicro, micro)]
        }
        return QemuPlatform(booter: booter, logger: logger)
    }

    /// What the reboot policy costs: boots per stack configuration and their count.
    static func bootCost(_ experiment: Experiment) -> String {
        let stacks = experiment.configurations.filter { $0.platform == .qemu }
        guard !stacks.isEmpty else { return "" }
        let b = experiment.repetitions.stackBoots
        let layers = stacks.map(\.layers.count).max() ?? 0
        return
            "reboots: \(b) boot(s) per stack configuration × \(stacks.count) configurations = \(b * stacks.count) stack boots "
            + "(a \(layers)-layer stack takes minutes to boot: ~4 min for 3 layers on an emulated host; set repetitions.boots)\n"
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
    }
}

/// Ctrl-C, SIGTERM and SIGHUP. Cooperative (`run`): the signal requests cancellation and kills
/// the workload; the run loop stops at its next safe point, restores the machine on its own
/// thread and marks the run interrupted; the command exits 128 + signal. Otherwise: reap
/// children, run the cleanup actions, exit 128 + signal.
final class SignalTrap: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []

    static func install(cooperative: Bool = false) -> SignalTrap {
        let trap = SignalTrap()
        ProcessRunner.ignoreBrokenPipes()
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                if cooperative {
                    let first = !Cancellation.shared.isRequested
                    Cancellation.shared.request(signal: sig)
                    Console.error(
                        first
                            ? "\nnestbench: interrupted by signal \(sig): stopping the workload; the machine is restored when it has stopped"
                            : "\nnestbench: already stopping (signal \(sig)); kill -9 leaves the knobs to the next nestbench (journal)"
                    )
                    return
                }
                Console.error("\nnestbench: interrupted by signal \(sig): stopping workloads and restoring the machine")
                CleanupRegistry.shared.runAll()
                let failures = RestoreFailures.all
                for f in failures { Console.error("nestbench: restoring the machine failed: \(f)") }
                exit(failures.isEmpty ? 128 + sig : ExitCodes.error)
            }
            source.resume()
            trap.sources.append(source)
        }
        return trap
    }

    func cancel() {
        for s in sources { s.cancel() }
    }
}
