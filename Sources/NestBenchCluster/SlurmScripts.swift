/// One experiment sharded over a Slurm cluster: what the job scripts name. Every path is as the
/// compute nodes see it (absolute; the share is a directory every node mounts at the same path).
public struct SlurmCampaign: Sendable, Hashable {
    /// The experiment file (absolute).
    public var experimentFile: String
    /// Number of shards: array tasks 0…shards-1, each `nestbench run --shard K/shards`.
    public var shards: Int
    /// The shared directory: one results directory per shard, the merged store, logs, the report.
    public var share: String
    /// The campaign id every shard's experiment run carries.
    public var campaign: String
    /// The nestbench executable on the nodes (absolute).
    public var nestbench: String
    /// The seed of the plan every shard takes its blocks from (one plan for all shards).
    public var seed: UInt64
    /// `--partition`, `--constraint` (node features: a machine class), `--time` of the shard tasks.
    public var partition: String?
    public var constraint: String?
    public var time: String?
    /// `run --fixed-repetitions` for every shard (no adaptive blocks).
    public var fixedRepetitions: Bool
    /// `run --tag key=value` for every shard.
    public var tags: [String]

    public init(
        experimentFile: String, shards: Int, share: String, campaign: String, nestbench: String, seed: UInt64,
        partition: String? = nil, constraint: String? = nil, time: String? = nil, fixedRepetitions: Bool = false,
        tags: [String] = []
    ) {
        self.experimentFile = experimentFile
        self.shards = shards
        self.share = share
        self.campaign = campaign
        self.nestbench = nestbench
        self.seed = seed
        self.partition = partition
        self.constraint = constraint
        self.time = time
        self.fixedRepetitions = fixedRepetitions
        self.tags = tags
    }

    /// Shard `k`'s results directory (its own store: one writer per store file).
    public func shardResults(_ k: Int) -> String { "\(share)/shard-\(k)" }
    /// The store every shard is imported into.
    public var mergedResults: String { "\(share)/merged" }
    public var logDirectory: String { "\(share)/logs" }
    public var reportText: String { "\(share)/report.txt" }
    public var reportHTML: String { "\(share)/report.html" }
    public var shardsScriptPath: String { "\(share)/nestbench-\(campaign)-shards.sbatch" }
    public var mergeScriptPath: String { "\(share)/nestbench-\(campaign)-merge.sbatch" }
    public var jobName: String { "nestbench-\(campaign)" }

    /// What is wrong, as "--option: problem" lines; empty when the scripts can be written.
    public var problems: [String] {
        var problems: [String] = []
        if shards < 1 { problems.append("--shards: must be at least 1, found \(shards)") }
        // An array index is at most MaxArraySize-1 (1000 by default); beyond that Slurm refuses.
        if shards > 10000 { problems.append("--shards: at most 10000, found \(shards)") }
        for (what, path) in [("FILE", experimentFile), ("--share", share), ("--nestbench", nestbench)] {
            if !path.hasPrefix("/") { problems.append("\(what): \(path): must be an absolute path (as the nodes see it)") }
        }
        if campaign.isEmpty || campaign.count > 100
            || !campaign.unicodeScalars.allSatisfy({ Self.idCharacters.contains($0) })
        {
            problems.append(
                "--campaign: \"\(campaign)\": use 1…100 letters, digits, '.', '_' or '-' (it names the job and script files)")
        }
        let values: [(String, String?)] =
            [
                ("FILE", experimentFile), ("--share", share), ("--nestbench", nestbench), ("--partition", partition),
                ("--constraint", constraint), ("--time", time),
            ] + tags.map { ("--tag", $0) }
        for (what, value) in values {
            guard let value else { continue }
            if let problem = ScriptQuoting.problem(value) { problems.append("\(what): \(problem)") }
            if value.isEmpty { problems.append("\(what): empty") }
        }
        return problems
    }

    static let idCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-".unicodeScalars)
}

