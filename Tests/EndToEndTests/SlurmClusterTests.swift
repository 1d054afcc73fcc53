import Foundation
import Testing

/// A real Slurm cluster on loopback (Harness/slurm/loopback-cluster.sh: munged, slurmctld and
/// slurmd under a temporary directory): `nestbench slurm --submit` of a 2-shard experiment, the
/// jobs waited for, the merged store checked, the daemons stopped by pid.
enum SlurmCluster {
    static let script = CLI.packageRoot + "/Harness/slurm/loopback-cluster.sh"
    static let requirement: Comment =
        "needs root and slurm + munge (installed by the test when missing: slurmctld, slurmd, slurm-client, munge); NESTBENCH_SKIP_SLURM=1 skips it (make check)"

    /// Root, not skipped, and slurm installed (the test installs it when missing; a machine where
    /// that fails says why on stderr and skips).
    static let ready: Bool = {
        guard ProcessInfo.processInfo.environment["NESTBENCH_SKIP_SLURM"] != "1", CLI.canChangeTHP else { return false }
        let r = shell([script, "install"])
        if r.status != 0 {
            FileHandle.standardError.write(Data("SlurmCluster: slurm cannot be installed here: \(r.stderr)\n".utf8))
        }
        return r.status == 0
    }()

    /// Runs a program (argv) with the environment plus `environment`. Its output goes to files,
    /// not pipes: a daemon it leaves running cannot hold a pipe open and block the reader.
    static func shell(_ argv: [String], environment: [String: String] = [:]) -> CLI.Result {
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0].contains("/") ? argv[0] : "/usr/bin/" + argv[0])
        p.arguments = Array(argv.dropFirst())
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        guard let out = FileHandle(forWritingAtPath: dir + "/out"), let err = FileHandle(forWritingAtPath: dir + "/err") else {
            return CLI.Result(status: -1, stdout: "", stderr: "\(dir): cannot open output files")
        }
        defer {
            try? out.close()
            try? err.close()
        }
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        do {
            try p.run()
        } catch {
            return CLI.Result(status: -1, stdout: "", stderr: "\(argv[0]): \(error)")
        }
        p.waitUntilExit()
        return CLI.Result(
            status: p.terminationStatus, stdout: (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")
    }
}

extension MachineSuite {
    @Suite("Slurm cluster on loopback", .serialized)
    struct SlurmClusterTests {
        /// 2 shards of a 4-block micro experiment through sbatch; the merge job's store has both
        /// shards' experiment runs in one campaign, every run ok with its testbed recorded, and the
        /// campaign's report covers them. The share's path has a blank and a quote: every path the
        /// scripts name reaches sbatch's directive parser and bash quoted.
        @Test(.timeLimit(.minutes(8)), .enabled(if: SlurmCluster.ready, SlurmCluster.requirement))
        func twoShardsThroughSlurmMergedIntoOneCampaign() throws {
            try withCluster { dir, env in
                CLI.write(CLI.smallExperiment(min: 4), to: dir + "/e.yaml")
                let share = dir + "/share it's"
                let jobs = try submit(dir + "/e.yaml", share: share, env: env)
                try waitForQueue(jobs, env: env)
                let logs = logs(share)
                let mergeJob = SlurmCluster.shell(["scontrol", "show", "job", jobs.merge], environment: env)
                #expect(mergeJob.stdout.contains("JobState=COMPLETED"), "\(mergeJob.stdout)\n\(logs)")
                for task in 0..<2 {
                    let job = SlurmCluster.shell(["scontrol", "show", "job", "\(jobs.array)_\(task)"], environment: env)
                    #expect(job.stdout.contains("JobState=COMPLETED"), "shard \(task): \(job.stdout)\n\(logs)")
                }
                try expectMerged(share, campaign: jobs.campaign, env: env, logs: logs)
                let report = try run(
                    ["report", "--campaign", jobs.campaign, "--results", share + "/merged", "--format", "json"], env: env)
                #expect(report.status == 0, "\(report.stderr)")
                let json = try #require(try JSONSerialization.jsonObject(with: Data(report.stdout.utf8)) as? [String: Any])
                let runs = try #require(json["runs"] as? [[String: Any]])
                #expect(runs.count == 8, "2 configurations × 4 repetitions over both shards")
                #expect(runs.allSatisfy { ($0["status"] as? String) == "ok" }, "\(runs.map { $0["status"] ?? "-" })")
                let testbeds = runs.compactMap { ($0["provenance"] as? [String: String])?["testbed"] }
                #expect(testbeds.count == 8, "every run records its testbed")
                #expect(FileManager.default.fileExists(atPath: share + "/report.html"))
                let text = try String(contentsOfFile: share + "/report.txt", encoding: .utf8)
                #expect(
                    text.contains("thp-always") && text.contains("campaign \(jobs.campaign)"), "the merge job's report: \(text)")
            }
        }

