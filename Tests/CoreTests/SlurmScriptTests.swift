import Foundation
import Testing

@testable import NestBenchCluster
@testable import NestBenchProcess

/// The Slurm job scripts: run by bash with fake `nestbench` and `sbatch` programs, so that what
/// the programs receive (argv, one argument a line) is compared with what the campaign names,
/// whatever quotes, blanks, `$` and backquotes the paths hold.
@Suite("Slurm job scripts", .serialized)
struct SlurmScriptTests {
    /// Text bash, sbatch or the heredocs would interpret if it were not quoted.
    static let hostile = #"a b'c"d$(touch PWNED)`id`\$HOME;|&*?#%a"#

    static func campaign(root: String, shards: Int = 3) -> SlurmCampaign {
        SlurmCampaign(
            experimentFile: root + "/exp " + hostile + ".yaml", shards: shards, share: root + "/share " + hostile,
            campaign: "c-20261203.1_x", nestbench: root + "/bin " + hostile + "/nestbench", seed: 18_446_744_073_709_551_615,
            partition: "long'part", constraint: "xeon&[rack1|rack2]", time: "2-00:00:00", fixedRepetitions: true,
            tags: ["kernel=6.1 rc'1", "note=$HOME"])
    }

    /// A fake program that writes its argv, one argument a line, to `log` (appending a `--` line
    /// after each call) and then prints `answer`.
    /// Writes an executable script through a close-on-exec descriptor: a process another test forks
    /// meanwhile does not keep it open for writing (which makes exec fail with "Text file busy").
    static func executable(_ text: String, at path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count else { throw CocoaError(.fileWriteUnknown) }
        chmod(path, 0o755)
    }

    static func fake(_ path: String, log: String, answer: String) throws {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let script = """
            #!/bin/bash
            for a in "$@"; do printf '%s\\n' "$a" >> \(ScriptQuoting.word(log)); done
            echo -- >> \(ScriptQuoting.word(log))
            if [ "$1" = shard-status ]; then printf '%s\\n' \(ScriptQuoting.word(answer)); fi
            if [ "$1" = --parsable ]; then echo "$NEXT_JOB;cluster"; fi
            exit 0

            """
        try executable(script, at: path)
    }

    /// Runs `script` with bash in `dir`; returns the exit status and stderr.
    static func bash(_ script: String, in dir: String, environment: [String: String]) async throws -> (Int32, String) {
        let path = dir + "/job.sh"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        // A fake written just before may still be open for writing in a child another test forked
        // at that moment (exec then fails with "Text file busy"): run again, at most a few times.
        for attempt in 0..<5 {
            let outcome = try await ProcessRunner.run(
                ProcessSpec(
                    program: "/bin/bash", arguments: [path],
                    environment: ["PATH": "/usr/bin:/bin", "HOME": "/nonexistent"].merging(environment) { $1 },
                    workingDirectory: dir, stdoutPath: dir + "/stdout", stderrPath: dir + "/stderr", timeoutSeconds: 30))
            let stderr = (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? ""
            if stderr.contains("Text file busy") && attempt < 4 {
                try? FileManager.default.removeItem(atPath: dir + "/calls")
                try await Task.sleep(for: .milliseconds(200))
                continue
            }
            return (outcome.exitStatus ?? -1, stderr)
        }
        return (-1, "unreachable")
    }

    static func calls(_ log: String) -> [[String]] {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        var calls: [[String]] = []
        var current: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            if line == "--" {
                calls.append(current)
                current = []
            } else {
                current.append(String(line))
            }
        }
        return calls
    }

