import Foundation
import Logging
import NestBenchModel

/// The `local` platform: this machine's own kernel is the only layer.
///
/// `activate` puts the machine into a configuration's state: knobs it sets are written (original
/// values journaled first); knobs an earlier configuration changed but this one does not set go
/// back to their original values. `restoreAll` undoes everything.
public final class LocalPlatform: @unchecked Sendable {
    public let journal: KnobJournal
    private let logger: Logger
    private let lock = NSLock()
    /// Knobs changed by us, path → original value.
    private var originals: [String: String] = [:]
    private var order: [String] = []

    public init(journal: KnobJournal = KnobJournal(), logger: Logger) {
        self.journal = journal
        self.logger = logger
    }

    /// Checks, without changing anything, that every knob of every configuration exists and
    /// can be written; returns one problem per knob.
    public static func preflight(_ configurations: [Configuration], isRoot: Bool = getuid() == 0) -> [String] {
        var problems: [String] = []
        var seen: Set<String> = []
        for configuration in configurations {
            // A qemu configuration's host knobs are `host:` and, when L0 is this machine, L0's.
            let at = "configurations.\(configuration.name)." + (configuration.platform == .local ? "host" : "host/layers.L0")
            for knob in configuration.host.knobs where seen.insert(knob.path).inserted {
                if !FileManager.default.fileExists(atPath: knob.path) {
                    problems.append("\(at): this kernel has no \(knob.path) (the knob cannot be set here)")
                } else if !FileManager.default.isWritableFile(atPath: knob.path) || !isRoot {
                    problems.append("\(at): writing \(knob.path) needs root; run nestbench as root or remove the knob")
                }
            }
        }
        return problems
    }

    /// Applies a configuration's host layer. Returns each knob's value as read back.
    @discardableResult
    public func activate(_ configuration: Configuration) throws(PlatformError) -> [String: String] {
        lock.lock()
        defer { lock.unlock() }
        let desired = configuration.host.knobs
        let desiredPaths = Set(desired.map(\.path))
        // Knobs a previous configuration changed that this one leaves alone go back first.
        for path in order.reversed() where !desiredPaths.contains(path) {
            if let original = originals[path], KnobWriter.read(path) != original {
                try write(original, to: path)
            }
        }
        let readBack = try applyLocked(desired, owner: "configuration \(configuration.name)")
        logger.info("configuration applied", metadata: ["configuration": "\(configuration.name)"])
        return readBack
    }

    /// Sets extra knobs for the current run (e.g. a condition's sysctls), journaled like a
    /// configuration's; the next `activate` or `restoreAll` puts them back.
    @discardableResult
    public func apply(_ knobs: [Knob], owner: String) throws(PlatformError) -> [String: String] {
        lock.lock()
        defer { lock.unlock() }
        return try applyLocked(knobs, owner: owner)
    }

    private func applyLocked(_ knobs: [Knob], owner: String) throws(PlatformError) -> [String: String] {
        var readBack: [String: String] = [:]
        for knob in knobs {
            guard let current = KnobWriter.read(knob.path) else {
                throw PlatformError(.missingKnob, "\(knob.path): this kernel has no such knob", hint: "remove it from \(owner)")
            }
            if originals[knob.path] == nil && current != knob.value {
                try journal.record(path: knob.path, original: current)
                originals[knob.path] = current
                order.append(knob.path)
            }
            if current != knob.value { try write(knob.value, to: knob.path) }
            let after = KnobWriter.read(knob.path) ?? "?"
            if after != knob.value {
                throw PlatformError(.rejectedValue, "\(knob.path): wrote \"\(knob.value)\" but the kernel reports \"\(after)\"")
            }
            readBack[knob.path] = after
        }
        return readBack
    }

    private func write(_ value: String, to path: String) throws(PlatformError) {
        if let err = KnobWriter.write(value, to: path) {
            switch err {
            case EACCES, EPERM:
                throw PlatformError(
                    .needsRoot, "\(path): permission denied writing \"\(value)\"",
                    hint: "run nestbench as root")
            case ENOENT:
                throw PlatformError(.missingKnob, "\(path): this kernel has no such knob")
            default:
                throw PlatformError(
                    .rejectedValue,
                    "\(path): the kernel rejected \"\(value)\" (\(String(cString: strerror(err))))")
            }
        }
        logger.debug("knob written", metadata: ["knob.path": "\(path)", "knob.value": "\(value)"])
    }

    /// Writes back every original value (newest change first) and clears the journal.
    /// Keeps going past failures and reports them together.
    public func restoreAll() throws(PlatformError) {
        lock.lock()
        defer { lock.unlock() }
        var failures: [String] = []
        for path in order.reversed() {
            guard let original = originals[path] else { continue }
            if KnobWriter.read(path) != original, let err = KnobWriter.write(original, to: path) {
                failures.append("\(path) (\(String(cString: strerror(err))))")
                continue
            }
            try? journal.forget(path: path)
            originals[path] = nil
        }
        order.removeAll { originals[$0] == nil }
        if !failures.isEmpty {
            throw PlatformError(
                .journal, "could not restore \(failures.joined(separator: ", "))",
                hint: "the originals stay in \(journal.path); run nestbench restore")
        }
    }

    /// Whether anything is changed right now.
    public var hasChanges: Bool {
        lock.lock()
        defer { lock.unlock() }
        return !originals.isEmpty
    }
}

/// Restore failures of cleanup paths that cannot throw (signal handlers, error paths that rethrow
/// the first error): recorded here so the command reports them and exits non-zero.
public enum RestoreFailures {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var messages: [String] = []

    public static func record(_ message: String) { lock.withLock { messages.append(message) } }

    /// Every failure recorded so far in this process.
    public static var all: [String] { lock.withLock { messages } }
}
