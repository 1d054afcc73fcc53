import Foundation
import NestBenchModel
import Yams

/// Errors reading a suite file (`Suites/tailbench.yaml`, `Suites/parsec.yaml`).
public struct SuiteError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(_ message: String) { self.message = message }
}

/// A parameter an app takes, with its default and where else its value may come from.
public struct SuiteParameter: Sendable, Hashable, Decodable {
    public var `default`: String
    /// An environment variable consulted when the experiment does not set the parameter.
    public var env: String?
    public var choices: [String]?
    /// `positive`, `count`, `positive-number`, `cpus`, or nil for free text.
    public var kind: String?

    /// The problem with `value`, or nil.
    public func problem(_ value: String) -> String? {
        if let choices, !choices.contains(value) {
            return "expected one of \(choices.joined(separator: ", ")), found \"\(value)\""
        }
        switch kind {
        case "positive":
            if (UInt64(value) ?? 0) == 0 { return "expected a whole number of at least 1, found \"\(value)\"" }
        case "count":
            if UInt64(value) == nil { return "expected a whole number (0 or more), found \"\(value)\"" }
        case "positive-number":
            if !((Double(value) ?? 0) > 0) || !(Double(value) ?? 0).isFinite {
                return "expected a number above 0, found \"\(value)\""
            }
        case "cpus":
            if !value.isEmpty && CPUList.parse(value) == nil {
                return "expected a CPU list such as \"0-3,6\", found \"\(value)\""
            }
        default: break
        }
        return nil
    }
}

/// An input archive a suite's apps need.
public struct SuiteInput: Sendable, Hashable, Decodable {
    public var url: String
    /// Hex SHA-256 of the archive, when its publisher gives one; nil means "checksum unknown".
    public var sha256: String?
    public var stripComponents: Int?
    /// `root` (the suite root) or `data` (the suite's data root).
    public var into: String
    /// The input sizes it provides (PARSEC), or nil for all.
    public var provides: [String]?
    public var description: String?

    enum CodingKeys: String, CodingKey {
        case url, sha256, into, provides, description
        case stripComponents = "strip_components"
    }

    public init(
        url: String, sha256: String? = nil, stripComponents: Int? = nil, into: String, provides: [String]? = nil,
        description: String? = nil
    ) {
        self.url = url
        self.sha256 = sha256
        self.stripComponents = stripComponents
        self.into = into
        self.provides = provides
        self.description = description
    }

    /// The archive's file name (the last component of its URL).
    public var fileName: String { URL(string: url)?.lastPathComponent ?? "input.tar" }
}

/// One set-up step run in the run directory before the app starts (what the suite's run script does).
public struct SetupStep: Sendable, Hashable, Decodable {
    public struct Copy: Sendable, Hashable, Decodable {
        public var from: String
        public var to: String
        public var replace: [String: String]?
    }
    public struct Link: Sendable, Hashable, Decodable {
        public var target: String
        public var link: String
    }
    public var mkdir: String?
    public var copy: Copy?
    public var template: Copy?
    public var symlink: Link?
}

/// One app of a suite as its own scripts run it.
public struct SuiteApp: Sendable, Hashable, Decodable {
    public var dir: String
    // Tailbench
    public var integrated: String?
    public var server: String?
    public var client: String?
    public var args: SuiteArgs
    public var clientArgs: [String]?
    public var env: [String: String]?
    public var setup: [SetupStep]?
    public var requires: [String]?
    public var parameters: [String: SuiteParameter]?
    public var defaults: [String: String]?
    public var inputs: [String]?
    // PARSEC
    public var package: String?
    public var exec: String?
    public var inputSizes: [String]?
    /// Declarations that replace the suite's for this app (same name), or add to them.
    public var metrics: [MetricDeclaration]?

    enum CodingKeys: String, CodingKey {
        case dir, integrated, server, client, args, env, setup, requires, parameters, defaults, inputs, package, exec
        case metrics
        case clientArgs = "client_args"
        case inputSizes = "input_sizes"
    }
}

