import Foundation

/// Tags of an experiment run: the user's (`--tag key=value`) and the automatic ones. A tag that
/// holds for one configuration only (a stack layer's kernel) is stored scoped, `L1.kernel@vanilla`;
/// history and compare see, for the runs of a configuration, its scoped tags under their plain
/// names over the unscoped ones.
public enum RunTags {
    /// Separates a tag's name from the configuration it is scoped to.
    public static let scopeSeparator: Character = "@"

    /// `key@configuration`.
    public static func scoped(_ key: String, configuration: String) -> String {
        "\(key)\(scopeSeparator)\(configuration)"
    }

    /// The tags of one configuration's runs: the unscoped tags, overlaid with those scoped to it;
    /// tags scoped to other configurations are left out.
    public static func resolve(_ tags: [String: String], configuration: String) -> [String: String] {
        var result: [String: String] = [:]
        var scoped: [String: String] = [:]
        for (key, value) in tags {
            if let at = key.lastIndex(of: scopeSeparator) {
                if key[key.index(after: at)...] == configuration { scoped[String(key[..<at])] = value }
            } else {
                result[key] = value
            }
        }
        result.merge(scoped) { $1 }
        return result
    }

    /// Scoped tags that every one of `configurations` has with the same value become one unscoped
    /// tag (what `resolve` gives is unchanged; listings get shorter).
    public static func compact(_ tags: [String: String], configurations: [String]) -> [String: String] {
        guard !configurations.isEmpty else { return tags }
        var byName: [String: [String: String]] = [:]
        for (key, value) in tags {
            guard let at = key.lastIndex(of: scopeSeparator) else { continue }
            byName[String(key[..<at]), default: [:]][String(key[key.index(after: at)...])] = value
        }
        var result = tags
        for (name, values) in byName where tags[name] == nil {
            let all = configurations.compactMap { values[$0] }
            guard all.count == configurations.count, let first = all.first, all.allSatisfy({ $0 == first }) else { continue }
            for c in configurations { result[scoped(name, configuration: c)] = nil }
            result[name] = first
        }
        return result
    }

    /// `automatic` without the tags the user set themselves (by plain name, scoped or not): the
    /// user's `--tag kernel=…` wins over every configuration's automatic `kernel`.
    public static func yielding(_ automatic: [String: String], to user: [String: String]) -> [String: String] {
        automatic.filter { key, _ in
            let name = key.lastIndex(of: scopeSeparator).map { String(key[..<$0]) } ?? key
            return user[name] == nil
        }
    }

    /// Parses `key=value` filters; nil names the first malformed one.
    public static func parseFilters(_ texts: [String]) -> (filters: [(key: String, value: String)], bad: String?) {
        var filters: [(key: String, value: String)] = []
        for text in texts {
            guard let eq = text.firstIndex(of: "="), eq != text.startIndex else { return ([], text) }
            filters.append((String(text[..<eq]), String(text[text.index(after: eq)...])))
        }
        return (filters, nil)
    }

    /// Whether `tags` has every filter's key with its value.
    public static func matches(_ tags: [String: String], _ filters: [(key: String, value: String)]) -> Bool {
        filters.allSatisfy { tags[$0.key] == $0.value }
    }

    /// Automatic tags too long for a one-line listing (command lines, the full commit); `report`
    /// and `history` show them.
    public static func isVerbose(_ key: String) -> Bool {
        let name = key.lastIndex(of: scopeSeparator).map { String(key[..<$0]) } ?? key
        return name.hasSuffix(".cmdline") || name == "nestbench.commit"
    }

    /// `k=v,k2=v2`, sorted by key.
    public static func describe(_ tags: [String: String]) -> String {
        tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }
}

/// The tags every run gets without `--tag`: what software measured on what machine.
public enum AutomaticTags {
    /// This machine: `host.kernel` (release), `host.cmdline`, and `testbed` (hostname, CPU model,
    /// kernel release, memory: the fingerprint that tells results of two testbeds apart).
    public static func machine(_ m: MachineDescription) -> [String: String] {
        var tags: [String: String] = [:]
        if !m.kernel.isEmpty { tags["host.kernel"] = m.kernel }
        if let cmdline = m.extra["kernel.cmdline"], !cmdline.isEmpty { tags["host.cmdline"] = cmdline }
        let memory = m.memoryBytes > 0 ? "\(m.memoryBytes / (1 << 20)) MiB" : "memory unknown"
        tags["testbed"] = "\(m.hostname) (\(m.cpuModel), \(m.kernel.isEmpty ? "kernel unknown" : m.kernel), \(memory))"
        return tags
    }

    /// A configuration that runs on this machine: its `kernel` is this machine's.
    public static func local(configuration: String, machine m: MachineDescription) -> [String: String] {
        m.kernel.isEmpty ? [:] : [RunTags.scoped("kernel", configuration: configuration): m.kernel]
    }

    /// One layer of a booted stack as tags see it.
    public struct Layer: Sendable, Hashable {
        public var name: String
        /// nil when it could not be read.
        public var kernel: String?
        public var commandLine: String?

        public init(name: String, kernel: String?, commandLine: String?) {
            self.name = name
            self.kernel = kernel
            self.commandLine = commandLine
        }
    }

    /// A stack configuration: `L1.kernel`, `L1.cmdline` … of every layer, `qemu` (the QEMU
    /// version from the QMP greeting), and `kernel`: the release when every layer runs the same
    /// one, else `L0 a, L1 b, L2 b`. All scoped to the configuration. A layer whose kernel is not
    /// known leaves `kernel` out (it would be a different kernel set, not this one).
    public static func stack(configuration: String, layers: [Layer], qemuVersion: String?) -> [String: String] {
        var tags: [String: String] = [:]
        func set(_ key: String, _ value: String?) {
            if let value, !value.isEmpty { tags[RunTags.scoped(key, configuration: configuration)] = value }
        }
        for layer in layers {
            set("\(layer.name).kernel", layer.kernel)
            set("\(layer.name).cmdline", layer.commandLine)
        }
        set("qemu", qemuVersion)
        let releases = layers.compactMap(\.kernel)
        if !layers.isEmpty && releases.count == layers.count {
            set(
                "kernel",
                Set(releases).count == 1 ? releases[0] : layers.map { "\($0.name) \($0.kernel!)" }.joined(separator: ", "))
        }
        return tags
    }
}
