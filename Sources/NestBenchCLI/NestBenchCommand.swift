import ArgumentParser
import Foundation
import NestBenchBuildInfo
import NestBenchProcess

/// `nestbench`: reproduce and extend huge-page / TLB evaluations in (nested) virtualized systems.
public struct NestBenchCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "nestbench",
        abstract: "Measure huge-page / TLB techniques on this machine and in nested VM stacks.",
        version: "nestbench \(BuildInfo.version) (commit \(BuildInfo.commit))",
        subcommands: [
            RunCommand.self, ReportCommand.self, ListCommand.self, RestoreCommand.self, FragmentCommand.self,
            FMFICommand.self, DoctorCommand.self, EventsCommand.self, LatsCommand.self, RoiCommand.self,
            FetchCommand.self, SuitesCommand.self, AlignCommand.self,
            CompareCommand.self, HistoryCommand.self, NightlyCommand.self, ExportCommand.self, ImportCommand.self,
            SlurmCommand.self, ShardStatusCommand.self,
        ])

    public init() {}

    /// The entry point of the executable: runs the command line and exits with its code.
    public static func entry() async -> Never {
        // A closed pipe (a child that died before exec, a closed stdout) is an EPIPE error value.
        ProcessRunner.ignoreBrokenPipes()
        Foundation.exit(await main(Array(CommandLine.arguments.dropFirst())))
    }

    /// Parses and runs one command line in this process; maps errors to exit codes
    /// (0 ok, 1 error, 3 workload failed, 5 run not found, 64 usage). The executable and the
    /// in-process command tests both go through here.
    public static func main(_ arguments: [String]) async -> Int32 {
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            return ExitCodes.ok
        } catch let failure as CommandFailure {
            if !failure.message.isEmpty { Console.error("nestbench: \(failure.message)") }
            return failure.code
        } catch {
            let parserCode = exitCode(for: error)
            if parserCode == .success || parserCode == .validationFailure {
                // Help, version, and usage errors: ArgumentParser prints them.
                let message = fullMessage(for: error)
                if parserCode == .success {
                    if !message.isEmpty { Console.out(message + "\n") }
                    return ExitCodes.ok
                }
                Console.error(message)
                return ExitCodes.usage
            }
            Console.error("nestbench: \(error)")
            return ExitCodes.error
        }
    }
}