/// Arguments: one list (Tailbench) or one list per input size (PARSEC's runconf files).
public enum SuiteArgs: Sendable, Hashable, Decodable {
    case fixed([String])
    case bySize([String: [String]])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let list = try? container.decode([String].self) {
            self = .fixed(list)
        } else {
            self = .bySize(try container.decode([String: [String]].self))
        }
    }

    public func arguments(size: String?) -> [String]? {
        switch self {
        case .fixed(let list): return list
        case .bySize(let map): return size.flatMap { map[$0] }
        }
    }
}

/// A suite file: where the suite lives, its parameters, inputs and apps.
public struct SuiteDefinition: Sendable, Hashable, Decodable {
    public var suite: String
    /// The environment variable holding the suite root when the experiment gives no `params.root`.
    public var rootEnv: String
    /// The environment variable holding the data root (Tailbench's DATA_ROOT), if the suite has one.
    public var dataEnv: String?
    public var parameters: [String: SuiteParameter]
    public var inputs: [String: SuiteInput]
    public var apps: [String: SuiteApp]
    /// What the apps' metrics are (unit, polarity, center, role, paper figures); an app's own
    /// `metrics:` replace entries of the same name. Exactly one primary per app.
    public var metrics: [MetricDeclaration]
    /// Which adapter runs the apps of a suite added through YAML (`tailbench` or `parsec`); nil
    /// for tailbench.yaml and parsec.yaml themselves.
    public var runner: String?
    /// The file it was read from.
    public var file: String = ""

    enum CodingKeys: String, CodingKey {
        case suite, parameters, inputs, apps, metrics, runner
        case rootEnv = "root_env"
        case dataEnv = "data_env"
    }

    /// Reads and checks a suite file.
    public static func load(path: String) throws(SuiteError) -> SuiteDefinition {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8)
        else {
            throw SuiteError("\(path): cannot read the suite file")
        }
        var definition: SuiteDefinition
        do {
            definition = try YAMLDecoder().decode(SuiteDefinition.self, from: text)
        } catch let error as DecodingError {
            throw SuiteError("\(path): \(describe(error))")
        } catch {
            throw SuiteError("\(path): invalid YAML: \(error)")
        }
        definition.file = path
        for (name, app) in definition.apps.sorted(by: { $0.key < $1.key }) {
            for input in app.inputs ?? [] where definition.inputs[input] == nil {
                throw SuiteError("\(path): apps.\(name).inputs: unknown input \"\(input)\"")
            }
            let primaries = definition.metrics(of: app).filter { $0.role == .primary }
            guard primaries.count == 1, let primary = primaries.first, !primary.isPattern else {
                throw SuiteError(
                    "\(path): apps.\(name): expected exactly one metric with role primary (a name, not a pattern) in metrics, found "
                        + (primaries.isEmpty ? "none" : primaries.map(\.name).joined(separator: ", ")))
            }
        }
        return definition
    }

    /// The metric declarations of one app: the suite's, with the app's own replacing those of the same name.
    public func metrics(of app: SuiteApp) -> [MetricDeclaration] {
        let own = app.metrics ?? []
        return own
            + metrics.filter { d in !own.contains { $0.name == d.name } }
            .map { d in
                // An app that declares its own primary demotes the suite's.
                var d = d
                if d.role == .primary && own.contains(where: { $0.role == .primary }) { d.role = .secondary }
                return d
            }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "\(path(context)): missing required key \"\(key.stringValue)\""
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    /// The app's parameters: the suite's, the app's own, with the app's defaults.
    public func parameters(of app: SuiteApp) -> [String: SuiteParameter] {
        var result = parameters
        for (name, p) in app.parameters ?? [:] { result[name] = p }
        for (name, value) in app.defaults ?? [:] { result[name]?.default = value }
        return result
    }

    /// Every parameter value for a workload: experiment params, else the parameter's environment
    /// variable, else its default.
    public func values(of app: SuiteApp, params: [String: String], environment: [String: String]) -> [String: String] {
        var values: [String: String] = [:]
        for (name, p) in parameters(of: app) {
            values[name] = params[name] ?? p.env.flatMap { environment[$0] }.flatMap { $0.isEmpty ? nil : $0 } ?? p.default
        }
        return values
    }
}

