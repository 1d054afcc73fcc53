/// One line of `/proc/PID/maps`.
public struct Mapping: Sendable, Hashable {
    public var start: UInt64
    public var end: UInt64
    /// `rwxp` / `rw-s`.
    public var permissions: String
    public var inode: UInt64
    /// The pathname column: empty for anonymous memory, `[heap]`, `[stack]`, a file, `/anon_hugepage (deleted)`.
    public var path: String

    public init(start: UInt64, end: UInt64, permissions: String, inode: UInt64, path: String) {
        self.start = start
        self.end = end
        self.permissions = permissions
        self.inode = inode
        self.path = path
    }

    public var isPrivate: Bool { permissions.hasSuffix("p") }
    public var isAccessible: Bool { permissions.hasPrefix("r") || permissions.dropFirst().hasPrefix("w") }
    /// MAP_ANONYMOUS|MAP_HUGETLB memory shows up as a deleted file on the internal hugetlbfs mount.
    public var isAnonymousHugetlb: Bool { path.hasPrefix("/anon_hugepage") }

    /// Private anonymous memory the probe tests: the heap, unnamed or `[anon:…]`-named anonymous
    /// mappings and anonymous hugetlb; not stacks, vDSO, file mappings or shared memory.
    public var isProbed: Bool {
        guard isPrivate, isAccessible else { return false }
        if isAnonymousHugetlb { return true }
        guard inode == 0 else { return false }
        return path.isEmpty || path == "[heap]" || path.hasPrefix("[anon:")
    }

    /// The whole 2 MiB-aligned regions inside the mapping (a partial region can never be one huge page).
    public var hugeAlignedRange: Range<UInt64> {
        let size = PageGeometry.hugeSize
        let first = (start + size - 1) / size * size
        let last = end / size * size
        return first < last ? first..<last : first..<first
    }
}

public struct MapsParseError: Error, Sendable, CustomStringConvertible {
    public var line: Int
    public var text: String
    public var description: String { "line \(line) is not a maps line: \"\(text)\"" }
}

/// `/proc/PID/maps` → mappings.
public enum MapsParser {
    public static func parse(_ text: String) throws(MapsParseError) -> [Mapping] {
        var result: [Mapping] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            // start-end perms offset dev inode [path]; the path may contain spaces.
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5 else { throw MapsParseError(line: index + 1, text: String(line)) }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16),
                start <= end, fields[1].count == 4, let inode = UInt64(fields[4])
            else { throw MapsParseError(line: index + 1, text: String(line)) }
            let path = fields.count > 5 ? String(fields[5]).trimmingLeadingSpaces() : ""
            result.append(Mapping(start: start, end: end, permissions: String(fields[1]), inode: inode, path: path))
        }
        return result
    }
}

extension String {
    fileprivate func trimmingLeadingSpaces() -> String {
        String(drop(while: { $0 == " " }))
    }
}
