import ArgumentParser
import Foundation
import NestBenchModel
import NestBenchWorkloads

/// `nestbench lats FILE`: latency summary of a Tailbench lats.bin.
struct LatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lats",
        abstract: "Summarize a Tailbench lats.bin: requests, mean/p50/p95/p99/max of sojourn, service and queue time (ms).")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The lats.bin file.")
    var file: String

    @Option(help: "text or json.")
    var format: TextOrJSON = .text

    func run() async throws {
        _ = global.makeLogger()
        let summary: LatsSummary
        do {
            summary = try LatsFile.analyze(path: file)
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
        if format == .json {
            func column(_ s: LatencySummary) -> String {
                "{\"mean\": \(json(s.mean)), \"p50\": \(json(s.p50)), \"p95\": \(json(s.p95)), \"p99\": \(json(s.p99)), \"max\": \(json(s.max))}"
            }
            Console.out(
                "{\"requests\": \(summary.requests), \"sojourn_ms\": \(column(summary.sojourn)), \"service_ms\": \(column(summary.service)), \"queue_ms\": \(column(summary.queue))}\n"
            )
            return
        }
        var text = "\(file): \(summary.requests) requests\n"
        text += "           mean        p50        p95        p99        max   (ms)\n"
        for (name, s) in [("sojourn", summary.sojourn), ("service", summary.service), ("queue", summary.queue)] {
            text += name.padding(toLength: 8, withPad: " ", startingAt: 0)
            for v in [s.mean, s.p50, s.p95, s.p99, s.max] { text += String(format: " %10.3f", v) }
            text += "\n"
        }
        Console.out(text)
    }

    /// Shortest round-trip decimal form (JSON has no NaN/inf; these are finite).
    func json(_ v: Double) -> String { "\(v)" }
}

/// `nestbench roi FILE`: the ROI seconds of a PARSEC log.
struct RoiCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "roi",
        abstract: "Print the ROI seconds of a PARSEC run log ([HOOKS] Total time spent in ROI), or why there is none.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A parsecmgmt log or a PARSEC program's output.")
    var file: String

    func run() async throws {
        _ = global.makeLogger()
        let data: Data
        do {
            data = try InputFile.read(file)
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
        let results = ParsecLog.parse(String(decoding: data, as: UTF8.self))
        var failed = false
        for r in results {
            let label = results.count > 1 ? "\(r.benchmark ?? "?")\t" : ""
            if r.succeeded, let s = r.seconds {
                Console.out("\(label)\(s)\n")
            } else {
                failed = true
                Console.error("nestbench: \(file): \(r.benchmark.map { "\($0): " } ?? "")\(r.failure ?? "no ROI time")")
            }
        }
        if failed { throw CommandFailure(code: ExitCodes.workloadFailed, message: "") }
    }
}

/// `nestbench suites`: the Tailbench and PARSEC apps and whether each can run here.
struct SuitesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suites",
        abstract:
            "List the Tailbench and PARSEC apps (and of suites added through YAML) and whether each is ready on this machine.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        _ = global.makeLogger()
        let locator = SuiteLocator()
        // Tailbench, PARSEC and every suite added through a YAML file (`runner:`).
        let adapters = WorkloadRegistry.standard(suites: locator).adapters.filter { $0.suite != "micro" }.map {
            ($0.suite, $0)
        }
        for (suite, adapter) in adapters {
            let definition: SuiteDefinition
            do {
                definition = try locator.load(suite)
            } catch {
                Console.out("\(suite): \(error.description)\n")
                continue
            }
            Console.out("\(suite) (\(definition.file)):\n")
            for name in definition.apps.keys.sorted() {
                let column = name.padding(toLength: 14, withPad: " ", startingAt: 0)
                let sizes = Self.sizes(of: definition.apps[name]!)
                if sizes.isEmpty {
                    let reason = adapter.unavailableReason(for: WorkloadSpec(suite: suite, name: name))
                    Console.out("  \(column) \(reason.map { "not ready: \($0)" } ?? "ready")\n")
                    continue
                }
                // Readiness per input size (PARSEC: test/simdev ship with the sources, the
                // others need the input archives), sizes with the same reason together.
                var ready: [String] = []
                var notReady: [(reason: String, sizes: [String])] = []
                for size in sizes {
                    guard
                        let reason = adapter.unavailableReason(
                            for: WorkloadSpec(suite: suite, name: name, params: ["size": size]))
                    else {
                        ready.append(size)
                        continue
                    }
                    let general = reason.replacingOccurrences(of: "input_\(size).tar", with: "input_<size>.tar")
                    if let i = notReady.firstIndex(where: { $0.reason == general }) {
                        notReady[i].sizes.append(size)
                    } else {
                        notReady.append((general, [size]))
                    }
                }
                if ready.isEmpty && notReady.count == 1 {
                    Console.out("  \(column) not ready (every size): \(notReady[0].reason)\n")
                    continue
                }
                Console.out("  \(column) ready: \(ready.isEmpty ? "no size" : ready.joined(separator: ", "))\n")
                for (reason, group) in notReady {
                    Console.out("  \(String(repeating: " ", count: 14)) not ready: \(group.joined(separator: ", ")): \(reason)\n")
                }
                if suite == "parsec", !ready.isEmpty,
                    let reason = adapter.unavailableReason(
                        for: WorkloadSpec(suite: suite, name: name, params: ["size": ready[0], "mode": "parsecmgmt"]))
                {
                    Console.out("  \(String(repeating: " ", count: 14)) mode parsecmgmt not ready: \(reason)\n")
                }
            }
        }
    }
}

