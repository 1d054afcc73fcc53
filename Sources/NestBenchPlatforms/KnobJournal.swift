import Foundation
import NestBenchModel

/// Errors changing the machine; each names the file and what to do.
public struct PlatformError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case needsRoot, missingKnob, rejectedValue, journal, busy, vm
    }
    public var code: Code
    public var message: String
    public var hint: String?

    public init(_ code: Code, _ message: String, hint: String? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
    }

    public var description: String { hint.map { "\(message); \($0)" } ?? message }
}

/// The original value of every knob NestBench changed and not yet restored, kept in a file
/// that is written (and fsync'ed) before each change. A later invocation restores what a killed
/// one left behind.
public struct KnobJournal: Sendable {
    public struct Entry: Codable, Sendable, Hashable {
        public var path: String
        public var original: String
    }

    struct Contents: Codable {
        var ownerPID: Int32
        var ownerStart: UInt64?
        var entries: [Entry]
        /// Process groups of helpers (fragmenters) to kill if the owner died.
        var processGroups: [Int32]?
        /// Experiment runs the owner has in progress: a later invocation marks them `killed`
        /// when the owner died.
        var experiments: [ActiveExperiment]?

        var isEmpty: Bool { entries.isEmpty && (processGroups ?? []).isEmpty && (experiments ?? []).isEmpty }
    }

    /// An experiment run in progress: its id and the result store it is recorded in.
    public struct ActiveExperiment: Codable, Sendable, Hashable {
        public var runID: String
        public var store: String
        public var ownerPID: Int32

        public init(runID: String, store: String, ownerPID: Int32) {
            self.runID = runID
            self.store = store
            self.ownerPID = ownerPID
        }
    }

    public let path: String

    /// `$NESTBENCH_STATE_DIR/knob-journal.json`, default /var/lib/nestbench as root, else ~/.cache/nestbench.
    public static func defaultPath() -> String {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["NESTBENCH_STATE_DIR"], !dir.isEmpty { return dir + "/knob-journal.json" }
        if getuid() == 0 { return "/var/lib/nestbench/knob-journal.json" }
        return (env["HOME"] ?? "/tmp") + "/.cache/nestbench/knob-journal.json"
    }

    public init(path: String = KnobJournal.defaultPath()) {
        self.path = path
    }