/// Substitutes `{name}` placeholders; an unknown one is left as is and reported by `unresolved`.
public enum Placeholders {
    public static func expand(_ text: String, _ values: [String: String]) -> String {
        guard text.contains("{") else { return text }
        var out = ""
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{") {
            out += rest[..<open]
            guard let close = rest[open...].firstIndex(of: "}") else { break }
            let name = String(rest[rest.index(after: open)..<close])
            if let value = values[name] {
                out += value
            } else {
                out += rest[open...close]
            }
            rest = rest[rest.index(after: close)...]
        }
        out += rest
        return out
    }

    /// The placeholders of `text` that `values` does not define.
    public static func unresolved(_ text: String, _ values: [String: String]) -> [String] {
        var names: [String] = []
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            let name = String(rest[rest.index(after: open)..<close])
            if values[name] == nil { names.append(name) }
            rest = rest[rest.index(after: close)...]
        }
        return names
    }
}

/// Finds the suite files (`Suites/<suite>.yaml`) and NestBench's caches.
public struct SuiteLocator: Sendable {
    /// The directory holding the suite files, if found.
    public var directory: String?
    /// NestBench's cache root (`$NESTBENCH_CACHE`, else ~/.cache/nestbench).
    public var cacheDirectory: String

    /// `$NESTBENCH_SUITES`, else the first `Suites/` holding `tailbench.yaml` above the current
    /// directory or the executable.
    public init(directory: String? = nil, cacheDirectory: String? = nil) {
        let env = ProcessInfo.processInfo.environment
        self.directory = directory ?? env["NESTBENCH_SUITES"] ?? Self.search()
        self.cacheDirectory = cacheDirectory ?? env["NESTBENCH_CACHE"] ?? ((env["HOME"] ?? "/tmp") + "/.cache/nestbench")
    }

    static func search() -> String? {
        var starts = [FileManager.default.currentDirectoryPath]
        if let exe = CommandLine.arguments.first, exe.contains("/") {
            starts.append(((exe as NSString).resolvingSymlinksInPath as NSString).deletingLastPathComponent)
        }
        for start in starts {
            var dir = start
            for _ in 0..<8 {
                if FileManager.default.fileExists(atPath: dir + "/Suites/tailbench.yaml") { return dir + "/Suites" }
                let parent = (dir as NSString).deletingLastPathComponent
                if parent == dir { break }
                dir = parent
            }
        }
        return nil
    }

    /// Suite files besides tailbench.yaml and parsec.yaml: `<name>.yaml` files of the directory
    /// whose top level has `runner:` (name → runner), in name order. Other YAML files there
    /// (experiments) have no `runner:` and are skipped.
    public func additionalSuites() -> [(name: String, runner: String)] {
        guard let directory, let files = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var result: [(name: String, runner: String)] = []
        for file in files.sorted() where file.hasSuffix(".yaml") {
            let name = String(file.dropLast(5))
            guard name != "tailbench", name != "parsec",
                let data = FileManager.default.contents(atPath: "\(directory)/\(file)"),
                let node = try? Yams.compose(yaml: String(decoding: data, as: UTF8.self)),
                let runner = node.mapping?["runner"]?.string
            else { continue }
            result.append((name, runner))
        }
        return result
    }

    /// Loads `<directory>/<suite>.yaml`.
    public func load(_ suite: String) throws(SuiteError) -> SuiteDefinition {
        guard let directory else {
            throw SuiteError(
                "cannot find NestBench's Suites/ directory with \(suite).yaml; run from the project checkout or set NESTBENCH_SUITES"
            )
        }
        return try SuiteDefinition.load(path: "\(directory)/\(suite).yaml")
    }

    /// Where downloaded archives are kept.
    public var downloads: String { cacheDirectory + "/downloads" }

    /// The default data root of a suite (where `nestbench fetch` unpacks `into: data` inputs).
    public func defaultDataRoot(_ suite: String) -> String { "\(cacheDirectory)/suites/\(suite)/data" }
}
