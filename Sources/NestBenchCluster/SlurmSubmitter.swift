import Foundation
import NestBenchProcess

/// Why a campaign could not be submitted: a sentence naming the file or the command and what to fix.
public struct ClusterError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Submits a campaign: writes its two job scripts into the share, then `sbatch` (an argv, never
/// a shell line) for the array job and for the merge job that depends on it.
public struct SlurmSubmitter: Sendable {
    /// The sbatch program (a name looked up in PATH, or a path).
    public var sbatch: String
    /// sbatch's environment; the jobs inherit it (sbatch's default `--export=ALL`).
    public var environment: [String: String]

    public init(sbatch: String = "sbatch", environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.sbatch = sbatch
        self.environment = environment
    }

    /// The array job's and the merge job's ids.
    public func submit(_ campaign: SlurmCampaign) async throws(ClusterError) -> (array: String, merge: String) {
        let files = FileManager.default
        do {
            try files.createDirectory(atPath: campaign.logDirectory, withIntermediateDirectories: true)
            try SlurmScripts.shards(campaign).write(toFile: campaign.shardsScriptPath, atomically: true, encoding: .utf8)
            try SlurmScripts.merge(campaign).write(toFile: campaign.mergeScriptPath, atomically: true, encoding: .utf8)
        } catch {
            throw ClusterError("--share \(campaign.share): cannot write the job scripts there: \(error.localizedDescription)")
        }
        let array = try await run(SlurmScripts.shardsSubmission(campaign), what: "the shard job array")
        let merge: String
        do {
            merge = try await run(SlurmScripts.mergeSubmission(campaign, after: array), what: "the merge job")
        } catch {
            // The array job is queued and would run without anything to merge its shards.
            throw ClusterError(
                error.message
                    + "; the shard job array \(array) is queued without it: cancel it with `scancel \(array)`, or submit the merge job with `sbatch --dependency=afterany:\(array) \(campaign.mergeScriptPath)`"
            )
        }
        return (array, merge)
    }

    private func run(_ arguments: [String], what: String) async throws(ClusterError) -> String {
        let dir = NSTemporaryDirectory() + "nestbench-sbatch-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spec = ProcessSpec(
            program: sbatch, arguments: arguments, environment: environment, stdoutPath: dir + "/out",
            stderrPath: dir + "/err", timeoutSeconds: 120)
        let outcome: ProcessOutcome
        do {
            outcome = try await ProcessRunner.run(spec)
        } catch {
            throw ClusterError("submitting \(what): \(error.description) (is this a Slurm login node? install slurm-client)")
        }
        let out = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
        let err = ((try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "").trimmingCharacters(
            in: .whitespacesAndNewlines)
        guard outcome.succeeded else {
            throw ClusterError(
                "submitting \(what): \(([sbatch] + arguments).joined(separator: " ")): \(outcome.describe(timeout: spec.timeoutSeconds))"
                    + (err.isEmpty ? "" : ": \(err)"))
        }
        guard let id = SlurmScripts.jobID(parsable: out) else {
            throw ClusterError(
                "submitting \(what): sbatch answered \"\(out.trimmingCharacters(in: .whitespacesAndNewlines))\", not a job id")
        }
        return id
    }
}
