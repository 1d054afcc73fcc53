import NestBenchModel
import Yams

/// Walks a composed YAML tree, collecting every problem with its key path and position
/// instead of stopping at the first.
final class YAMLReader {
    let file: String
    /// For `${VAR}` / `${VAR:-default}` in paths.
    let environment: [String: String]
    private(set) var problems: [ConfigProblem] = []

    init(file: String, environment: [String: String] = [:]) {
        self.file = file
        self.environment = environment
    }

    /// Takes over the problems of a reader of an included file.
    func absorb(_ other: YAMLReader) {
        problems += other.problems
    }

    /// A string with `${VAR}` and `${VAR:-default}` expanded from the environment.
    func expanded(_ node: Node, at path: String) -> String? {
        guard let text = string(node, at: path) else { return nil }
        var result = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                problem(path, node, "unterminated ${ in \"\(text)\"")
                return nil
            }
            let body = rest[start.upperBound..<end]
            let parts = body.components(separatedBy: ":-")
            let name = parts[0]
            if let value = environment[name], !value.isEmpty {
                result += value
            } else if parts.count > 1 {
                result += parts.dropFirst().joined(separator: ":-")
            } else {
                problem(path, node, "environment variable \(name) is not set (set it, e.g. \(name)=/boot/vmlinuz-…)")
                return nil
            }
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }

    func problem(_ path: String, _ node: Node?, _ message: String) {
        problems.append(
            ConfigProblem(file: file, keyPath: path, line: node?.mark?.line, column: node?.mark?.column, message: message))
    }

    private func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s): return "\"\(s.string)\""
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    private func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The entries of a mapping in file order, reporting unknown keys and duplicates.
    /// `allowed == nil` accepts any key (maps of user names).
    func mapping(_ node: Node, at path: String, allowed: Set<String>?) -> [(key: String, value: Node, path: String)]? {
        guard case .mapping(let mapping) = node else {
            problem(path, node, "expected a mapping, found \(describe(node))")
            return nil
        }
        var seen: Set<String> = []
        var entries: [(key: String, value: Node, path: String)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let keyScalar) = keyNode else {
                problem(path, keyNode, "keys must be plain strings")
                continue
            }
            let key = keyScalar.string
            let keyPath = join(path, key)
            if let allowed, !allowed.contains(key) {
                problem(keyPath, keyNode, "unknown key \"\(key)\" (expected one of: \(allowed.sorted().joined(separator: ", ")))")
                continue
            }
            if !seen.insert(key).inserted {
                problem(keyPath, keyNode, "duplicate key \"\(key)\"")
                continue
            }
            entries.append((key, value, keyPath))
        }
        return entries
    }

    func sequence(_ node: Node, at path: String) -> [Node]? {
        guard case .sequence(let seq) = node else {
            problem(path, node, "expected a list, found \(describe(node))")
            return nil
        }
        return Array(seq)
    }

    func string(_ node: Node, at path: String) -> String? {
        guard case .scalar(let s) = node else {
            problem(path, node, "expected a string, found \(describe(node))")
            return nil
        }
        return s.string
    }

    func int(_ node: Node, at path: String, range: ClosedRange<Int>? = nil) -> Int? {
        guard case .scalar(let s) = node, let v = Int(s.string) else {
            problem(path, node, "expected a whole number, found \(describe(node))")
            return nil
        }
        if let range, !range.contains(v) {
            problem(path, node, "\(v) is out of range \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return v
    }

    func uint64(_ node: Node, at path: String) -> UInt64? {
        guard case .scalar(let s) = node, let v = UInt64(s.string) else {
            problem(path, node, "expected a non-negative whole number, found \(describe(node))")
            return nil
        }
        return v
    }

    func double(_ node: Node, at path: String, range: ClosedRange<Double>? = nil) -> Double? {
        guard case .scalar(let s) = node, let v = Double(s.string), v.isFinite else {
            problem(path, node, "expected a number, found \(describe(node))")
            return nil
        }
        if let range, !range.contains(v) {
            problem(path, node, "\(v) is out of range \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return v
    }

    func bool(_ node: Node, at path: String) -> Bool? {
        guard case .scalar(let s) = node else {
            problem(path, node, "expected true or false, found \(describe(node))")
            return nil
        }
        switch s.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            problem(path, node, "expected true or false, found \(describe(node))")
            return nil
        }
    }

    func bytes(_ node: Node, at path: String) -> UInt64? {
        guard case .scalar(let s) = node, let v = Units.bytes(s.string) else {
            problem(path, node, "expected a size such as 4GiB, 512MiB or 1048576, found \(describe(node))")
            return nil
        }
        return v
    }

    func seconds(_ node: Node, at path: String) -> Double? {
        guard case .scalar(let s) = node, let v = Units.seconds(s.string), v > 0 else {
            problem(path, node, "expected a positive duration such as 90s, 2m or 500ms, found \(describe(node))")
            return nil
        }
        return v
    }

    func choice(_ node: Node, at path: String, from values: [String]) -> String? {
        guard let s = string(node, at: path) else { return nil }
        guard values.contains(s) else {
            problem(path, node, "\"\(s)\" is not one of: \(values.joined(separator: ", "))")
            return nil
        }
        return s
    }

    /// A mapping of string → scalar (numbers and booleans kept as written).
    func stringMap(_ node: Node, at path: String) -> [String: String]? {
        guard let entries = mapping(node, at: path, allowed: nil) else { return nil }
        var result: [String: String] = [:]
        for entry in entries {
            if let v = string(entry.value, at: entry.path) { result[entry.key] = v }
        }
        return result
    }
}
