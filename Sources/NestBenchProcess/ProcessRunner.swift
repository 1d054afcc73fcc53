import CProcess
import Foundation
import Synchronization

/// How to start a measured child process.
public struct ProcessSpec: Sendable, Hashable {
    /// Program: an absolute path, or a name looked up in PATH.
    public var program: String
    /// Arguments after argv[0].
    public var arguments: [String]
    /// The complete environment of the child (nothing is inherited implicitly).
    public var environment: [String: String]
    public var workingDirectory: String?
    /// CPUs to pin the child (and the threads it creates) to; empty = inherit.
    public var cpus: [Int]
    /// Files for the child's stdout and stderr; nil = /dev/null.
    public var stdoutPath: String?
    public var stderrPath: String?
    /// Kill the whole process group after this many seconds.
    public var timeoutSeconds: Double?
    /// Signal the child gets if the spawning thread dies (PR_SET_PDEATHSIG).
    public var parentDeathSignal: Int32

    public init(
        program: String, arguments: [String] = [], environment: [String: String] = [:],
        workingDirectory: String? = nil, cpus: [Int] = [], stdoutPath: String? = nil, stderrPath: String? = nil,
        timeoutSeconds: Double? = nil, parentDeathSignal: Int32 = SIGKILL
    ) {
        self.program = program
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.cpus = cpus
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
        self.timeoutSeconds = timeoutSeconds
        self.parentDeathSignal = parentDeathSignal
    }
}

/// Resource usage of a finished child (from wait4).
public struct ResourceUsage: Sendable, Hashable, Codable {
    public init(
        minorFaults: Int, majorFaults: Int, userSeconds: Double, systemSeconds: Double, maxRSSKiB: Int,
        voluntaryContextSwitches: Int, involuntaryContextSwitches: Int
    ) {
        self.minorFaults = minorFaults
        self.majorFaults = majorFaults
        self.userSeconds = userSeconds
        self.systemSeconds = systemSeconds
        self.maxRSSKiB = maxRSSKiB
        self.voluntaryContextSwitches = voluntaryContextSwitches
        self.involuntaryContextSwitches = involuntaryContextSwitches
    }

    public var minorFaults: Int
    public var majorFaults: Int
    public var userSeconds: Double
    public var systemSeconds: Double
    public var maxRSSKiB: Int
    public var voluntaryContextSwitches: Int
    public var involuntaryContextSwitches: Int
}

/// How a child ended.
public struct ProcessOutcome: Sendable, Hashable {
    public var pid: Int32
    public var exitStatus: Int32?
    public var signal: Int32?
    public var timedOut: Bool
    public var usage: ResourceUsage
    /// From release (exec) to exit, monotonic.
    public var wallSeconds: Double
    public var argv: [String]

    public var succeeded: Bool { exitStatus == 0 && !timedOut }

    public init(
        pid: Int32, exitStatus: Int32?, signal: Int32?, timedOut: Bool, usage: ResourceUsage, wallSeconds: Double,
        argv: [String]
    ) {
        self.pid = pid
        self.exitStatus = exitStatus
        self.signal = signal
        self.timedOut = timedOut
        self.usage = usage
        self.wallSeconds = wallSeconds
        self.argv = argv
    }

    /// "exit 3", "killed by signal 9", "timed out after 5s".
    public func describe(timeout: Double?) -> String {
        if timedOut { return "timed out after \(timeout.map { String(format: "%g", $0) } ?? "?")s (process group killed)" }
        if let signal { return "killed by signal \(signal) (\(String(cString: strsignal(signal))))" }
        return "exit status \(exitStatus ?? -1)"
    }
}

/// Errors starting a process; each names the program and what to fix.
public struct ProcessError: Error, Sendable, CustomStringConvertible {
    public var program: String
    public var message: String
    public var errno: Int32?

    public init(program: String, message: String, errno: Int32?) {
        self.program = program
        self.message = message
        self.errno = errno
    }

    public var description: String {
        var text = "\(program): \(message)"
        if let errno { text += " (\(String(cString: strerror(errno))))" }
        return text
    }
}

/// Every live child process group, so that a signal handler can reap them all.
public final class ChildRegistry: Sendable {
    public static let shared = ChildRegistry()
    private let groups = Mutex<Set<Int32>>([])

    public func add(_ pgid: Int32) { groups.withLock { _ = $0.insert(pgid) } }
    public func remove(_ pgid: Int32) { groups.withLock { _ = $0.remove(pgid) } }
    public var live: [Int32] { groups.withLock { Array($0) } }

    /// SIGKILL every registered process group (used on Ctrl-C, SIGTERM, and failure).
    public func killAll() {
        for pgid in live { Glibc.kill(-pgid, SIGKILL) }
    }
}