    func load() throws(PlatformError) -> Contents? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PlatformError(.journal, "\(path): cannot read the knob journal")
        }
        do {
            return try JSONDecoder().decode(Contents.self, from: data)
        } catch {
            throw PlatformError(
                .journal, "\(path): the knob journal is corrupt (\(error))",
                hint: "restore the THP knobs by hand and delete the file")
        }
    }

    func save(_ contents: Contents?) throws(PlatformError) {
        guard let contents, !contents.isEmpty else {
            try? FileManager.default.removeItem(atPath: path)
            return
        }
        do {
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let data = try JSONEncoder().encode(contents)
            let tmp = path + ".tmp"
            guard FileManager.default.createFile(atPath: tmp, contents: data) else {
                throw PlatformError(.journal, "\(tmp): cannot write the knob journal")
            }
            let fd = open(tmp, O_RDONLY)
            if fd >= 0 {
                fsync(fd)
                close(fd)
            }
            guard rename(tmp, path) == 0 else {
                throw PlatformError(.journal, "\(path): cannot replace the knob journal: \(String(cString: strerror(errno)))")
            }
        } catch let error as PlatformError {
            throw error
        } catch {
            throw PlatformError(.journal, "\(path): cannot write the knob journal: \(error)")
        }
    }

    /// Start time of a process (field 22 of /proc/PID/stat), to tell a live owner from a reused pid.
    static func startTime(of pid: Int32) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    static var selfContents: Contents {
        Contents(ownerPID: getpid(), ownerStart: startTime(of: getpid()), entries: [], processGroups: [])
    }

    /// Whether the journal belongs to another live nestbench.
    func ownedByOther(_ c: Contents) -> Bool {
        c.ownerPID != getpid() && Self.startTime(of: c.ownerPID) != nil && Self.startTime(of: c.ownerPID) == c.ownerStart
    }

    /// Records the original value of `path` unless already recorded.
    public func record(path knob: String, original: String) throws(PlatformError) {
        var contents = try load() ?? Self.selfContents
        if ownedByOther(contents) {
            throw PlatformError(
                .busy, "another nestbench (pid \(contents.ownerPID)) is changing this machine's knobs",
                hint: "wait for it to finish or stop it")
        }
        contents.ownerPID = getpid()
        contents.ownerStart = Self.startTime(of: getpid())
        guard !contents.entries.contains(where: { $0.path == knob }) else { return }
        contents.entries.append(Entry(path: knob, original: original))
        try save(contents)
    }

    /// Records a helper's process group, killed by `recover()` if we die.
    public func recordProcessGroup(_ pgid: Int32) throws(PlatformError) {
        var contents = try load() ?? Self.selfContents
        contents.ownerPID = getpid()
        contents.ownerStart = Self.startTime(of: getpid())
        contents.processGroups = (contents.processGroups ?? []) + [pgid]
        try save(contents)
    }

    public func forgetProcessGroup(_ pgid: Int32) throws(PlatformError) {
        guard var contents = try load() else { return }
        contents.processGroups = (contents.processGroups ?? []).filter { $0 != pgid }
        try save(contents)
    }

    /// Records that this process runs experiment run `id` stored in `store`.
    public func beginExperiment(_ id: String, store: String) throws(PlatformError) {
        var contents = try load() ?? Self.selfContents
        if ownedByOther(contents) {
            throw PlatformError(
                .busy, "another nestbench (pid \(contents.ownerPID)) is changing this machine's knobs",
                hint: "wait for it to finish or stop it")
        }
        contents.ownerPID = getpid()
        contents.ownerStart = Self.startTime(of: getpid())
        contents.experiments =
            (contents.experiments ?? []).filter { $0.runID != id }
            + [ActiveExperiment(runID: id, store: store, ownerPID: getpid())]
        try save(contents)
    }

    public func endExperiment(_ id: String) throws(PlatformError) {
        guard var contents = try load() else { return }
        contents.experiments = (contents.experiments ?? []).filter { $0.runID != id }
        try save(contents)
    }

    /// The experiment runs a dead owner left in progress (to be marked `killed` in their
    /// stores before `recover()` forgets them); empty while the owner lives.
    public func orphanedExperiments() throws(PlatformError) -> [ActiveExperiment] {
        guard let contents = try load(), !ownedByOther(contents), contents.ownerPID != getpid() else { return [] }
        return contents.experiments ?? []
    }

    public func forget(path knob: String) throws(PlatformError) {
        guard var contents = try load() else { return }
        contents.entries.removeAll { $0.path == knob }
        try save(contents)
    }

    /// The recorded originals, oldest first.
    public func entries() throws(PlatformError) -> [Entry] { try load()?.entries ?? [] }

    /// Restores what a dead nestbench left: kills its helper process groups and writes back every
    /// original knob value. Returns what was restored. Refuses if the owner is still alive.
    @discardableResult
    public func recover() throws(PlatformError) -> [Entry] {
        guard let contents = try load() else { return [] }
        if ownedByOther(contents) {
            throw PlatformError(
                .busy, "another nestbench (pid \(contents.ownerPID)) is running on this machine",
                hint: "wait for it to finish or stop it")
        }
        for pgid in contents.processGroups ?? [] where pgid > 1 { kill(-pgid, SIGKILL) }
        var remaining: [Entry] = []
        var restored: [Entry] = []
        for entry in contents.entries.reversed() {
            if KnobWriter.write(entry.original, to: entry.path) == nil {
                restored.append(entry)
            } else {
                remaining.append(entry)
            }
        }
        var left = contents
        left.entries = remaining.reversed()
        left.processGroups = []
        if contents.ownerPID != getpid() { left.experiments = [] }
        try save(left)
        if !remaining.isEmpty {
            throw PlatformError(
                .journal, "could not restore \(remaining.map(\.path).joined(separator: ", ")) from \(path)",
                hint: "run nestbench restore as root")
        }
        return restored
    }
}

/// Writes kernel knobs.
public enum KnobWriter {
    /// Writes `value` to `path`; nil on success, else errno.
    public static func write(_ value: String, to path: String) -> Int32? {
        // O_TRUNC is a no-op on sysfs/procfs and keeps plain files (tests, other kernels' stand-ins) exact.
        let fd = open(path, O_WRONLY | O_TRUNC)
        if fd < 0 { return errno }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        let n = bytes.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, $0.count) }
        return n == bytes.count ? nil : (n < 0 ? errno : EIO)
    }

    /// The current value: the `[selected]` choice for THP files, else the trimmed text.
    public static func read(_ path: String) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.readToEnd() else { return nil }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if let open = text.firstIndex(of: "["), let close = text[open...].firstIndex(of: "]") {
            return String(text[text.index(after: open)..<close])
        }
        return text
    }
}
