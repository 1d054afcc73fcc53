import Foundation

/// Errors reading kernel files; each names the file.
public struct ProcfsError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}

/// Reading small kernel text files.
public enum KernelFile {
    /// The file's text, or nil if it cannot be read.
    public static func read(_ path: String) -> String? {
        // procfs/sysfs files report size 0: read them as a stream, not by stat size.
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.readToEnd() else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    public static func require(_ path: String) throws(ProcfsError) -> String {
        guard let text = read(path) else { throw ProcfsError(path: path, message: "cannot read") }
        return text
    }

    /// The selected value of a `[bracketed]` sysfs choice (`always [madvise] never` → `madvise`),
    /// or the trimmed text for plain values.
    public static func selectedValue(_ text: String) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if let open = trimmed.firstIndex(of: "["), let close = trimmed[open...].firstIndex(of: "]") {
            return String(trimmed[trimmed.index(after: open)..<close])
        }
        return trimmed
    }
}

/// `/proc/vmstat` and `/proc/meminfo` style "name value" files.
public enum KeyValueFile {
    /// `/proc/vmstat`: `name value` per line.
    public static func vmstat(_ text: String) -> [String: Int64] {
        var result: [String: Int64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count == 2, let v = Int64(parts[1]) { result[String(parts[0])] = v }
        }
        return result
    }

    /// `/proc/meminfo` and `smaps_rollup`: `Name:   value kB` per line → bytes (values without a
    /// unit are kept as they are, e.g. HugePages_Total).
    public static func meminfo(_ text: String) -> [String: Int64] {
        var result: [String: Int64] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces)
            let rest = line[line.index(after: colon)...].split(separator: " ", omittingEmptySubsequences: true)
            guard let first = rest.first, let v = Int64(first) else { continue }
            let isKB = rest.count > 1 && rest[1] == "kB"
            result[name] = isKB ? v * 1024 : v
        }
        return result
    }
}

/// The THP counters of /proc/vmstat a run records as deltas.
public enum THPCounters {
    public static let names = [
        "thp_fault_alloc", "thp_fault_fallback", "thp_fault_fallback_charge", "thp_collapse_alloc",
        "thp_collapse_alloc_failed", "thp_split_page", "thp_split_pmd", "thp_zero_page_alloc",
        "compact_stall", "compact_fail", "compact_success", "compact_migrate_scanned",
        "compact_free_scanned", "compact_isolated", "pgfault", "pgmajfault",
    ]

    /// The counters of interest from a vmstat snapshot (only those this kernel has).
    public static func pick(_ vmstat: [String: Int64]) -> [String: Int64] {
        vmstat.filter { names.contains($0.key) }
    }

    /// after − before, per counter present in both.
    public static func delta(before: [String: Int64], after: [String: Int64]) -> [String: Int64] {
        var result: [String: Int64] = [:]
        for (name, a) in after { if let b = before[name] { result[name] = a - b } }
        return result
    }
}