        /// Shard 0's nestbench killed (kill -9, as a crash) after its first stored run, its task
        /// requeued: the requeued task resumes the same experiment run (the in-flight run stored
        /// `interrupted`, every planned run ok exactly once), and the merge job (held meanwhile)
        /// imports one experiment run per shard.
        @Test(.timeLimit(.minutes(8)), .enabled(if: SlurmCluster.ready, SlurmCluster.requirement))
        func aKilledShardTaskRequeuedResumesItsShard() throws {
            try withCluster { dir, env in
                CLI.write(CLI.smallExperiment(ops: 40_000_000, min: 4), to: dir + "/e.yaml")
                let share = dir + "/share"
                let jobs = try submit(dir + "/e.yaml", share: share, env: env)
                #expect(SlurmCluster.shell(["scontrol", "hold", jobs.merge], environment: env).status == 0)
                // Shard 0 running with at least one run stored.
                var victim: Int32?
                let deadline = Date().addingTimeInterval(180)
                while victim == nil && Date() < deadline {
                    let list = try run(["list", "--results", share + "/shard-0"], env: env)
                    if list.stdout.contains("\trunning\t") && !list.stdout.contains("\t0 runs\t") {
                        victim = shardProcess(share: share, shard: 0, of: 2)
                    }
                    if victim == nil { Thread.sleep(forTimeInterval: 0.2) }
                }
                let pid = try #require(victim, "shard 0 never ran with a stored run: \(logs(share))")
                #expect(kill(pid, SIGKILL) == 0)
                let task = "\(jobs.array)_0"
                while !SlurmCluster.shell(["scontrol", "show", "job", task], environment: env).stdout.contains("JobState=FAILED")
                {
                    try #require(Date() < deadline.addingTimeInterval(60), "task \(task) did not end after kill -9")
                    Thread.sleep(forTimeInterval: 0.5)
                }
                let requeue = SlurmCluster.shell(["scontrol", "requeue", task], environment: env)
                #expect(requeue.status == 0, "\(requeue.stderr)")
                // Slurm delays a requeued job's start; now.
                _ = SlurmCluster.shell(["scontrol", "update", "JobId=\(task)", "StartTime=now"], environment: env)
                #expect(SlurmCluster.shell(["scontrol", "release", jobs.merge], environment: env).status == 0)
                try waitForQueue(jobs, env: env)
                let logs = logs(share)
                #expect(logs.contains("shard 0/2 on ") && logs.contains("restart 1)"), "\(logs)")
                #expect(logs.contains("resuming experiment run"), "\(logs)")
                try expectMerged(share, campaign: jobs.campaign, env: env, logs: logs)

                let report = try run(["report", "latest", "--results", share + "/shard-0", "--format", "json"], env: env)
                let json = try #require(try JSONSerialization.jsonObject(with: Data(report.stdout.utf8)) as? [String: Any])
                let runs = try #require(json["runs"] as? [[String: Any]])
                let ok = runs.filter { $0["status"] as? String == "ok" }
                let cells = Set(ok.map { "\($0["configuration"] ?? "")#\($0["repetition"] ?? "")" })
                #expect(
                    ok.count == 4 && cells.count == 4,
                    "each planned run of shard 0 ok exactly once: \(runs.map { $0["status"] ?? "" })")
                #expect(runs.filter { $0["status"] as? String == "interrupted" }.count == 1, "the run in flight, marked")
            }
        }

        /// A loopback cluster under a new directory for `body`, stopped by pid afterwards; `env`
        /// points sbatch and nestbench at it.
        func withCluster(_ body: (String, [String: String]) throws -> Void) throws {
            let dir = CLI.temporaryDirectory()
            chmod(dir, 0o755)
            let state = dir + "/slurm"
            let started = SlurmCluster.shell([SlurmCluster.script, "start", state])
            defer {
                let stopped = SlurmCluster.shell([SlurmCluster.script, "stop", state])
                #expect(stopped.status == 0, "\(stopped.stderr)")
                // Exactly the daemons it started are gone: no process names this cluster's directory.
                #expect(processes(mentioning: state).isEmpty, "\(processes(mentioning: state))")
            }
            try #require(started.status == 0, "\(started.stderr)")
            for daemon in ["munged", "slurmctld", "slurmd"] {
                let pid = try String(contentsOfFile: "\(state)/pids/\(daemon)", encoding: .utf8)
                #expect(kill(pid_t(pid.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, 0) == 0, "\(daemon) runs")
            }
            let env = [
                "SLURM_CONF": started.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                "NESTBENCH_STATE_DIR": dir + "/state", "NESTBENCH_MACHINE_LOCK": CLI.machineLock(state: dir + "/state"),
            ]
            try body(dir, env)
        }

        struct Jobs {
            var campaign: String
            var array: String
            var merge: String
        }

        func submit(_ file: String, share: String, env: [String: String]) throws -> Jobs {
            let submitted = try run(["slurm", file, "--shards", "2", "--share", share, "--submit", "--time", "10"], env: env)
            try #require(submitted.status == 0, "\(submitted.stderr)")
            let ids = Dictionary(
                submitted.stdout.split(separator: "\n").map { line -> (String, String) in
                    let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
                    return (parts[0], parts.count > 1 ? parts[1] : "")
                }, uniquingKeysWith: { a, _ in a })
            return Jobs(
                campaign: try #require(ids["campaign"]), array: try #require(ids["shards"]), merge: try #require(ids["merge"]))
        }

        /// Until every job of the campaign has left the queue.
        func waitForQueue(_ jobs: Jobs, env: [String: String]) throws {
            let deadline = Date().addingTimeInterval(6 * 60)
            while true {
                let q = SlurmCluster.shell(
                    ["squeue", "-h", "-j", "\(jobs.array),\(jobs.merge)", "-o", "%i %T"], environment: env)
                if q.status == 0 && q.stdout.isEmpty { return }
                try #require(Date() < deadline, "jobs still queued: \(q.stdout)")
                Thread.sleep(forTimeInterval: 1)
            }
        }

        /// The merged store holds one completed experiment run per shard, all of the campaign.
        func expectMerged(_ share: String, campaign: String, env: [String: String], logs: String) throws {
            let list = try run(["list", "--results", share + "/merged"], env: env)
            #expect(list.status == 0, "\(list.stderr)")
            let entries = list.stdout.split(separator: "\n").filter { !$0.hasPrefix("\t") }
            #expect(entries.count == 2, "\(list.stdout)\n\(logs)")
            for shard in ["0/2", "1/2"] {
                #expect(
                    entries.filter { $0.contains("\tcompleted\t") && $0.contains("campaign \(campaign), shard \(shard)") }.count
                        == 1,
                    "\(list.stdout)\n\(logs)")
            }
        }

        func logs(_ share: String) -> String {
            ((try? FileManager.default.contentsOfDirectory(atPath: share + "/logs")) ?? []).sorted().map {
                "== \($0)\n" + ((try? String(contentsOfFile: share + "/logs/" + $0, encoding: .utf8)) ?? "")
            }.joined(separator: "\n")
        }

        func run(_ arguments: [String], env: [String: String]) throws -> CLI.Result {
            if ProcessInfo.processInfo.environment["NESTBENCH_BIN"] == nil, let stale = CLI.stale {
                throw CLI.StaleBinary(description: stale)
            }
            return SlurmCluster.shell([CLI.binary] + arguments, environment: env.merging(["NO_COLOR": "1"]) { $1 })
        }

        /// The `nestbench run` of a shard of the campaign under `share`.
        func shardProcess(share: String, shard: Int, of count: Int) -> Int32? {
            for pid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                guard let n = Int32(pid), let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else {
                    continue
                }
                let argv = String(decoding: data, as: UTF8.self).split(separator: "\0").map(String.init)
                if argv.count > 1 && argv[1] == "run" && argv.contains("\(shard)/\(count)")
                    && argv.contains(share + "/shard-\(shard)")
                {
                    return n
                }
            }
            return nil
        }

        /// Processes whose command line names `marker`.
        func processes(mentioning marker: String) -> [String] {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap { pid in
                guard Int(pid) != nil, let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else {
                    return nil
                }
                let cmdline = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
                return cmdline.contains(marker) ? "\(pid): \(cmdline.prefix(120))" : nil
            }
        }
    }
}