/// The job scripts of a campaign: a job array (one task per shard) and a merge job.
public enum SlurmScripts {
    /// The job array: task K runs shard K/N into its own store under the share. Before running,
    /// `nestbench shard-status` reads that store: a shard already complete is left alone, one that
    /// stopped (the task was requeued after a node failure, preempted, or the script resubmitted)
    /// is resumed, otherwise it starts with the campaign's seed.
    public static func shards(_ c: SlurmCampaign) -> String {
        let q = ScriptQuoting.word
        var lines = [
            "#!/bin/bash",
            "# NestBench campaign \(c.campaign): shard $SLURM_ARRAY_TASK_ID of \(c.shards) of \(c.experimentFile)",
            "# (written by `nestbench slurm`). Each task measures alone on its node (--exclusive) and writes",
            "# only its own store (\(c.share)/shard-K), so a requeued task resumes its shard on any node.",
            "#SBATCH --job-name=\(ScriptQuoting.directive(c.jobName))",
            "#SBATCH --array=0-\(c.shards - 1)",
            "#SBATCH --nodes=1",
            "#SBATCH --ntasks=1",
            "#SBATCH --exclusive",
            "#SBATCH --requeue",
            "#SBATCH --open-mode=append",
            "#SBATCH --output=\(ScriptQuoting.directive(ScriptQuoting.literalInPattern(c.logDirectory) + "/shard-%a.out"))",
        ]
        lines += directives(c, shardTasks: true)
        let newRun =
            ["--seed", String(c.seed)] + (c.fixedRepetitions ? ["--fixed-repetitions"] : [])
            + c.tags.flatMap { ["--tag", $0] }
        lines += [
            "set -euo pipefail",
            "nestbench=\(q(c.nestbench))",
            "experiment=\(q(c.experimentFile))",
            "share=\(q(c.share))",
            "campaign=\(q(c.campaign))",
            "shards=\(c.shards)",
            "shard=${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is a Slurm job array}",
            "results=\"$share/shard-$shard\"",
            "node=$(hostname)",
            #"echo "nestbench campaign $campaign: shard $shard/$shards on $node (job ${SLURM_ARRAY_JOB_ID:-?}_$shard, restart ${SLURM_RESTART_COUNT:-0})" >&2"#,
            #"if [ ! -x "$nestbench" ]; then"#,
            #"    echo "$nestbench: not an executable on $node: install nestbench at one path on every node, or on the share" >&2"#,
            "    exit 1",
            "fi",
            #"if [ ! -r "$experiment" ]; then"#,
            #"    echo "$experiment: not readable on $node: keep the experiment file (and what it includes) on the share" >&2"#,
            "    exit 1",
            "fi",
            "# new | resume RUN_ID | done RUN_ID: this shard's experiment run in its store. Slurm runs one",
            "# instance of a task at a time, so a run still marked running by an earlier attempt on another",
            "# node is taken over (--take-over) once the store's lock is free.",
            #"state=$("$nestbench" shard-status --results "$results" --campaign "$campaign" --shard "$shard/$shards" --take-over)"#,
            #"read -r action run_id <<<"$state""#,
            #"case "$action" in"#,
            #"done) echo "shard $shard/$shards of campaign $campaign is complete: experiment run $run_id" >&2; exit 0 ;;"#,
            #"resume) run=(--resume "$run_id") ;;"#,
            "new) run=(\(newRun.map(q).joined(separator: " "))) ;;",
            #"*) echo "nestbench shard-status answered \"$state\"" >&2; exit 1 ;;"#,
            "esac",
            #"exec "$nestbench" run "$experiment" --shard "$shard/$shards" --campaign "$campaign" --results "$results" --wait "${run[@]}""#,
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    /// The merge job (submitted with `--dependency=afterany:<array job>`): imports every shard's
    /// finished experiment run of the campaign into one store, then writes the campaign's report
    /// (text and HTML). Exits 1 when a shard is missing or unfinished, after reporting the rest.
    public static func merge(_ c: SlurmCampaign) -> String {
        let q = ScriptQuoting.word
        var lines = [
            "#!/bin/bash",
            "# NestBench campaign \(c.campaign): merges the \(c.shards) shards' stores into \(c.mergedResults) and",
            "# writes the campaign's report (written by `nestbench slurm`; runs after every shard task ended).",
            "#SBATCH --job-name=\(ScriptQuoting.directive(c.jobName + "-merge"))",
            "#SBATCH --nodes=1",
            "#SBATCH --ntasks=1",
            "#SBATCH --open-mode=append",
            "#SBATCH --output=\(ScriptQuoting.directive(ScriptQuoting.literalInPattern(c.logDirectory) + "/merge.out"))",
        ]
        lines += directives(c, shardTasks: false)
        lines += [
            "set -uo pipefail",
            "nestbench=\(q(c.nestbench))",
            "share=\(q(c.share))",
            "campaign=\(q(c.campaign))",
            "shards=\(c.shards)",
            "status=0",
            "for ((shard = 0; shard < shards; shard++)); do",
            #"    "$nestbench" import --results "$share/merged" --from "$share/shard-$shard" --campaign "$campaign" || status=1"#,
            "done",
            #"if "$nestbench" report --campaign "$campaign" --results "$share/merged" --html "$share/report.html" >"$share/report.txt"; then"#,
            #"    echo "campaign $campaign: report in $share/report.txt and $share/report.html" >&2"#,
            "else",
            "    status=1",
            "fi",
            #"exit "$status""#,
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    /// The submission as one bash script for the cluster's login node: both job scripts inline
    /// (quoted heredocs: nothing in them is expanded), the merge job depending on the array job.
    public static func submission(_ c: SlurmCampaign) -> String {
        let q = ScriptQuoting.word
        return [
            "#!/bin/bash",
            "# Submits NestBench campaign \(c.campaign) (\(c.shards) shards of \(c.experimentFile)) to Slurm;",
            "# run it with bash on the cluster's login node (written by `nestbench slurm`; --submit does the same).",
            "set -euo pipefail",
            "mkdir -p \(q(c.logDirectory))",
            "array=$(sbatch --parsable <<'NESTBENCH_SHARDS_JOB'",
            shards(c) + "NESTBENCH_SHARDS_JOB",
            ")",
            "array=${array%%;*}",
            #"merge=$(sbatch --parsable --dependency="afterany:$array" <<'NESTBENCH_MERGE_JOB'"#,
            merge(c) + "NESTBENCH_MERGE_JOB",
            // The array job is queued already: a refused merge job leaves it without one.
            #") || { echo "the merge job was not submitted; the shard job array $array is queued without it: cancel it with scancel $array" >&2; exit 1; }"#,
            "merge=${merge%%;*}",
            "echo \"campaign \(c.campaign)\"",
            #"echo "shards $array""#,
            #"echo "merge $merge""#,
        ].joined(separator: "\n") + "\n"
    }

    /// sbatch's arguments for the array job and for the merge job after it.
    public static func shardsSubmission(_ c: SlurmCampaign) -> [String] { ["--parsable", c.shardsScriptPath] }
    public static func mergeSubmission(_ c: SlurmCampaign, after arrayJob: String) -> [String] {
        ["--parsable", "--dependency=afterany:\(arrayJob)", c.mergeScriptPath]
    }

    /// The job id in sbatch's `--parsable` answer ("123" or "123;cluster"), or nil.
    public static func jobID(parsable output: String) -> String? {
        let line = output.split(whereSeparator: \.isNewline).last.map(String.init) ?? ""
        let id = line.split(separator: ";", maxSplits: 1).first.map(String.init) ?? ""
        return !id.isEmpty && id.allSatisfy(\.isNumber) ? id : nil
    }

    private static func directives(_ c: SlurmCampaign, shardTasks: Bool) -> [String] {
        var lines: [String] = []
        if let partition = c.partition { lines.append("#SBATCH --partition=\(ScriptQuoting.directive(partition))") }
        // The machine class and time limit bind the measuring tasks; the merge measures nothing.
        if shardTasks, let constraint = c.constraint {
            lines.append("#SBATCH --constraint=\(ScriptQuoting.directive(constraint))")
        }
        if shardTasks, let time = c.time { lines.append("#SBATCH --time=\(ScriptQuoting.directive(time))") }
        return lines
    }
}
