import Foundation
import NestBenchModel
import NestBenchProcess

/// What Tailbench and PARSEC adapters share: finding the suite root, validating parameters,
/// explaining what is missing, and the run-directory set-up steps.
struct SuiteContext: Sendable {
    var definition: SuiteDefinition
    var locator: SuiteLocator
    var environment: [String: String]

    /// The suite root: `params.root`, else the suite's environment variable.
    func root(_ spec: WorkloadSpec) -> String? {
        let value = spec.params["root"] ?? environment[definition.rootEnv]
        return value.flatMap { $0.isEmpty ? nil : ($0.hasSuffix("/") && $0.count > 1 ? String($0.dropLast()) : $0) }
    }

    /// The data root: `params.data_root`, else the suite's data variable, else the fetch location.
    func dataRoot(_ spec: WorkloadSpec) -> String? {
        guard let dataEnv = definition.dataEnv else { return nil }
        if let value = spec.params["data_root"] ?? environment[dataEnv], !value.isEmpty { return value }
        return locator.defaultDataRoot(definition.suite)
    }

    /// Problems with a workload entry: unknown app or parameter, bad values.
    func problems(for spec: WorkloadSpec) -> [WorkloadProblem] {
        guard let app = definition.apps[spec.name] else {
            return [
                WorkloadProblem(
                    key: "name",
                    message:
                        "unknown \(definition.suite) app \"\(spec.name)\" (known: \(definition.apps.keys.sorted().joined(separator: ", ")); see \(definition.file))"
                )
            ]
        }
        let parameters = definition.parameters(of: app)
        var known = Set(parameters.keys)
        known.insert("root")
        if definition.dataEnv != nil { known.insert("data_root") }
        var problems: [WorkloadProblem] = []
        for (key, value) in spec.params.sorted(by: { $0.key < $1.key }) {
            guard known.contains(key) else {
                problems.append(
                    WorkloadProblem(
                        key: "params.\(key)",
                        message:
                            "unknown parameter \"\(key)\" for \(definition.suite) \(spec.name) (known: \(known.sorted().joined(separator: ", ")))"
                    ))
                continue
            }
            if let p = parameters[key], let problem = p.problem(value) {
                problems.append(WorkloadProblem(key: "params.\(key)", message: problem))
            }
        }
        return problems
    }

    /// Placeholder values for a workload (parameters, roots, app directory, run directory).
    func values(_ spec: WorkloadSpec, app: SuiteApp, runDirectory: String?) -> [String: String] {
        var values = definition.values(of: app, params: spec.params, environment: environment)
        if let root = root(spec) {
            values["root"] = root
            values["app"] = root + "/" + app.dir
        }
        if let data = dataRoot(spec) { values["data"] = data }
        if let runDirectory { values["run"] = runDirectory }
        return values
    }

    /// The sentence for an unset suite root.
    var rootHint: String {
        "\(definition.suite) suite root not set: set \(definition.rootEnv)=/path/to/\(definition.suite) (the built suite) or give params.root in the experiment file"
    }

    /// The missing input files among `paths`, with the fetch command that provides them.
    func missingInputs(_ paths: [String], app name: String) -> String? {
        guard let missing = paths.first(where: { !FileManager.default.fileExists(atPath: $0) }) else { return nil }
        return "\(missing): input not fetched; run `nestbench fetch \(definition.suite) --only \(name)`"
    }

    /// Runs the app's set-up steps in its run directory.
    static func runSetup(_ steps: [SetupStep], values: [String: String]) throws(SuiteError) {
        let fm = FileManager.default
        for step in steps {
            do {
                if let dir = step.mkdir {
                    try fm.createDirectory(atPath: Placeholders.expand(dir, values), withIntermediateDirectories: true)
                }
                if let link = step.symlink {
                    try fm.createSymbolicLink(
                        atPath: Placeholders.expand(link.link, values),
                        withDestinationPath: Placeholders.expand(link.target, values))
                }
                if let copy = step.copy {
                    try fm.copyItem(
                        atPath: Placeholders.expand(copy.from, values), toPath: Placeholders.expand(copy.to, values))
                }
                if let template = step.template {
                    let from = Placeholders.expand(template.from, values)
                    guard let text = try? String(contentsOfFile: from, encoding: .utf8) else {
                        throw SuiteError("\(from): cannot read the template")
                    }
                    var out = text
                    for (key, value) in template.replace ?? [:] {
                        out = out.replacingOccurrences(of: key, with: Placeholders.expand(value, values))
                    }
                    try out.write(toFile: Placeholders.expand(template.to, values), atomically: true, encoding: .utf8)
                }
            } catch let error as SuiteError {
                throw error
            } catch {
                throw SuiteError("set-up step \(step) failed: \(error.localizedDescription)")
            }
        }
    }

    /// A base environment for suite programs: PATH and HOME of ours, nothing else implicit.
    func baseEnvironment() -> [String: String] {
        var env: [String: String] = ["PATH": environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"]
        if let home = environment["HOME"] { env["HOME"] = home }
        return env
    }
}

/// TCP helpers for loopback runs.
enum Loopback {
    /// A TCP port on 127.0.0.1 that is free now (bound to port 0, read back, released).
    static func freePort() -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { return nil }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let got = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard got == 0 else { return nil }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Whether some socket listens on TCP `port` (from /proc/net/tcp{,6}, without connecting:
    /// a probe connection would count as one of the harness server's clients).
    static func isListening(port: Int, read: @Sendable (String) async -> String?) async -> Bool {
        let hexPort = String(format: ":%04X", port)
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = await read(file) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 3 else { continue }
                if fields[1].hasSuffix(hexPort) && fields[3] == "0A" { return true }
            }
        }
        return false
    }
}

/// A suite file as an adapter holds it: loaded once when the adapter is made, or why it could not be.
struct SuiteSource: Sendable {
    let name: String
    let definition: SuiteDefinition?
    let loadError: String?
    let locator: SuiteLocator
    let environment: [String: String]

    init(name: String, locator: SuiteLocator, environment: [String: String]) {
        self.name = name
        self.locator = locator
        self.environment = environment
        do {
            definition = try locator.load(name)
            loadError = nil
        } catch {
            definition = nil
            loadError = error.description
        }
    }

    init(name: String, definition: SuiteDefinition, locator: SuiteLocator, environment: [String: String]) {
        self.name = name
        self.definition = definition
        self.loadError = nil
        self.locator = locator
        self.environment = environment
    }

    var context: SuiteContext? {
        definition.map { SuiteContext(definition: $0, locator: locator, environment: environment) }
    }

    /// The problem every workload of this suite has when its file could not be loaded.
    var missing: WorkloadProblem {
        WorkloadProblem(key: "suite", message: loadError ?? "no \(name) suite file")
    }
}
