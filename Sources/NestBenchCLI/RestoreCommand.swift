import ArgumentParser
import Foundation
import NestBenchPlatforms

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore knobs and stop helpers that a killed nestbench left behind (from its journal).")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        _ = global.makeLogger()
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
