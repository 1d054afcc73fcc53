import ArgumentParser
import Foundation
import NestBenchModel
import NestBenchOrchestrator
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
        let access = StoreAccess(options: resultsOptions, includeIncomplete: true)
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
    var files: [String] = []

    @Flag(help: "Import under a new experiment-run id (when the id is already stored with other content).")
    var asNew = false

    @Option(
        name: .customLong("from"),
        help: "Also import the finished experiment runs of another results directory (a shard's store); repeatable.")
    var fromResults: [String] = []

    @Option(help: "With --from: only this campaign's experiment runs, and fail when it has none or one not finished.")
    var campaign: String?

    func validate() throws {
        if files.isEmpty && fromResults.isEmpty { throw ValidationError("give export files, or --from DIR") }
        if campaign != nil && fromResults.isEmpty { throw ValidationError("--campaign goes with --from DIR") }
    }

    func run() async throws {
        _ = global.makeLogger()
        // Another store's experiment runs: read completely before this store is touched.
        let (fromStores, unfinished) = try storeBundles()
        // Decode every file before touching the store: a bad file imports nothing.
        var bundles: [(String, RunExport)] = []
        for file in files {
            let data: Data
            do {
                data = try InputFile.read(file)
            } catch {
                throw CommandFailure(code: ExitCodes.error, message: error.description)
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
                // Foundation reports an out-of-range number (seed: 1e30) as corrupt data too: say what it said.
                var what = context.debugDescription
                if context.codingPath.isEmpty {
                    // The decoder says only "not valid JSON": ask the parser why, or find the number
                    // no field can hold.
                    what = Self.whyNotDecodable(data) ?? what
                }
                throw CommandFailure(
                    code: ExitCodes.error,
                    message:
                        "\(file): \(context.codingPath.isEmpty ? "not a valid export" : Self.path(context.codingPath)): \(what.isEmpty ? "unreadable" : what)"
                )
            } catch {
                throw CommandFailure(code: ExitCodes.error, message: "\(file): \(error)")
            }
        }
        let store = try resultsOptions.openStore()
        for (file, original) in bundles + fromStores {
            let bundle = asNew ? original.renamed(to: Orchestrator.newRunID()) : original
            switch try store.importRun(bundle, source: file) {
            case .imported(let n):
                Console.out(
                    "imported \(bundle.experimentRun.id) (\(bundle.experimentRun.experiment.name), \(n) runs) from \(file)\n")
            case .alreadyPresent:
                Console.out("already present: \(bundle.experimentRun.id) from \(file)\n")
            }
        }
        if !unfinished.isEmpty {
            throw CommandFailure(code: ExitCodes.error, message: unfinished.joined(separator: "\n"))
        }
    }

    /// The finished experiment runs of the `--from` stores (of `--campaign` when given), and a
    /// line for each one left out because it has not finished (it may still change: importing it
    /// now would conflict with what it becomes) or each store without the campaign.
    func storeBundles() throws -> (bundles: [(String, RunExport)], unfinished: [String]) {
        var bundles: [(String, RunExport)] = []
        var unfinished: [String] = []
        for dir in fromResults {
            let path = Store.path(inResults: dir)
            guard FileManager.default.fileExists(atPath: path) else {
                unfinished.append("\(path): no result store (did the shard run? see its log)")
                continue
            }
            let other: Store
            do {
                other = try Store(path: path)
            } catch {
                throw CommandFailure(code: ExitCodes.error, message: "--from \(dir): \(error)")
            }
            let summaries = try other.list().reversed().filter { campaign == nil || $0.campaign == campaign }
            if let campaign, summaries.isEmpty {
                unfinished.append("\(path): no experiment run of campaign \(campaign)")
            }
            for summary in summaries {
                let status = ExperimentRunRecord.Status(rawValue: summary.status)
                guard status == .completed || status == .nothingRan else {
                    unfinished.append(
                        "\(path): experiment run \(summary.id)\(summary.shard.map { " (shard \($0))" } ?? "") is \(summary.status), not imported"
                            + (status == .running ? "" : "; `nestbench list --results \(dir)` shows how to resume it"))
                    continue
                }
                guard let bundle = try other.export(summary.id) else { continue }
                bundles.append((path, bundle))
            }
        }
        return (bundles, unfinished)
    }

    /// "Number 1e400 is not representable", "runs[0].record.planned.sequence: 99999999999999999999
    /// is beyond a 64-bit whole number", or nil.
    static func whyNotDecodable(_ data: Data) -> String? {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            return (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
        }
        // Whole numbers beyond UInt64 first (no field holds them), then beyond Int64 in any field
        // but the seed (the only unsigned 64-bit field).
        func find(_ value: Any, _ path: String, limit: Double) -> String? {
            if let dict = value as? [String: Any] {
                for key in dict.keys.sorted() {
                    if let hit = find(dict[key]!, path.isEmpty ? key : path + "." + key, limit: limit) { return hit }
                }
            } else if let array = value as? [Any] {
                for (i, item) in array.enumerated() {
                    if let hit = find(item, "\(path)[\(i)]", limit: limit) { return hit }
                }
            } else if let number = value as? NSNumber, !(value is Bool), !path.hasSuffix(".seed") || limit > 1e19 {
                let d = number.doubleValue
                if !d.isFinite || (d.rounded() == d && abs(d) >= limit) {
                    return "\(path): \(number) is beyond what the field can hold (a 64-bit whole number)"
                }
            }
            return nil
        }
        return find(object, "", limit: 1.8446744073709552e19) ?? find(object, "", limit: 9.223372036854775807e18)
    }

    static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(
            in: CharacterSet(charactersIn: "."))
    }
}