    @Test(.timeLimit(.minutes(1)), arguments: ["new", "resume 20261203-101010-abcd", "done 20261203-101010-abcd"])
    func shardTaskRunsItsShardWithExactArguments(state: String) async throws {
        let root = Fixtures.temporaryDirectory()
        let c = Self.campaign(root: root)
        let log = root + "/calls"
        try Self.fake(c.nestbench, log: log, answer: state)
        FileManager.default.createFile(atPath: c.experimentFile, contents: Data("x".utf8))
        let (status, stderr) = try await Self.bash(
            SlurmScripts.shards(c), in: root, environment: ["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_JOB_ID": "77"])
        #expect(status == 0, "\(stderr)")
        let calls = Self.calls(log)
        let results = c.share + "/shard-2"
        #expect(
            calls.first == ["shard-status", "--results", results, "--campaign", c.campaign, "--shard", "2/3", "--take-over"])
        let run = ["run", c.experimentFile, "--shard", "2/3", "--campaign", c.campaign, "--results", results, "--wait"]
        switch state {
        case "new":
            #expect(
                calls.dropFirst().first
                    == run + [
                        "--seed", "18446744073709551615", "--fixed-repetitions", "--tag", "kernel=6.1 rc'1", "--tag",
                        "note=$HOME",
                    ])
        case "done 20261203-101010-abcd":
            #expect(calls.count == 1, "a complete shard is not run again")
            #expect(stderr.contains("is complete: experiment run 20261203-101010-abcd"))
        default:
            #expect(calls.dropFirst().first == run + ["--resume", "20261203-101010-abcd"], "the stored seed, not a new one")
        }
        #expect(!FileManager.default.fileExists(atPath: root + "/PWNED"), "nothing of a path was executed")
        #expect(stderr.contains("shard 2/3 on "))
    }

    @Test(.timeLimit(.minutes(1)))
    func shardTaskNamesWhatANodeLacks() async throws {
        let root = Fixtures.temporaryDirectory()
        let c = Self.campaign(root: root)
        let (status, stderr) = try await Self.bash(SlurmScripts.shards(c), in: root, environment: ["SLURM_ARRAY_TASK_ID": "0"])
        #expect(status == 1)
        #expect(stderr.contains("\(c.nestbench): not an executable on "))
        try Self.fake(c.nestbench, log: root + "/calls", answer: "new")
        let (status2, stderr2) = try await Self.bash(SlurmScripts.shards(c), in: root, environment: ["SLURM_ARRAY_TASK_ID": "0"])
        #expect(status2 == 1)
        #expect(stderr2.contains("\(c.experimentFile): not readable on "))
        let (status3, stderr3) = try await Self.bash(SlurmScripts.shards(c), in: root, environment: [:])
        #expect(status3 != 0 && stderr3.contains("submit this script with sbatch"))
    }

    @Test(.timeLimit(.minutes(1)))
    func mergeImportsEveryShardThenReportsTheCampaign() async throws {
        let root = Fixtures.temporaryDirectory()
        let c = Self.campaign(root: root)
        let log = root + "/calls"
        try Self.fake(c.nestbench, log: log, answer: "")
        try FileManager.default.createDirectory(atPath: c.share, withIntermediateDirectories: true)
        let (status, stderr) = try await Self.bash(SlurmScripts.merge(c), in: root, environment: [:])
        #expect(status == 0, "\(stderr)")
        let calls = Self.calls(log)
        #expect(
            calls == (0..<3).map {
                ["import", "--results", c.mergedResults, "--from", c.shardResults($0), "--campaign", c.campaign]
            } + [["report", "--campaign", c.campaign, "--results", c.mergedResults, "--html", c.reportHTML]])
        #expect(FileManager.default.fileExists(atPath: c.reportText))
    }

    @Test(.timeLimit(.minutes(1)))
    func mergeFailsWhenAShardCannotBeImported() async throws {
        let root = Fixtures.temporaryDirectory()
        let c = Self.campaign(root: root, shards: 2)
        try FileManager.default.createDirectory(
            atPath: (c.nestbench as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Self.executable(
            "#!/bin/bash\n[ \"$1\" = import ] && [ \"$5\" = \(ScriptQuoting.word(c.shardResults(1))) ] && exit 1\nexit 0\n",
            at: c.nestbench)
        try FileManager.default.createDirectory(atPath: c.share, withIntermediateDirectories: true)
        let (status, _) = try await Self.bash(SlurmScripts.merge(c), in: root, environment: [:])
        #expect(status == 1, "a shard that could not be imported fails the merge job (after the report)")
        #expect(FileManager.default.fileExists(atPath: c.reportText))
    }

    /// The printed submission: the array job, then the merge job depending on it, both scripts
    /// passed to sbatch byte for byte.
    @Test(.timeLimit(.minutes(1)))
    func submissionScriptSubmitsBothJobsInOrder() async throws {
        let root = Fixtures.temporaryDirectory()
        let c = Self.campaign(root: root)
        let bin = root + "/fakebin"
        let log = root + "/calls"
        try Self.fake(bin + "/sbatch", log: log, answer: "")
        // The fake sbatch also keeps the script it read on stdin.
        try Self.executable(
            """
            #!/bin/bash
            for a in "$@"; do printf '%s\\n' "$a" >> \(ScriptQuoting.word(log)); done
            echo -- >> \(ScriptQuoting.word(log))
            n=$(ls \(ScriptQuoting.word(root)) | grep -c '^stdin-' || true)
            cat > \(ScriptQuoting.word(root))/stdin-$n
            echo "$((41 + n));cluster"

            """, at: bin + "/sbatch")
        let (status, stderr) = try await Self.bash(
            SlurmScripts.submission(c), in: root, environment: ["PATH": bin + ":/usr/bin:/bin"])
        #expect(status == 0, "\(stderr)")
        #expect(Self.calls(log) == [["--parsable"], ["--parsable", "--dependency=afterany:41"]])
        #expect(try String(contentsOfFile: root + "/stdin-0", encoding: .utf8) == SlurmScripts.shards(c))
        #expect(try String(contentsOfFile: root + "/stdin-1", encoding: .utf8) == SlurmScripts.merge(c))
        #expect(try String(contentsOfFile: root + "/stdout", encoding: .utf8) == "campaign \(c.campaign)\nshards 41\nmerge 42\n")
        var isDirectory: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: c.logDirectory, isDirectory: &isDirectory) && isDirectory.boolValue)
        #expect(!FileManager.default.fileExists(atPath: root + "/PWNED"))
    }

    /// The printed submission, its merge job refused: it says which array job is left queued.
    @Test(.timeLimit(.minutes(1)))
    func submissionScriptNamesTheQueuedArrayJobWhenTheMergeIsRefused() async throws {
        let root = Fixtures.temporaryDirectory()
        let c = Self.campaign(root: root)
        let bin = root + "/fakebin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try Self.executable(
            """
            #!/bin/bash
            cat > /dev/null
            case "$2" in --dependency=*) echo 'sbatch: error: Job dependency problem' >&2; exit 1 ;; esac
            echo "41;cluster"

            """, at: bin + "/sbatch")
        let (status, stderr) = try await Self.bash(
            SlurmScripts.submission(c), in: root, environment: ["PATH": bin + ":/usr/bin:/bin"])
        #expect(status == 1, "\(stderr)")
        #expect(stderr.contains("Job dependency problem"), "\(stderr)")
        #expect(
            stderr.contains("the shard job array 41 is queued without it: cancel it with scancel 41"), "\(stderr)")
    }

    @Test(.timeLimit(.minutes(1)))
    func submitterRunsSbatchAsArgvAndReadsTheJobIDs() async throws {
        let root = Fixtures.temporaryDirectory()
        let c = Self.campaign(root: root)
        let log = root + "/calls"
        try Self.fake(root + "/sbatch", log: log, answer: "")
        let ids = try await SlurmSubmitter(sbatch: root + "/sbatch", environment: ["NEXT_JOB": "7", "PATH": "/usr/bin:/bin"])
            .submit(c)
        #expect(ids.array == "7" && ids.merge == "7")
        #expect(
            Self.calls(log) == [
                ["--parsable", c.shardsScriptPath], ["--parsable", "--dependency=afterany:7", c.mergeScriptPath],
            ])
        #expect(try String(contentsOfFile: c.shardsScriptPath, encoding: .utf8) == SlurmScripts.shards(c))
        #expect(try String(contentsOfFile: c.mergeScriptPath, encoding: .utf8) == SlurmScripts.merge(c))
    }

    @Test(.timeLimit(.minutes(1)))
    func submitterNamesSbatchsComplaint() async throws {
        let root = Fixtures.temporaryDirectory()
        let c = Self.campaign(root: root)
        try Self.executable(
            "#!/bin/bash\necho 'sbatch: error: invalid partition specified: long' >&2\nexit 1\n", at: root + "/sbatch")
        await #expect(throws: ClusterError.self) {
            try await SlurmSubmitter(sbatch: root + "/sbatch", environment: [:]).submit(c)
        }
        do {
            _ = try await SlurmSubmitter(sbatch: root + "/sbatch", environment: [:]).submit(c)
        } catch {
            #expect(error.message.contains("the shard job array") && error.message.contains("invalid partition specified"))
        }
    }

    /// The array job was queued, the merge job was refused: the error names the queued array job
    /// and how to cancel it or submit the merge by hand.
    @Test(.timeLimit(.minutes(1)))
    func aRefusedMergeJobNamesTheQueuedArrayJob() async throws {
        let root = Fixtures.temporaryDirectory()
        let c = Self.campaign(root: root)
        try Self.executable(
            """
            #!/bin/bash
            case "$2" in --dependency=*) echo 'sbatch: error: Job dependency problem' >&2; exit 1 ;; esac
            echo "31;cluster"

            """, at: root + "/sbatch")
        do {
            let ids = try await SlurmSubmitter(sbatch: root + "/sbatch", environment: [:]).submit(c)
            Issue.record("submitted: \(ids)")
        } catch {
            #expect(error.message.contains("the merge job") && error.message.contains("Job dependency problem"), "\(error)")
            #expect(
                error.message.contains("the shard job array 31 is queued without it: cancel it with `scancel 31`"), "\(error)")
        }
    }

    @Test func directivesAreQuotedForSbatch() {
        let c = Self.campaign(root: "/r")
        let script = SlurmScripts.shards(c)
        #expect(script.contains("#SBATCH --array=0-2\n"))
        #expect(script.contains("#SBATCH --exclusive\n"))
        #expect(script.contains(#"#SBATCH --partition="long'part""#))
        #expect(script.contains(#"#SBATCH --constraint="xeon&[rack1|rack2]""#))
        #expect(script.contains(#"#SBATCH --time="2-00:00:00""#))
        // `%` doubled (a literal in a file name pattern), `"` and `\` escaped, then `%a`.
        #expect(script.contains(#"#SBATCH --output="/r/share a b'c\"d$(touch PWNED)`id`\\$HOME;|&*?#%%a/logs/shard-%a.out""#))
        let merge = SlurmScripts.merge(c)
        #expect(merge.contains(#"#SBATCH --partition="long'part""#))
        #expect(!merge.contains("--constraint") && !merge.contains("--time") && !merge.contains("--exclusive"))
    }

    @Test func wordsAreBashSingleQuoted() {
        #expect(ScriptQuoting.word("it's") == #"'it'\''s'"#)
        #expect(ScriptQuoting.word("") == "''")
        #expect(ScriptQuoting.directive(#"a"b\c"#) == #""a\"b\\c""#)
    }

    @Test func problemsNameTheOption() {
        var c = Self.campaign(root: "/r")
        #expect(c.problems.isEmpty, "\(c.problems)")
        c.shards = 0
        c.share = "relative"
        c.campaign = "a/b"
        c.partition = "x\ny"
        c.tags = ["k=v\r\n"]
        let problems = c.problems
        #expect(problems.contains("--shards: must be at least 1, found 0"))
        #expect(problems.contains("--share: relative: must be an absolute path (as the nodes see it)"))
        #expect(problems.contains { $0.hasPrefix("--campaign: \"a/b\"") })
        #expect(problems.contains("--partition: contains a line break"))
        #expect(problems.contains("--tag: contains a line break"))
    }

    @Test(arguments: [("123\n", "123"), ("123;cluster\n", "123"), ("", nil), ("Submitted batch job 5\n", nil)])
    func jobIDFromParsableOutput(output: String, id: String?) {
        #expect(SlurmScripts.jobID(parsable: output) == id)
    }
}
