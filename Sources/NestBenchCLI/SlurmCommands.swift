import ArgumentParser
import Foundation
import NestBenchCluster
import NestBenchConfig
import NestBenchModel
import NestBenchOrchestrator
import NestBenchPlatforms
import NestBenchStore
import NestBenchWorkloads

/// `nestbench slurm`: one experiment as N shards on a Slurm cluster, merged into one report.
struct SlurmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slurm",
        abstract: "Write (or submit) the Slurm jobs that run an experiment as shards on many testbeds and merge them.",
        discussion: """
            A job array 0…N-1 (each task alone on its node: --exclusive) runs `nestbench run FILE \
            --shard K/N --campaign ID` into its own store DIR/shard-K, resuming its shard when Slurm \
            requeues it; a merge job (--dependency=afterany) imports every shard into DIR/merged and \
            writes DIR/report.txt and DIR/report.html for the campaign. Without --submit, prints one \
            bash script that submits both; with --submit, writes the job scripts into DIR, runs sbatch \
            and prints the job ids. FILE, DIR and nestbench must be at the same paths on every node.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The experiment file (YAML); every node reads it at this path.")
    var file: String

    @Option(help: "Number of shards: array tasks 0…N-1, each `run --shard K/N` on its own node.")
    var shards: Int

    @Option(help: "The shared directory every node mounts at the same path: shard stores, merged store, logs, report.")
    var share: String

    @Option(help: "Slurm partition of the jobs.")
    var partition: String?

    @Option(help: "Slurm node features the shard tasks need (--constraint), e.g. a machine class: skylake&nvme.")
    var constraint: String?

    @Option(help: "Time limit of each shard task (Slurm's --time), e.g. 2-00:00:00.")
    var time: String?

    @Flag(help: "Submit with sbatch and print the job ids (default: print the submission script).")
    var submit = false

    @Option(help: "The campaign id every shard carries (default: a new one; the same id resubmitted resumes the campaign).")
    var campaign: String?

    @Option(help: "The nestbench executable on the nodes (default: this one's absolute path).")
    var nestbench: String?

    @Option(help: "Seed of the plan every shard takes its blocks from (default: the file's, else drawn now).")
    var seed: UInt64?

    @Flag(help: "Every shard runs exactly its minimum repetitions (no adaptive blocks).")
    var fixedRepetitions = false

    @Option(name: .customLong("tag"), help: "A key=value tag stored with every shard's run; repeatable.")
    var tags: [String] = []

    func validate() throws {
        if shards < 1 { throw ValidationError("--shards takes a number of shards of at least 1, found \(shards)") }
        for tag in tags where !tag.contains("=") || tag.split(separator: "=", maxSplits: 1)[0].contains(RunTags.scopeSeparator) {
            throw ValidationError("--tag takes key=value with no \"@\" in the key, found \"\(tag)\"")
        }
    }

    func run() async throws {
        _ = global.makeLogger()
        let loaded: LoadedExperiment
        do {
            loaded = try ExperimentLoader.load(path: file, catalog: WorkloadRegistry.standard())
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
        // Every shard must get whole blocks of its own (the same check `run --shard` makes).
        var generator = SeededGenerator(seed: 0)
        do {
            _ = try Planner.initialPlan(for: loaded.experiment, shard: Shard(index: 0, count: shards), generator: &generator)
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: "\(file): \(error.message)")
        }
        let executable = try nestbench ?? Self.thisExecutable()
        let c = SlurmCampaign(
            experimentFile: Self.absolute(file), shards: shards, share: Self.absolute(share),
            campaign: campaign ?? Orchestrator.newRunID(), nestbench: Self.absolute(executable),
            seed: Orchestrator.seed(option: seed, experiment: loaded.experiment), partition: partition,
            constraint: constraint, time: time, fixedRepetitions: fixedRepetitions, tags: tags)
        let problems = c.problems
        if !problems.isEmpty { throw CommandFailure(code: ExitCodes.error, message: problems.joined(separator: "\n")) }
        guard submit else {
            Console.out(SlurmScripts.submission(c))
            return
        }
        let ids: (array: String, merge: String)
        do {
            ids = try await SlurmSubmitter().submit(c)
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.message)
        }
        Console.out("campaign \(c.campaign)\nshards \(ids.array)\nmerge \(ids.merge)\n")
        Console.error(
            "nestbench: campaign \(c.campaign): \(shards) shard task(s) in job array \(ids.array), merge job \(ids.merge); "
                + "logs in \(c.logDirectory), the report will be \(c.reportText) and \(c.reportHTML)")
    }

    static func absolute(_ path: String) -> String {
        URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
            .standardizedFileURL.path
    }

    /// This process's executable, as the kernel names it.
    static func thisExecutable() throws -> String {
        do {
            return try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        } catch {
            throw CommandFailure(
                code: ExitCodes.error, message: "cannot tell where this nestbench is (/proc/self/exe): pass --nestbench PATH")
        }
    }
}

/// `nestbench shard-status`: what a Slurm shard task does with its store (new, resume, done).
struct ShardStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shard-status",
        abstract:
            "Say what a shard of a campaign needs: `new`, `resume RUN_ID` or `done RUN_ID` (used by `nestbench slurm`'s jobs).")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var resultsOptions: ResultsOptions

    @Option(help: "The campaign id.")
    var campaign: String

    @Option(
        help: "The shard, K/N.",
        transform: { text in
            guard let shard = Shard(parsing: text) else {
                throw ValidationError("--shard takes K/N with 0 ≤ K < N (e.g. 0/4), found \"\(text)\"")
            }
            return shard
        })
    var shard: Shard

    @Flag(
        help: """
            This process is the shard's only runner (a Slurm array task: Slurm runs one at a time): once \
            the store's lock is free, an experiment run of the shard still marked running belongs to an \
            attempt that died (on any node) and is marked killed, to be resumed.
            """)
    var takeOver = false

    func run() async throws {
        _ = global.makeLogger()
        guard FileManager.default.fileExists(atPath: resultsOptions.databasePath) else {
            Console.out("new\n")
            return
        }
        // With --take-over, the store's lock first: a live runner (this shard's earlier attempt
        // still running somewhere) holds it, a dead one's lock is gone (flock: with its process,
        // or with its node's NFS lease).
        let locks =
            takeOver
            ? try await CommandLocks.take([CommandLocks.store(resultsOptions.databasePath)], wait: true, refusal: "") : []
        defer { for lock in locks { lock.release() } }
        let store = try resultsOptions.openStore()
        guard
            let latest = try store.list().first(where: { $0.campaign == campaign && $0.shard == shard.description })
        else {
            Console.out("new\n")
            return
        }
        switch ExperimentRunRecord.Status(rawValue: latest.status) {
        case .completed, .nothingRan:
            Console.out("done \(latest.id)\n")
        case .interrupted, .killed, .failed:
            Console.out("resume \(latest.id)\n")
        case .running:
            guard takeOver else {
                throw CommandFailure(
                    code: ExitCodes.error,
                    message:
                        "\(resultsOptions.databasePath): experiment run \(latest.id) (shard \(shard) of campaign \(campaign)) is still running"
                )
            }
            try store.markKilled(latest.id)
            Console.error(
                "nestbench: experiment run \(latest.id) was left running by an earlier attempt of this shard (its store lock is free): marked killed, to be resumed"
            )
            Console.out("resume \(latest.id)\n")
        case nil:
            throw CommandFailure(
                code: ExitCodes.error,
                message: "\(resultsOptions.databasePath): experiment run \(latest.id) has an unknown status \"\(latest.status)\"")
        }
    }
}