/// A started (possibly still gated) child.
public final class RunningProcess: @unchecked Sendable {
    public let pid: Int32
    public let spec: ProcessSpec
    public let argv: [String]
    private let gate: Int32
    private let statusFD: Int32
    private let outcome: Mutex<ProcessOutcome?> = Mutex(nil)
    private let finished = DispatchSemaphore(value: 0)
    private let released = DispatchSemaphore(value: 0)
    private let timedOut = Atomic<Bool>(false)

    fileprivate init(pid: Int32, spec: ProcessSpec, argv: [String], gate: Int32, statusFD: Int32) {
        self.pid = pid
        self.spec = spec
        self.argv = argv
        self.gate = gate
        self.statusFD = statusFD
    }

    /// Lets the child exec. Throws when the child could not set itself up or exec.
    public func release() throws(ProcessError) {
        let start = ContinuousClock.now
        // A child that failed before the gate (affinity, chdir, redirections) has closed its end:
        // the write gets EPIPE (SIGPIPE is ignored), and the status pipe says what failed.
        let releaseFailed = nb_release(gate) != 0
        let releaseErrno = Glibc.errno
        var step: Int32 = 0
        var err: Int32 = 0
        let setupFailed = nb_spawn_status(statusFD, &step, &err) != 0
        if releaseFailed && !setupFailed {
            kill()
            released.signal()
            throw ProcessError(program: spec.program, message: "could not release the child", errno: releaseErrno)
        }
        if setupFailed {
            released.signal()
            let what = [
                "", "setpgid", "pinning to CPUs \(CPUListFormat.format(spec.cpus))", "chdir to \(spec.workingDirectory ?? "")",
                "redirecting stdout to \(spec.stdoutPath ?? "/dev/null")",
                "redirecting stderr to \(spec.stderrPath ?? "/dev/null")",
                "exec", "waiting at the gate",
            ]
            let stepName = Int(step) < what.count ? what[Int(step)] : "step \(step)"
            throw ProcessError(program: spec.program, message: "the child failed at \(stepName)", errno: err)
        }
        startInstant.withLock { $0 = start }
        released.signal()
        if let timeout = spec.timeoutSeconds {
            let pid = pid
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [weak self] in
                guard let self, self.outcome.withLock({ $0 == nil }) else { return }
                self.timedOut.store(true, ordering: .relaxed)
                Glibc.kill(-pid, SIGTERM)
                DispatchQueue.global().asyncAfter(deadline: .now() + 2) { [weak self] in
                    guard let self, self.outcome.withLock({ $0 == nil }) else { return }
                    Glibc.kill(-pid, SIGKILL)
                }
            }
        }
    }

    fileprivate let startInstant = Mutex<ContinuousClock.Instant?>(nil)

    /// Cancels a gated child before exec (it exits with 127 and is reaped).
    public func abort() {
        close(gate)
        close(statusFD)
        released.signal()
    }

    /// SIGKILL the child's whole process group.
    public func kill(signal: Int32 = SIGKILL) {
        Glibc.kill(-pid, signal)
    }

    /// Blocks the calling thread until the child has exited (wait4 runs on the spawning thread).
    public func waitBlocking() -> ProcessOutcome {
        finished.wait()
        finished.signal()
        return outcome.withLock { $0! }
    }

    /// Waits for the child without blocking a concurrency thread.
    public func wait() async -> ProcessOutcome {
        await withCheckedContinuation { (continuation: CheckedContinuation<ProcessOutcome, Never>) in
            DispatchQueue.global().async {
                continuation.resume(returning: self.waitBlocking())
            }
        }
    }

    /// Whether the child has exited.
    public var hasExited: Bool { outcome.withLock { $0 != nil } }

    fileprivate func reap() {
        // Wait for release (or an aborted release) before reaping, so wall time starts at exec.
        released.wait()
        var status: Int32 = 0
        var usage = rusage()
        let r = nb_wait4(pid, &status, &usage)
        let end = ContinuousClock.now
        // Anything the child left behind in its group goes with it.
        Glibc.kill(-pid, SIGKILL)
        ChildRegistry.shared.remove(pid)
        let wall = startInstant.withLock { start in start.map { (end - $0).seconds } ?? 0 }
        func seconds(_ tv: timeval) -> Double { Double(tv.tv_sec) + Double(tv.tv_usec) / 1e6 }
        let result = ProcessOutcome(
            pid: pid,
            exitStatus: r == pid && nb_exited(status) != 0 ? nb_exit_status(status) : nil,
            signal: r == pid && nb_signaled(status) != 0 ? nb_term_signal(status) : nil,
            timedOut: timedOut.load(ordering: .relaxed),
            usage: ResourceUsage(
                minorFaults: usage.ru_minflt, majorFaults: usage.ru_majflt,
                userSeconds: seconds(usage.ru_utime), systemSeconds: seconds(usage.ru_stime),
                maxRSSKiB: usage.ru_maxrss, voluntaryContextSwitches: usage.ru_nvcsw,
                involuntaryContextSwitches: usage.ru_nivcsw),
            wallSeconds: wall, argv: argv)
        outcome.withLock { $0 = result }
        finished.signal()
    }
}

