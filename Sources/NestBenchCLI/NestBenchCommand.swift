import ArgumentParser
import Foundation
import NestBenchProcess

/// `nestbench`: reproduce and extend huge-page / TLB evaluations in (nested) virtualized systems.
public struct NestBenchCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "nestbench",
        abstract: "Measure huge-page / TLB techniques on this machine and in nested VM stacks.",
        subcommands: [
            RunCommand.self, ReportCommand.self, ListCommand.self, RestoreCommand.self, FragmentCommand.self,
            FMFICommand.self, DoctorCommand.self, EventsCommand.self, LatsCommand.self, RoiCommand.self,
            FetchCommand.self, SuitesCommand.self,
            CompareCommand.self, HistoryCommand.self, NightlyCommand.self, ExportCommand.self, ImportCommand.self,
        ])

    public init() {}

    /// The entry point of the executable: parses, runs, maps errors to exit codes
    /// (0 ok, 1 error, 3 workload failed, 5 run not found, 64 usage).
    public static func entry() async -> Never {
        // A closed pipe (a child that died before exec, a closed stdout) is an EPIPE error value.
        ProcessRunner.ignoreBrokenPipes()
        let code: Int32
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            code = ExitCodes.ok
        } catch let failure as CommandFailure {
            if !failure.message.isEmpty { Console.error("nestbench: \(failure.message)") }
            code = failure.code
        } catch {
            let parserCode = exitCode(for: error)
            if parserCode == .success || parserCode == .validationFailure {
                // Help, version, and usage errors: ArgumentParser prints them.
                let message = fullMessage(for: error)
                if parserCode == .success {
                    if !message.isEmpty { Console.out(message + "\n") }
                    code = ExitCodes.ok
                } else {
                    Console.error(message)
                    code = ExitCodes.usage
                }
            } else {
                Console.error("nestbench: \(error)")
                code = ExitCodes.error
            }
        }
        Foundation.exit(code)
    }
}