extension SuitesCommand {
    /// An app's input sizes in PARSEC's order (none for suites without sizes).
    static func sizes(of app: SuiteApp) -> [String] {
        guard case .bySize(let map) = app.args else { return [] }
        let order = ["test", "simdev", "simsmall", "simmedium", "simlarge", "native"]
        return order.filter { map[$0] != nil } + map.keys.filter { !order.contains($0) }.sorted()
    }
}

/// `nestbench fetch SUITE`: download, verify and unpack a suite's input archives.
struct FetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Download a suite's input archives into the cache (resuming), verify them, and unpack them.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "tailbench or parsec.")
    var suite: String

    @Option(help: "Only the inputs these apps need (comma-separated).")
    var only: String?

    @Option(help: "Only archives providing these input sizes (PARSEC; comma-separated; default: the suite's default size).")
    var size: String?

    @Option(help: "Suite root to unpack `into: root` inputs into (default: $PARSEC_ROOT / $TAILBENCH_ROOT).")
    var root: String?

    @Option(name: .customLong("data-root"), help: "Data root to unpack `into: data` inputs into.")
    var dataRoot: String?

    func run() async throws {
        _ = global.makeLogger()
        let locator = SuiteLocator()
        let definition: SuiteDefinition
        do {
            definition = try locator.load(suite)
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
        var names = Set(definition.inputs.keys)
        if let only {
            let apps = only.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
            names = []
            for app in apps {
                guard let entry = definition.apps[app] else {
                    throw CommandFailure(
                        code: ExitCodes.usage,
                        message:
                            "--only: unknown \(suite) app \"\(app)\" (known: \(definition.apps.keys.sorted().joined(separator: ", ")))"
                    )
                }
                if let inputs = entry.inputs {
                    names.formUnion(inputs)
                } else if !(entry.inputSizes ?? []).isEmpty {
                    names.formUnion(definition.inputs.keys)
                }
            }
        }
        // PARSEC archives are per size group (sim, native): only those of the wanted sizes.
        let sizes = size.map { $0.split(separator: ",").map(String.init) } ?? definition.parameters["size"].map { [$0.default] }
        if let sizes {
            let skipped = names.filter { name in
                guard let provides = definition.inputs[name]?.provides else { return false }
                return Set(provides).isDisjoint(with: sizes)
            }
            for name in skipped.sorted() {
                let provides = definition.inputs[name]?.provides?.joined(separator: ", ") ?? ""
                Console.error("nestbench: skipping \(name) (\(provides) inputs); pass --size to fetch it")
            }
            names.subtract(skipped)
        }
        if names.isEmpty {
            Console.error("nestbench: no input archives to fetch for \(only ?? suite)")
            return
        }
        let env = ProcessInfo.processInfo.environment
        let quiet = global.quiet
        let fetcher = InputFetcher(downloads: locator.downloads) { p in
            guard !quiet else { return }
            let mb = Double(p.received) / 1_048_576
            if let expected = p.expected, expected > 0 {
                Console.status(
                    String(
                        format: "\r%@: %.1f / %.1f MiB (%.0f%%)", p.input, mb, Double(expected) / 1_048_576,
                        100 * Double(p.received) / Double(expected)))
            } else {
                Console.status(String(format: "\r%@: %.1f MiB", p.input, mb))
            }
        }
        for name in names.sorted() {
            let input = definition.inputs[name]!
            let destination: String
            if input.into == "root" {
                guard let r = root ?? env[definition.rootEnv], !r.isEmpty else {
                    throw CommandFailure(
                        code: ExitCodes.error,
                        message:
                            "input \(name) unpacks into the \(suite) suite root: set \(definition.rootEnv) or pass --root DIR")
                }
                destination = r
            } else {
                destination = dataRoot ?? definition.dataEnv.flatMap { env[$0] } ?? locator.defaultDataRoot(suite)
            }
            if !quiet { Console.error("\(name): \(input.url)") }
            do {
                let outcome = try await fetcher.fetch(name: name, input: input, into: destination)
                if !quiet { Console.status("\n") }
                Console.out("\(name): \(outcome.archive) (\(outcome.verification)), unpacked into \(outcome.unpackedInto)\n")
            } catch {
                if !quiet { Console.status("\n") }
                throw CommandFailure(code: ExitCodes.error, message: error.description)
            }
        }
    }
}
