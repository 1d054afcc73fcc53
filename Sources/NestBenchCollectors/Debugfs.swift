import Foundation
import NestBenchProcess

/// debugfs at /sys/kernel/debug (extfrag/unusable_index, tracing/): mounted only for as long as
/// needed and only if it was not mounted; unmounted only if we mounted it (also on Ctrl-C).
public enum Debugfs {
    public static let path = "/sys/kernel/debug"

    /// Whether a debugfs is mounted at `path` (from /proc/self/mounts).
    public static func isMounted(at path: String = path, mounts: String? = KernelFile.read("/proc/self/mounts")) -> Bool {
        guard let mounts else { return false }
        return mounts.split(separator: "\n").contains { line in
            let f = line.split(separator: " ")
            return f.count >= 3 && f[1] == path && f[2] == "debugfs"
        }
    }

    /// Runs `body` with debugfs mounted, mounting it first when needed (root only).
    public static func withMounted<R>(_ body: (String) throws -> R) throws -> R {
        if isMounted() { return try body(path) }
        guard mount("debugfs", path, "debugfs", 0, nil) == 0 else {
            let e = errno
            throw ProcfsError(
                path: path,
                message:
                    "debugfs is not mounted and mounting it failed (\(String(cString: strerror(e))))"
                    + (geteuid() == 0 ? "" : "; run as root or mount it: mount -t debugfs none \(path)"))
        }
        let token = CleanupRegistry.shared.register { _ = umount2(path, 0) }
        defer {
            // tracefs is auto-mounted under debugfs/tracing on first access: detach it with us.
            _ = umount2(path + "/tracing", 0)
            if umount2(path, 0) != 0 { _ = umount2(path, Int32(MNT_DETACH)) }
            CleanupRegistry.shared.unregister(token)
        }
        return try body(path)
    }
}

/// Tracepoints counted through perf (type PERF_TYPE_TRACEPOINT, config = the tracefs event id).
public enum Tracepoint {
    /// Encodes `subsystem:name` (e.g. `tlb:tlb_flush`): through libpfm when it knows the
    /// tracepoint (debugfs was mounted when it initialized), else from the tracefs id file.
    public static func encode(_ name: String) throws -> EncodedEvent {
        if let event = try? Perfmon.encode("perf::\(name)") { return event }
        let parts = name.split(separator: ":")
        guard parts.count == 2 else { throw PerfError(.encoding, "\"\(name)\" is not subsystem:tracepoint") }
        let relative = "events/\(parts[0])/\(parts[1])/id"
        if let text = KernelFile.read("/sys/kernel/tracing/\(relative)"), let id = UInt64(text.trimmed) {
            return event(name, id: id, file: "/sys/kernel/tracing/\(relative)")
        }
        return try Debugfs.withMounted { debugfs in
            let file = "\(debugfs)/tracing/\(relative)"
            guard let text = KernelFile.read(file), let id = UInt64(text.trimmed) else {
                throw ProcfsError(path: file, message: "no such tracepoint (is the kernel built with it?)")
            }
            return event(name, id: id, file: file)
        }
    }

    static func event(_ name: String, id: UInt64, file: String) -> EncodedEvent {
        EncodedEvent(name: name, fullName: "tracepoint \(name) (id from \(file))", type: EncodedEvent.typeTracepoint, config: id)
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
