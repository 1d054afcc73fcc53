import Foundation
import Synchronization
import Testing

@testable import NestBenchProcess

@Suite("Process runner", .serialized)
struct ProcessRunnerTests {
    /// A sampler thread moves off the CPUs of the process it watches (the monitor does so).
    @Test(.timeLimit(.minutes(1)), .enabled(if: (Affinity.of(0)?.count ?? 0) >= 2, "needs two CPUs"))
    func samplerAvoidsTheWorkloadsCPUs() async throws {
        let child = try ProcessRunner.start(ProcessSpec(program: "/bin/sleep", arguments: ["5"], cpus: [0]))
        try child.release()
        defer {
            child.kill()
            _ = child.waitBlocking()
        }
        #expect(Affinity.of(child.pid) == [0])
        let mine = try #require(Affinity.of(0))
        let box = Mutex<([Int]?, [Int]?)>((nil, nil))
        let thread = Thread {
            let moved = Affinity.avoid(cpusOf: child.pid)
            box.withLock { $0 = (moved, Affinity.of(0)) }
        }
        thread.start()
        for _ in 0..<100 where box.withLock({ $0.1 == nil }) { try await Task.sleep(for: .milliseconds(10)) }
        let (moved, now) = box.withLock { $0 }
        #expect(moved == mine.filter { $0 != 0 } && now == moved, "\(String(describing: moved)) \(String(describing: now))")
        #expect(Affinity.of(0) == mine, "only the sampler thread moved")
    }

    @Test(.timeLimit(.minutes(1)))
    func exitStatusAndOutput() async throws {
        let dir = Fixtures.temporaryDirectory()
        let outcome = try await ProcessRunner.run(
            ProcessSpec(
                program: "/bin/sh", arguments: ["-c", "echo hello; echo oops >&2; exit 3"],
                environment: ["PATH": "/usr/bin:/bin"], stdoutPath: dir + "/out", stderrPath: dir + "/err"))
        #expect(outcome.exitStatus == 3 && outcome.signal == nil && !outcome.timedOut)
        #expect(try String(contentsOfFile: dir + "/out", encoding: .utf8) == "hello\n")
        #expect(try String(contentsOfFile: dir + "/err", encoding: .utf8) == "oops\n")
    }

    @Test(.timeLimit(.minutes(1)))
    func pinningIsApplied() async throws {
        let dir = Fixtures.temporaryDirectory()
        let outcome = try await ProcessRunner.run(
            ProcessSpec(
                program: "/bin/sh", arguments: ["-c", "grep Cpus_allowed_list /proc/self/status"],
                environment: ["PATH": "/usr/bin:/bin"], cpus: [0], stdoutPath: dir + "/out"))
        #expect(outcome.exitStatus == 0)
        let text = try String(contentsOfFile: dir + "/out", encoding: .utf8)
        #expect(text.hasSuffix("\t0\n"), "got \(text)")
    }

    @Test(.timeLimit(.minutes(1)))
    func timeoutKillsTheWholeProcessGroup() async throws {
        let dir = Fixtures.temporaryDirectory()
        // The shell starts a grandchild that would outlive it; the timeout must take both.
        let spec = ProcessSpec(
            program: "/bin/sh", arguments: ["-c", "sleep 300 & echo $! > \(dir)/grandchild; wait"],
            environment: ["PATH": "/usr/bin:/bin"], timeoutSeconds: 1)
        let start = ContinuousClock.now
        let outcome = try await ProcessRunner.run(spec)
        #expect(outcome.timedOut)
        #expect((ContinuousClock.now - start) < .seconds(10))
        let grandchild = try #require(
            Int32(
                try String(contentsOfFile: dir + "/grandchild", encoding: .utf8)
                    .trimmingCharacters(in: .whitespacesAndNewlines)))
        try await Task.sleep(for: .milliseconds(200))
        // Gone, or a zombie waiting for init to reap it: either way no longer running.
        let state = (try? String(contentsOfFile: "/proc/\(grandchild)/stat", encoding: .utf8))
            .flatMap { $0.split(separator: ")").last?.split(separator: " ").first }
        #expect(state == nil || state == "Z", "the grandchild \(grandchild) survived in state \(state ?? "")")
    }

    /// A child that fails before exec (pinned to a CPU it may not use) is a thrown error with
    /// the step and errno; the closed gate pipe is EPIPE, not a SIGPIPE that kills the caller.
    @Test(.timeLimit(.minutes(1)))
    func pinningFailureBeforeExecIsAnErrorNotSIGPIPE() throws {
        let mine = try #require(Affinity.of(0))
        let missing = (mine.max() ?? 0) + 1
        signal(SIGPIPE, SIG_DFL)  // as a process that never ignored it; start() must ignore it.
        let child = try ProcessRunner.start(ProcessSpec(program: "/bin/true", cpus: [missing]))
        // Let the child fail and close its end of the gate before it is released.
        Thread.sleep(forTimeInterval: 0.2)
        #expect {
            try child.release()
        } throws: { error in
            let e = error as? ProcessError
            return e?.errno == EINVAL && e?.description.contains("pinning to CPUs \(missing)") == true
        }
        let outcome = child.waitBlocking()
        #expect(outcome.exitStatus == 127)
    }

    @Test func missingProgramIsNamed() {
        #expect(throws: ProcessError.self) { try ProcessRunner.start(ProcessSpec(program: "/nonexistent/prog")) }
    }

    @Test(.timeLimit(.minutes(1)))
    func signalIsRecorded() async throws {
        let outcome = try await ProcessRunner.run(
            ProcessSpec(program: "/bin/sh", arguments: ["-c", "kill -SEGV $$"], environment: ["PATH": "/usr/bin:/bin"]))
        #expect(outcome.signal == SIGSEGV && outcome.exitStatus == nil)
        #expect(outcome.describe(timeout: nil).contains("signal 11"))
    }

    @Test(.timeLimit(.minutes(1)))
    func gateHoldsTheChildBeforeExec() async throws {
        let dir = Fixtures.temporaryDirectory()
        let child = try ProcessRunner.start(
            ProcessSpec(program: "/bin/sh", arguments: ["-c", "echo ran > \(dir)/ran"], environment: ["PATH": "/usr/bin:/bin"]))
        try await Task.sleep(for: .milliseconds(300))
        #expect(!FileManager.default.fileExists(atPath: dir + "/ran"), "the child ran before release")
        try child.release()
        let outcome = await child.wait()
        #expect(outcome.exitStatus == 0)
        #expect(FileManager.default.fileExists(atPath: dir + "/ran"))
    }
}
