import ArgumentParser
import Foundation
import Logging
import NestBenchPlatforms
import NestBenchStore

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
    static func error(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static func status(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    static func out(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}

/// A failure the command already explained on stderr: exit with `code`.
struct CommandFailure: Error, CustomStringConvertible {
    var code: Int32
    var message: String
    var description: String { message }
}
