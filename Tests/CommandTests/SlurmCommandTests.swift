import Foundation
import NestBenchCluster
import NestBenchModel
import NestBenchStore
import Testing

@testable import NestBenchCLI

/// `slurm` (the printed submission), `shard-status` (what a shard task does with its store) and
/// `import --from` (the merge job's import), in process.
@Suite("Slurm commands in process", .serialized)
struct SlurmCommandTests {
    static let experiment = """
        name: sharded
        baseline: thp-never
        seed: 11
        configurations:
          thp-never:
            host: {thp: {enabled: never}}
          thp-always:
            host: {thp: {enabled: always}}
        workloads:
          - {name: random-access, suite: micro, label: micro, params: {size: 64MiB, ops: 1000000}, timeout: 60s}
        conditions:
          clean: {}
        repetitions: {min: 4, max: 4}
        """

    /// A results directory holding the given experiment runs (one ok run each), each finished with
    /// its status (`running` ones are left running, owned by this process).
    static func store(
        _ runs: [(id: String, campaign: String?, shard: Shard?, status: ExperimentRunRecord.Status)], in dir: String? = nil
    ) throws -> String {
        let dir = dir ?? InProcess.temporaryDirectory()
        let store = try Store(path: Store.path(inResults: dir))
        let experiment = Experiment(
            name: "sharded", baseline: "base", configurations: [Configuration(name: "base")],
            workloads: [WorkloadSpec(suite: "micro", name: "random-access")])
        for (i, entry) in runs.enumerated() {
            let planned = PlannedRun(
                sequence: 0, configuration: "base", workload: "random-access", condition: "clean", repetition: 1)
            try store.begin(
                ExperimentRunRecord(
                    id: entry.id, experiment: experiment, filePath: "e.yaml", contentHash: "h", content: "name: sharded", seed: 1,
                    plan: [planned], startedAt: Date(timeIntervalSince1970: 1_000_000 + Double(i)), status: .running,
                    machine: InProcess.machine, campaign: entry.campaign, shard: entry.shard))
            try store.record(
                RunRecord(
                    experimentRunID: entry.id, planned: planned, status: .ok, startedAt: Date(), endedAt: Date(),
                    metrics: [
                        Metric(name: "ops_per_sec", value: 100, unit: "ops/s", polarity: .higherIsBetter, source: "workload")
                    ]))
            if entry.status != .running { try store.finish(entry.id, status: entry.status) }
        }
        return dir
    }

    static func status(_ results: String, _ id: String) throws -> String? {
        try Store(path: Store.path(inResults: results)).experimentRun(id)?.status.rawValue
    }

    @Test func slurmPrintsTheSubmissionOfTheCampaign() async throws {
        let dir = InProcess.temporaryDirectory()
        try Self.experiment.write(toFile: dir + "/e.yaml", atomically: true, encoding: .utf8)
        let r = await InProcess.run([
            "slurm", dir + "/e.yaml", "--shards", "2", "--share", "/shared/x", "--campaign", "c1", "--nestbench",
            "/opt/nb/nestbench", "--partition", "bench", "--constraint", "skylake", "--time", "1-00:00:00", "--tag", "k=v",
        ])
        #expect(r.status == 0, "\(r.stderr)")
        let expected = SlurmCampaign(
            experimentFile: dir + "/e.yaml", shards: 2, share: "/shared/x", campaign: "c1", nestbench: "/opt/nb/nestbench",
            seed: 11, partition: "bench", constraint: "skylake", time: "1-00:00:00", tags: ["k=v"])
        #expect(r.stdout == SlurmScripts.submission(expected), "the file's seed, every option in the scripts")
        #expect(!FileManager.default.fileExists(atPath: "/shared/x"), "printing submits and writes nothing")
    }

