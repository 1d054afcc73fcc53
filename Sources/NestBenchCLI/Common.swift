import ArgumentParser
import Foundation
import Logging
import NestBenchModel
import NestBenchPlatforms
import NestBenchStore
import NestBenchWorkloads

/// Exit codes, as ordo-one/benchmark documents them so CI scripts carry over.
public enum ExitCodes {
    public static let ok: Int32 = 0
    public static let error: Int32 = 1
    public static let regression: Int32 = 2
    public static let workloadFailed: Int32 = 3
    public static let improvement: Int32 = 4
    public static let baselineNotFound: Int32 = 5
    public static let usage: Int32 = 64
}

/// Flags every command shares.
struct GlobalOptions: ParsableArguments {
    @Flag(name: .shortAndLong, help: "More log output on stderr (-v info, -vv debug).")
    var verbose: Int

    @Flag(name: .shortAndLong, help: "Only errors on stderr.")
    var quiet = false

    @Flag(name: .customLong("no-color"), help: "No ANSI colors (also when NO_COLOR is set).")
    var noColor = false

    var useColor: Bool {
        !noColor && ProcessInfo.processInfo.environment["NO_COLOR"] == nil && isatty(STDERR_FILENO) == 1
    }

    func makeLogger(_ label: String = "nestbench") -> Logger {
        let level: Logger.Level = quiet ? .error : verbose >= 2 ? .debug : verbose == 1 ? .info : .notice
        LoggingBootstrap.once(level: level)
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}

/// Where results live.
struct ResultsOptions: ParsableArguments {
    @Option(name: .customLong("results"), help: "Results directory (holds nestbench.sqlite and run artifacts).")
    var results: String = ProcessInfo.processInfo.environment["NESTBENCH_RESULTS"] ?? "Results"

    var databasePath: String { Store.path(inResults: results) }

    /// Opens the store; experiment runs whose owner died (kill -9) are marked `killed` first.
    func openStore() throws -> Store {
        let store = try Store(path: databasePath)
        for id in (try? store.markKilled()) ?? [] {
            Console.error("nestbench: experiment run \(id) was killed before it finished: marked killed")
        }
        return store
    }
}

/// Marks the experiment runs a killed nestbench left in progress (from the knob journal) as
/// `killed` in their stores. Call before `KnobJournal.recover()`, which forgets them.
enum OrphanedExperiments {
    static func mark(_ journal: KnobJournal) {
        for orphan in (try? journal.orphanedExperiments()) ?? [] {
            guard FileManager.default.fileExists(atPath: orphan.store), let store = try? Store(path: orphan.store) else {
                continue
            }
            if (try? store.markKilled(orphan.runID)) != nil {
                Console.error(
                    "nestbench: experiment run \(orphan.runID) (pid \(orphan.ownerPID), \(orphan.store)) was killed before it finished: marked killed"
                )
            }
        }
    }
}

/// The `flock(2)` locks (`FileLock`) a command takes before it changes this machine or writes a
/// store: `run` takes the store's and the machine's, `fragment` and `restore` the machine's,
/// `shard-status --take-over` the store's (waiting).
enum CommandLocks {
    /// A lock to take: what it guards (for messages) and its file.
    struct Lock {
        var what: String
        var path: String
    }

    /// One measurement (or change of memory state and knobs) per machine: `Locks.machineLockPath`.
    static var machine: Lock { Lock(what: "this machine (one measurement at a time)", path: Locks.machineLockPath) }

    /// One writer per result store: beside its SQLite file.
    static func store(_ database: String) -> Lock {
        Lock(what: "the result store \(database)", path: Locks.storeLockPath(database: database))
    }

    /// Takes `locks` in order, held until the returned locks are released or the process exits.
    /// A held lock is an error naming its holder (pid, host, experiment run, since when) in one
    /// line, ending with `refusal` (what the user can do); with `wait`, each is polled until
    /// free instead, said once on stderr. A lock file that cannot be opened is always an error.
    static func take(_ locks: [Lock], wait: Bool, refusal: String) async throws -> [FileLock] {
        var taken: [FileLock] = []
        for lock in locks {
            var said = false
            while true {
                do {
                    taken.append(try FileLock.tryAcquire(lock.path))
                    break
                } catch {
                    if error.failure != nil {
                        throw CommandFailure(code: ExitCodes.error, message: "\(lock.what): \(error.description)")
                    }
                    if !wait {
                        throw CommandFailure(
                            code: ExitCodes.error,
                            message: "another nestbench is measuring: \(lock.what) is locked: \(error.description)\(refusal)")
                    }
                    if !said {
                        Console.error("nestbench: waiting for \(lock.what): \(error.description)")
                        said = true
                    }
                    try await Task.sleep(for: .milliseconds(500))
                }
            }
        }
        return taken
    }
}

enum LoggingBootstrap {
    nonisolated(unsafe) private static var done = false
    private static let lock = NSLock()

    static func once(level: Logger.Level) {
        lock.lock()
        defer { lock.unlock() }
        guard !done else { return }
        done = true
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// Writes to stderr (progress, messages); stdout carries results only.
enum Console {
    /// Where one in-process run of a command writes instead of the real stdout/stderr (tests).
    final class Capture: @unchecked Sendable {
        private let lock = NSLock()
        private var outText = ""
        private var errText = ""

        init() {}

        var stdout: String { lock.withLock { outText } }
        var stderr: String { lock.withLock { errText } }

        func write(_ text: String, error: Bool) {
            lock.withLock {
                if error { errText += text } else { outText += text }
            }
        }
    }

    /// Set for the duration of an in-process run (`Console.$capture.withValue(…)`).
    @TaskLocal static var capture: Capture?

    static func error(_ text: String) {
        if let capture { return capture.write(text + "\n", error: true) }
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static func status(_ text: String) {
        if let capture { return capture.write(text, error: true) }
        FileHandle.standardError.write(Data(text.utf8))
    }

    static func out(_ text: String) {
        if let capture { return capture.write(text, error: false) }
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}

/// A failure the command already explained on stderr: exit with `code`.
struct CommandFailure: Error, CustomStringConvertible {
    var code: Int32
    var message: String
    var description: String { message }
}

extension ExperimentRunRecord {
    /// The record with metric declarations for every workload and the collectors. Runs stored
    /// since declarations exist carry their own; for older stores they are derived here, at load,
    /// from today's adapters and suite files (same suite and app), so the analysis never guesses
    /// from names. A workload whose suite file is missing here stays undeclared: the report says so.
    func declared(registry: WorkloadRegistry = .standard()) -> ExperimentRunRecord {
        guard !experiment.hasMetricDeclarations else { return self }
        var r = self
        r.experiment = registry.declaring(experiment)
        return r
    }
}
