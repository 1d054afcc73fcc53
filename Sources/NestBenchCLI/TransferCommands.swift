import ArgumentParser
import Foundation
import NestBenchStore

struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Write a stored run (with its runs and timelines) as JSON on stdout.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var resultsOptions: ResultsOptions

    @Argument(help: "Run id, a unique prefix of one, or 'latest'.")
    var run: String = "latest"

    func run() async throws {
        _ = global.makeLogger()
        let access = StoreAccess(options: resultsOptions)
        let store = try access.store()
        let record = try access.record(run, in: store)
        guard let bundle = try store.export(record.id) else {
            throw CommandFailure(code: ExitCodes.baselineNotFound, message: "run \(record.id) vanished from the store")
        }
        let data = try RunExport.encoder().encode(bundle)
        Console.out(String(decoding: data, as: UTF8.self) + "\n")
    }
}

struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Add runs exported by `nestbench export` (e.g. from other testbeds) to the store.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var resultsOptions: ResultsOptions

    @Argument(help: "Files written by nestbench export.")
    var files: [String]

    func run() async throws {
        _ = global.makeLogger()
        // Decode every file before touching the store: a bad file imports nothing.
        var bundles: [(String, RunExport)] = []
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw CommandFailure(code: ExitCodes.error, message: "\(file): cannot read the file")
            }
            do {
                bundles.append((file, try RunExport.decoder().decode(RunExport.self, from: data)))
            } catch let DecodingError.keyNotFound(key, context) {
                throw CommandFailure(
                    code: ExitCodes.error,
                    message: "\(file): \(Self.path(context.codingPath + [key])): missing (not a nestbench export?)")
            } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
                throw CommandFailure(
                    code: ExitCodes.error, message: "\(file): \(Self.path(context.codingPath)): \(context.debugDescription)")
            } catch let DecodingError.dataCorrupted(context) {
                throw CommandFailure(
                    code: ExitCodes.error,
                    message:
                        "\(file): \(context.codingPath.isEmpty ? "not valid JSON" : Self.path(context.codingPath) + ": " + context.debugDescription)"
                )
            } catch {
                throw CommandFailure(code: ExitCodes.error, message: "\(file): \(error)")
            }
        }
        let store = try resultsOptions.openStore()
        for (file, bundle) in bundles {
            switch try store.importRun(bundle, source: file) {
            case .imported(let n):
                Console.out(
                    "imported \(bundle.experimentRun.id) (\(bundle.experimentRun.experiment.name), \(n) runs) from \(file)\n")
            case .alreadyPresent:
                Console.out("already present: \(bundle.experimentRun.id) from \(file)\n")
            }
        }
    }

    static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(
            in: CharacterSet(charactersIn: "."))
    }
}
