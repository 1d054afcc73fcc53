import Foundation

/// Who holds a lock: written into the lock file by its holder.
public struct LockHolder: Codable, Sendable, Hashable, CustomStringConvertible {
    public var pid: Int32
    public var host: String
    /// The experiment run it measures, once known.
    public var run: String?
    public var since: Date

    public init(pid: Int32 = getpid(), host: String = ProcessInfo.processInfo.hostName, run: String? = nil, since: Date = Date())
    {
        self.pid = pid
        self.host = host
        self.run = run
        self.since = since
    }

    public var description: String {
        "pid \(pid) on \(host)\(run.map { ", experiment run \($0)" } ?? ""), since \(ISO8601DateFormatter().string(from: since))"
    }
}

/// Why a lock was not taken.
public struct LockError: Error, Sendable, CustomStringConvertible {
    public var path: String
    /// The holder, as its lock file says (nil: it has not written itself in yet, or is unreadable).
    public var holder: LockHolder?
    /// Set when the lock file itself could not be opened.
    public var failure: String?

    public var description: String {
        if let failure { return "\(path): cannot take the lock: \(failure)" }
        return "\(path): held by " + (holder?.description ?? "another process (it has not written its name yet)")
    }
}

/// An exclusive advisory lock on a file (`flock(2)`): taken atomically, held while the process
/// keeps the descriptor open, released by the kernel when it exits however it exits (kill -9
/// included), never inherited by workloads (close-on-exec). The holder writes who it is into the
/// file, so a refused process can say who holds it.
public final class FileLock: @unchecked Sendable {
    public let path: String
    private let fd: Int32
    private let lock = NSLock()
    private var holder: LockHolder

    private init(path: String, fd: Int32, holder: LockHolder) {
        self.path = path
        self.fd = fd
        self.holder = holder
    }

    deinit { close(fd) }

    /// Takes the lock or says who holds it; never blocks.
    public static func tryAcquire(_ path: String, holder: LockHolder = LockHolder()) throws(LockError) -> FileLock {
        try? FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        var fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o666)
        if fd >= 0 {
            // Any user may take the machine lock later: the file stays writable for all.
            fchmod(fd, 0o666)
        } else if errno == EACCES {
            // Created by another user without write access for us: locking needs only reading.
            fd = open(path, O_RDONLY | O_CLOEXEC)
        }
        guard fd >= 0 else {
            throw LockError(path: path, holder: nil, failure: String(cString: strerror(errno)))
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let why = errno
            close(fd)
            if why == EWOULDBLOCK { throw LockError(path: path, holder: Self.holder(of: path), failure: nil) }
            throw LockError(path: path, holder: nil, failure: String(cString: strerror(why)))
        }
        let taken = FileLock(path: path, fd: fd, holder: holder)
        taken.write()
        return taken
    }

    /// Who holds the lock at `path`, as its file says.
    public static func holder(of path: String) -> LockHolder? {
        guard let data = FileManager.default.contents(atPath: path), !data.isEmpty else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try? decoder.decode(LockHolder.self, from: data)
    }

    /// Records the experiment run now measured under the lock.
    public func note(run: String) {
        lock.withLock { holder.run = run }
        write()
    }

    private func write() {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(lock.withLock { holder }) else { return }
        ftruncate(fd, 0)
        _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Releases the lock now (also released when the process exits).
    public func release() {
        ftruncate(fd, 0)
        flock(fd, LOCK_UN)
    }
}

/// The two locks of a measurement: one writer per result store, one measurement per machine.
public enum Locks {
    /// Beside the SQLite file: `<results>/nestbench.sqlite.lock`.
    public static func storeLockPath(database: String) -> String { database + ".lock" }

    /// The machine-wide lock: a fixed path outside any state directory, so nestbench runs with
    /// different `NESTBENCH_STATE_DIR`s or result directories still exclude each other:
    /// `/run/lock/nestbench-machine.lock` (tmpfs, world-writable and sticky on Debian; gone
    /// after a reboot, as the lock is). `NESTBENCH_MACHINE_LOCK` overrides it (test suites
    /// that run experiments in parallel give each its own).
    public static var machineLockPath: String {
        if let path = ProcessInfo.processInfo.environment["NESTBENCH_MACHINE_LOCK"], !path.isEmpty { return path }
        return defaultMachineLockPath
    }

    public static let defaultMachineLockPath = "/run/lock/nestbench-machine.lock"
}
