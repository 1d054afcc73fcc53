import Foundation

/// Errors talking QMP; each names the socket and what went wrong.
public struct QMPError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A line-oriented QMP connection (one JSON object per line).
public protocol QMPTransport: Sendable {
    func send(_ line: String) throws(QMPError)
    /// The next line, or nil at the end of the stream.
    func receiveLine() throws(QMPError) -> String?
}

/// A vCPU as `query-cpus-fast` reports it.
public struct VCPUThread: Sendable, Hashable {
    public var cpuIndex: Int
    public var threadID: Int32

    public init(cpuIndex: Int, threadID: Int32) {
        self.cpuIndex = cpuIndex
        self.threadID = threadID
    }
}

/// A small QMP client: greeting, `qmp_capabilities`, commands; asynchronous events (`"event"`
/// lines) are skipped (and kept) while waiting for a `return` or `error`.
public final class QMPClient: Sendable {
    let transport: any QMPTransport
    public let name: String

    public init(transport: any QMPTransport, name: String) {
        self.transport = transport
        self.name = name
    }

    /// Reads the greeting and negotiates capabilities. Returns the QEMU version from the greeting.
    @discardableResult
    public func handshake() throws(QMPError) -> String {
        guard let line = try transport.receiveLine() else { throw QMPError("\(name): QMP closed before its greeting") }
        guard let greeting = Self.object(line), let qmp = greeting["QMP"] as? [String: Any] else {
            throw QMPError("\(name): expected the QMP greeting, got \(line.prefix(200))")
        }
        var version = "?"
        if let v = (qmp["version"] as? [String: Any])?["qemu"] as? [String: Any],
            let major = v["major"] as? Int, let minor = v["minor"] as? Int, let micro = v["micro"] as? Int
        {
            version = "\(major).\(minor).\(micro)"
        }
        _ = try execute("qmp_capabilities")
        return version
    }

    /// Runs a command; returns its `return` value. A QMP `error` is thrown with its description.
    public func execute(_ command: String, arguments: [String: any Sendable]? = nil) throws(QMPError) -> Any {
        var request: [String: Any] = ["execute": command]
        if let arguments { request["arguments"] = arguments }
        guard let data = try? JSONSerialization.data(withJSONObject: request, options: [.sortedKeys]) else {
            throw QMPError("\(name): cannot encode \(command)")
        }
        try transport.send(String(decoding: data, as: UTF8.self))
        while true {
            guard let line = try transport.receiveLine() else {
                throw QMPError("\(name): QMP closed while waiting for the reply to \(command)")
            }
            guard let object = Self.object(line) else { throw QMPError("\(name): not JSON: \(line.prefix(200))") }
            if object["event"] != nil { continue }
            if let error = object["error"] as? [String: Any] {
                throw QMPError("\(name): \(command) failed: \(error["desc"] as? String ?? "\(error)")")
            }
            if let value = object["return"] { return value }
            throw QMPError("\(name): unexpected reply to \(command): \(line.prefix(200))")
        }
    }

    /// `query-cpus-fast`: each vCPU's host thread.
    public func vcpuThreads() throws(QMPError) -> [VCPUThread] {
        guard let list = try execute("query-cpus-fast") as? [[String: Any]] else {
            throw QMPError("\(name): query-cpus-fast did not return a list")
        }
        var result: [VCPUThread] = []
        for entry in list {
            guard let index = entry["cpu-index"] as? Int, let tid = entry["thread-id"] as? Int else {
                throw QMPError("\(name): query-cpus-fast entry without cpu-index/thread-id")
            }
            result.append(VCPUThread(cpuIndex: index, threadID: Int32(tid)))
        }
        return result.sorted { $0.cpuIndex < $1.cpuIndex }
    }

    static func object(_ line: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }
}

/// QMP over a unix socket.
public final class UnixSocketTransport: QMPTransport, @unchecked Sendable {
    private let fd: Int32
    private var buffer: [UInt8] = []
    private let lock = NSLock()
    public let path: String

    /// Connects, retrying until `timeout` (QEMU creates the socket shortly after it starts).
    public init(path: String, timeout: Double = 10) throws(QMPError) {
        self.path = path
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw QMPError("\(path): QMP socket path too long (over 107 bytes)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while true {
            let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard s >= 0 else { throw QMPError("\(path): socket: \(String(cString: strerror(errno)))") }
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if rc == 0 {
                fd = s
                var tv = timeval(tv_sec: 30, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                return
            }
            let e = errno
            close(s)
            if ContinuousClock.now > deadline {
                throw QMPError("\(path): cannot connect to QMP (\(String(cString: strerror(e))))")
            }
            usleep(50_000)
        }
    }

    deinit { close(fd) }

    public func send(_ line: String) throws(QMPError) {
        let bytes = Array((line + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw QMPError("\(path): write: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
    }

    public func receiveLine() throws(QMPError) -> String? {
        lock.lock()
        defer { lock.unlock() }
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return buffer.isEmpty ? nil : String(decoding: buffer, as: UTF8.self) }
            if n < 0 {
                if errno == EINTR { continue }
                throw QMPError("\(path): read: \(String(cString: strerror(errno)))")
            }
            buffer += chunk[..<n]
        }
    }
}
