import ArgumentParser
import Foundation
import NestBenchPlatforms

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore knobs and stop helpers that a killed nestbench left behind (from its journal).",
        discussion: """
            Takes this machine's lock first, as `run` and `fragment` do: refused (exit 1, naming the \
            holder) while another nestbench measures or fragments here. The lock of a killed \
            nestbench is gone with it, so restoring after a crash is never blocked.
            """)

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        _ = global.makeLogger()
        // Not while another nestbench changes this machine: it restores its own changes when it
        // ends. A killed one's lock went with it (flock), whatever its lock file still says.
        let locks = try await CommandLocks.take(
            [CommandLocks.machine], wait: false,
            refusal: "; it restores what it changed when it ends (run restore after it, if it was killed)")
        defer { for lock in locks { lock.release() } }
        let journal = KnobJournal()
        let restored: [KnobJournal.Entry]
        do {
            OrphanedExperiments.mark(journal)
            restored = try journal.recover()
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
        if restored.isEmpty {
            Console.error("nestbench: nothing to restore (\(journal.path) has no pending changes)")
        }
        for entry in restored { Console.out("restored \(entry.path) = \(entry.original)\n") }
    }
}