    @Test func slurmRefusesWhatCannotRun() async throws {
        let dir = InProcess.temporaryDirectory()
        try Self.experiment.write(toFile: dir + "/e.yaml", atomically: true, encoding: .utf8)
        let tooMany = await InProcess.run([
            "slurm", dir + "/e.yaml", "--shards", "3", "--share", "/s", "--nestbench", "/nb",
        ])
        #expect(tooMany.status == ExitCodes.error)
        #expect(
            tooMany.stderr.contains(dir + "/e.yaml: --shard") && tooMany.stderr.contains("repetition blocks"), "\(tooMany.stderr)"
        )
        let badID = await InProcess.run([
            "slurm", dir + "/e.yaml", "--shards", "2", "--share", "/s", "--nestbench", "/nb", "--campaign", "a b",
        ])
        #expect(badID.status == ExitCodes.error && badID.stderr.contains("--campaign: \"a b\""), "\(badID.stderr)")
        let badFile = await InProcess.run(["slurm", dir + "/missing.yaml", "--shards", "2", "--share", "/s"])
        #expect(badFile.status == ExitCodes.error && badFile.stderr.contains("missing.yaml"), "\(badFile.stderr)")
        let zero = await InProcess.run(["slurm", dir + "/e.yaml", "--shards", "0", "--share", "/s"])
        #expect(zero.status == ExitCodes.usage)
    }

    @Test func shardStatusSaysNewResumeOrDone() async throws {
        let none = await InProcess.run([
            "shard-status", "--results", InProcess.temporaryDirectory() + "/nothing", "--campaign", "c", "--shard", "0/2",
        ])
        #expect(none.status == 0 && none.stdout == "new\n", "\(none.stderr)")
        let results = try Self.store([
            ("a-done", "c", Shard(index: 0, count: 2), .completed),
            ("b-stopped", "c", Shard(index: 1, count: 2), .interrupted),
            ("x-other", "d", Shard(index: 0, count: 2), .interrupted),
        ])
        func ask(_ campaign: String, _ shard: String) async -> InProcess.Result {
            await InProcess.run(["shard-status", "--results", results, "--campaign", campaign, "--shard", shard])
        }
        #expect(await ask("c", "0/2").stdout == "done a-done\n")
        #expect(await ask("c", "1/2").stdout == "resume b-stopped\n")
        #expect(await ask("d", "1/2").stdout == "new\n", "another campaign's run is not this shard's")
        #expect(await ask("c", "0/4").stdout == "new\n", "another sharding is another shard")
        let bad = await ask("c", "2/2")
        #expect(bad.status == ExitCodes.usage && bad.stderr.contains("0 ≤ K < N"))
    }

    /// A run still marked running: refused without --take-over; with it, taken over only once the
    /// store's lock is free (a live attempt holds it), then marked killed and resumed.
    @Test(.timeLimit(.minutes(1)))
    func takeOverWaitsForTheStoreLock() async throws {
        let results = try Self.store([("r-live", "c", Shard(index: 0, count: 1), .running)])
        let refused = await InProcess.run(["shard-status", "--results", results, "--campaign", "c", "--shard", "0/1"])
        #expect(
            refused.status == ExitCodes.error && refused.stderr.contains("r-live") && refused.stderr.contains("still running"))
        #expect(try Self.status(results, "r-live") == "running")

        // An earlier attempt holding the store's lock (flock on its own open file description).
        let fd = open(Store.path(inResults: results) + ".lock", O_RDWR | O_CREAT, 0o644)
        try #require(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
        let asking = Task {
            await InProcess.run(["shard-status", "--results", results, "--campaign", "c", "--shard", "0/1", "--take-over"])
        }
        try await Task.sleep(for: .milliseconds(2500))
        #expect(try Self.status(results, "r-live") == "running", "not taken over while the lock is held")
        flock(fd, LOCK_UN)
        close(fd)
        let taken = await asking.value
        #expect(taken.status == 0 && taken.stdout == "resume r-live\n", "\(taken.stderr)")
        #expect(taken.stderr.contains("waiting for"), "\(taken.stderr)")
        #expect(try Self.status(results, "r-live") == "killed")
    }

    /// The merge job's import: finished experiment runs of the campaign from each shard's store;
    /// an unfinished one or a store without the campaign is named and fails the import (the rest
    /// is imported); once finished, it is imported by the next merge.
    @Test func importFromShardStores() async throws {
        let shard0 = try Self.store([
            ("a0", "c", Shard(index: 0, count: 2), .completed), ("z-other", "d", Shard(index: 0, count: 2), .completed),
        ])
        let shard1 = try Self.store([("b1", "c", Shard(index: 1, count: 2), .interrupted)])
        let merged = InProcess.temporaryDirectory()
        let first = await InProcess.run([
            "import", "--results", merged, "--from", shard0, "--from", shard1, "--from", merged + "/missing", "--campaign", "c",
        ])
        #expect(first.status == ExitCodes.error)
        #expect(first.stdout.contains("imported a0 (sharded, 1 runs)"), "\(first.stdout)")
        #expect(first.stderr.contains("experiment run b1 (shard 1/2) is interrupted, not imported"), "\(first.stderr)")
        #expect(first.stderr.contains(merged + "/missing/nestbench.sqlite: no result store"), "\(first.stderr)")
        let listed = await InProcess.run(["list", "--results", merged])
        #expect(
            listed.stdout.split(separator: "\n").filter { !$0.hasPrefix("\t") }.map { $0.prefix(2) } == ["a0"], "\(listed.stdout)"
        )

        try Store(path: Store.path(inResults: shard1)).finish("b1", status: .completed)
        let second = await InProcess.run([
            "import", "--results", merged, "--from", shard0, "--from", shard1, "--campaign", "c",
        ])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.contains("already present: a0") && second.stdout.contains("imported b1"), "\(second.stdout)")
        let none = await InProcess.run(["import", "--results", merged, "--from", shard0, "--campaign", "nope"])
        #expect(none.status == ExitCodes.error && none.stderr.contains("no experiment run of campaign nope"))
        let usage = await InProcess.run(["import", "--results", merged])
        #expect(usage.status == ExitCodes.usage)
    }
}