extension Duration {
    /// This duration in seconds as a Double.
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}

enum CPUListFormat {
    static func format(_ cpus: [Int]) -> String { cpus.map(String.init).joined(separator: ",") }
}

/// Starts children in their own process group, pinned, gated before exec.
public enum ProcessRunner {
    /// A child's pipe closing early is an error value (EPIPE), never a signal that kills
    /// nestbench. Children get SIGPIPE back before exec (nb_spawn).
    public static func ignoreBrokenPipes() { signal(SIGPIPE, SIG_IGN) }

    /// Resolves a program name through PATH (from `environment`, else ours).
    public static func resolve(_ program: String, environment: [String: String] = [:]) -> String? {
        if program.contains("/") {
            return FileManager.default.isExecutableFile(atPath: program) ? program : nil
        }
        let path = environment["PATH"] ?? ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Forks the child, which stops before exec until `release()`; between the two a caller can
    /// attach to it (perf counters with enable_on_exec, monitors by pid).
    ///
    /// The fork and the blocking wait4 run on one dedicated thread, so PR_SET_PDEATHSIG (tied to
    /// the forking thread) fires only if this process dies.
    public static func start(_ spec: ProcessSpec) throws(ProcessError) -> RunningProcess {
        ignoreBrokenPipes()
        if let signal = Cancellation.shared.signal {
            throw ProcessError(
                program: spec.program, message: "not started: nestbench was interrupted by signal \(signal)", errno: nil)
        }
        guard let path = resolve(spec.program, environment: spec.environment) else {
            throw ProcessError(program: spec.program, message: "program not found or not executable", errno: nil)
        }
        let argv = [spec.program] + spec.arguments
        let spawned = Mutex<Result<RunningProcess, ProcessError>?>(nil)
        let ready = DispatchSemaphore(value: 0)
        let thread = Thread {
            let result = spawn(path: path, argv: argv, spec: spec)
            let running = try? result.get()
            spawned.withLock { $0 = result }
            ready.signal()
            running?.reap()
        }
        thread.name = "nestbench-child"
        thread.start()
        ready.wait()
        return try spawned.withLock { $0! }.get()
    }

    /// Starts, releases and waits: the common case with no attach step.
    public static func run(_ spec: ProcessSpec) async throws(ProcessError) -> ProcessOutcome {
        let child = try start(spec)
        try child.release()
        return await child.wait()
    }

    private static func spawn(path: String, argv: [String], spec: ProcessSpec) -> Result<RunningProcess, ProcessError> {
        let env = spec.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        var cArgv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var cEnv: [UnsafeMutablePointer<CChar>?] = env.map { strdup($0) } + [nil]
        defer {
            cArgv.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        let cpus = spec.cpus.map { Int32($0) }
        var pid: pid_t = 0
        var gate: Int32 = -1
        var status: Int32 = -1
        let rc: Int32 = path.withCString { cPath in
            withOptionalCString(spec.workingDirectory) { cwd in
                withOptionalCString(spec.stdoutPath) { out in
                    withOptionalCString(spec.stderrPath) { err in
                        cpus.withUnsafeBufferPointer { cpuBuf in
                            cArgv.withUnsafeMutableBufferPointer { argvBuf in
                                cEnv.withUnsafeMutableBufferPointer { envBuf in
                                    var s = nb_spawn_spec(
                                        path: cPath, argv: argvBuf.baseAddress, envp: envBuf.baseAddress, cwd: cwd,
                                        cpus: cpuBuf.baseAddress, ncpus: Int32(cpus.count), stdout_path: out,
                                        stderr_path: err, gated: 1, pdeathsig: spec.parentDeathSignal)
                                    return nb_spawn(&s, &pid, &gate, &status)
                                }
                            }
                        }
                    }
                }
            }
        }
        if rc != 0 {
            let e = Glibc.errno
            let message =
                e == ENOENT || e == EACCES
                ? "cannot open its output files \(spec.stdoutPath ?? "") / \(spec.stderrPath ?? "")"
                : "fork failed"
            return .failure(ProcessError(program: spec.program, message: message, errno: e))
        }
        ChildRegistry.shared.add(pid)
        // A signal that arrived while this child was being forked: it is killed like the others.
        if Cancellation.shared.isRequested { Glibc.kill(-pid, SIGKILL) }
        return .success(RunningProcess(pid: pid, spec: spec, argv: argv, gate: gate, statusFD: status))
    }
}

private func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}
