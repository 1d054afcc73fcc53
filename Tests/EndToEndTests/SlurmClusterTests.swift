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

    /// Runs a program (argv) with the environment plus `environment`; both pipes read to the end.
    static func shell(_ argv: [String], environment: [String: String] = [:]) -> CLI.Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0].contains("/") ? argv[0] : "/usr/bin/" + argv[0])
        p.arguments = Array(argv.dropFirst())
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        do {
            try p.run()
        } catch {
            return CLI.Result(status: -1, stdout: "", stderr: "\(argv[0]): \(error)")
        }
        let (o, e) = CLI.readAll(out, err)
        p.waitUntilExit()
        return CLI.Result(
            status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
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
            let dir = CLI.temporaryDirectory()
            chmod(dir, 0o755)
            let state = dir + "/slurm"
            let started = SlurmCluster.shell([SlurmCluster.script, "start", state])
            defer {
                let stopped = SlurmCluster.shell([SlurmCluster.script, "stop", state])
                #expect(stopped.status == 0, "\(stopped.stderr)")
                // Exactly the daemons it started are gone: their pid files removed, no process
                // whose command line names this cluster's directory.
                #expect(daemons(mentioning: state).isEmpty, "\(daemons(mentioning: state))")
            }
            try #require(started.status == 0, "\(started.stderr)")
            let slurmConf = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            for daemon in ["munged", "slurmctld", "slurmd"] {
                let pid = try String(contentsOfFile: "\(state)/pids/\(daemon)", encoding: .utf8)
                #expect(kill(pid_t(pid.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, 0) == 0, "\(daemon) runs")
            }

            CLI.write(CLI.smallExperiment(min: 4), to: dir + "/e.yaml")
            let share = dir + "/share it's"
            let env = ["SLURM_CONF": slurmConf, "NESTBENCH_STATE_DIR": dir + "/state"]
            let submitted = try run(
                ["slurm", dir + "/e.yaml", "--shards", "2", "--share", share, "--submit", "--time", "10"], env: env)
            try #require(submitted.status == 0, "\(submitted.stderr)")
            let ids = Dictionary(
                submitted.stdout.split(separator: "\n").map { line -> (String, String) in
                    let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
                    return (parts[0], parts.count > 1 ? parts[1] : "")
                }, uniquingKeysWith: { a, _ in a })
            let campaign = try #require(ids["campaign"])
            let array = try #require(ids["shards"])
            let merge = try #require(ids["merge"])

            // Every job of the campaign leaves the queue.
            let deadline = Date().addingTimeInterval(6 * 60)
            while true {
                let q = SlurmCluster.shell(["squeue", "-h", "-j", "\(array),\(merge)", "-o", "%i %T"], environment: env)
                if q.status == 0 && q.stdout.isEmpty { break }
                try #require(Date() < deadline, "jobs still queued: \(q.stdout)")
                Thread.sleep(forTimeInterval: 2)
            }
            let logs = ((try? FileManager.default.contentsOfDirectory(atPath: share + "/logs")) ?? []).sorted().map {
                "== \($0)\n" + ((try? String(contentsOfFile: share + "/logs/" + $0, encoding: .utf8)) ?? "")
            }.joined(separator: "\n")
            let mergeJob = SlurmCluster.shell(["scontrol", "show", "job", merge], environment: env)
            #expect(mergeJob.stdout.contains("JobState=COMPLETED"), "\(mergeJob.stdout)\n\(logs)")
            for task in 0..<2 {
                let job = SlurmCluster.shell(["scontrol", "show", "job", "\(array)_\(task)"], environment: env)
                #expect(job.stdout.contains("JobState=COMPLETED"), "shard \(task): \(job.stdout)\n\(logs)")
            }

            // The merged store: the two shards' experiment runs, one campaign.
            let list = try run(["list", "--results", share + "/merged"], env: env)
            #expect(list.status == 0, "\(list.stderr)")
            for shard in ["0/2", "1/2"] {
                #expect(
                    list.stdout.split(separator: "\n").filter {
                        $0.contains("\tcompleted\t") && $0.contains("campaign \(campaign), shard \(shard)")
                    }.count == 1, "\(list.stdout)\n\(logs)")
            }
            let report = try run(
                ["report", "--campaign", campaign, "--results", share + "/merged", "--format", "json"], env: env)
            #expect(report.status == 0, "\(report.stderr)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(report.stdout.utf8)) as? [String: Any])
            let runs = try #require(json["runs"] as? [[String: Any]])
            #expect(runs.count == 8, "2 configurations × 4 repetitions over both shards")
            #expect(runs.allSatisfy { ($0["status"] as? String) == "ok" }, "\(runs.map { $0["status"] ?? "-" })")
            let testbeds = runs.compactMap { ($0["provenance"] as? [String: String])?["testbed"] }
            #expect(testbeds.count == 8, "every run records its testbed")
            #expect(FileManager.default.fileExists(atPath: share + "/report.html"))
            let text = try String(contentsOfFile: share + "/report.txt", encoding: .utf8)
            #expect(text.contains("thp-always"), "the merge job's report: \(text)")
        }

        func run(_ arguments: [String], env: [String: String]) throws -> CLI.Result {
            if ProcessInfo.processInfo.environment["NESTBENCH_BIN"] == nil, let stale = CLI.stale {
                throw CLI.StaleBinary(description: stale)
            }
            return SlurmCluster.shell([CLI.binary] + arguments, environment: env.merging(["NO_COLOR": "1"]) { $1 })
        }

        /// Processes whose command line names `marker`.
        func daemons(mentioning marker: String) -> [String] {
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
