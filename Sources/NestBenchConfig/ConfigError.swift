/// One problem found in an experiment file.
public struct ConfigProblem: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    /// Dotted key path, e.g. `configurations.thp-always.host.thp.enabled`.
    public var keyPath: String
    public var line: Int?
    public var column: Int?
    public var message: String

    public init(file: String, keyPath: String, line: Int?, column: Int?, message: String) {
        self.file = file
        self.keyPath = keyPath
        self.line = line
        self.column = column
        self.message = message
    }

    /// `FILE:LINE:COL: KEY: message` — one line, as compilers print it.
    public var description: String {
        var location = file
        if let line { location += ":\(line)" }
        if let column { location += ":\(column)" }
        let key = keyPath.isEmpty ? "" : "\(keyPath): "
        return "\(location): \(key)\(message)"
    }
}

/// Everything wrong with an experiment file, reported at once.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var problems: [ConfigProblem]

    public init(problems: [ConfigProblem]) {
        self.problems = problems
    }

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}
