import Foundation

/// Kernel-log lines that make a run suspect: an oops, a BUG, a WARNING, an OOM kill, a hung task,
/// an RCU stall, a KVM error. Pure: classifies text from any layer (this machine's /dev/kmsg, a
/// guest's console log).
public enum KernelLog {
    /// (kind, substring that identifies it), checked in order.
    static let patterns: [(kind: String, needle: String)] = [
        ("oops", "Oops:"), ("oops", "Oops "), ("bug", "BUG:"), ("bug", "kernel BUG"), ("warning", "WARNING:"),
        ("oom-kill", "Out of memory:"), ("oom-kill", "oom-kill:"), ("oom-kill", "invoked oom-killer"),
        ("hung-task", "blocked for more than"), ("hung-task", "hung_task"), ("rcu-stall", "rcu_sched self-detected stall"),
        ("rcu-stall", "rcu: INFO: rcu_"), ("rcu-stall", "RCU Stall"), ("kvm-error", "kvm: vcpu"),
        ("kvm-error", "KVM: entry failed"), ("kvm-error", "KVM internal error"), ("kvm-error", "kvm_amd: "),
        ("kvm-error", "kvm_intel: "), ("panic", "Kernel panic"), ("soft-lockup", "soft lockup"),
        ("hard-lockup", "hard LOCKUP"), ("segfault", "general protection fault"),
    ]

    /// One finding: its kind and the line.
    public struct Finding: Sendable, Hashable, Codable {
        public var kind: String
        public var line: String
    }

    /// The findings in `text` (one per matching line, at most `limit`).
    public static func findings(in text: String, limit: Int = 20) -> [Finding] {
        var result: [Finding] = []
        for raw in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let line = String(raw)
            // kvm_amd/kvm_intel module loading chatter is not an error.
            if let p = patterns.first(where: { line.contains($0.needle) }) {
                if p.kind == "kvm-error", !line.lowercased().contains("error"), !line.contains("failed"),
                    !line.contains("vcpu")
                {
                    continue
                }
                result.append(Finding(kind: p.kind, line: line.trimmingCharacters(in: .whitespaces)))
                if result.count >= limit { break }
            }
        }
        return result
    }

    /// The message of a `/dev/kmsg` record ("6,1234,5678901,-;text" → "text").
    public static func kmsgMessage(_ record: String) -> String {
        guard let semi = record.firstIndex(of: ";") else { return record }
        let body = record[record.index(after: semi)...]
        // Continuation lines (" KEY=value") follow a newline; keep the first line.
        return String(body.split(separator: "\n", maxSplits: 1).first ?? "")
    }

    /// One provenance value summarizing findings: "warning: WARNING: …; oom-kill: …".
    public static func summary(_ findings: [Finding]) -> String {
        findings.map { "\($0.kind): \($0.line)" }.joined(separator: " | ")
    }
}

/// Reads this machine's kernel log from the moment it is opened: opened before a run, `drain()`
/// after it returns what the kernel logged meanwhile. Unreadable /dev/kmsg (not root, no such
/// device) is said by `unavailableReason`.
public final class KernelLogWatch: @unchecked Sendable {
    private var fd: Int32 = -1
    public let unavailableReason: String?

    public init(path: String = "/dev/kmsg") {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            unavailableReason = "cannot read \(path): \(String(cString: strerror(errno)))"
            return
        }
        // Start at the end: only what is logged from now on.
        lseek(fd, 0, SEEK_END)
        self.fd = fd
        unavailableReason = nil
    }

    deinit { if fd >= 0 { close(fd) } }

    /// The messages logged since `init` (or the last drain).
    public func drain() -> [String] {
        guard fd >= 0 else { return [] }
        var messages: [String] = []
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 8192) }
            if n > 0 {
                messages.append(KernelLog.kmsgMessage(String(decoding: buffer[0..<n], as: UTF8.self)))
                continue
            }
            // EPIPE: records were overwritten before we read them; keep reading the rest.
            if n < 0 && errno == EPIPE { continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        return messages
    }
}
