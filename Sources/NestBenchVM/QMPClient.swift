import CProcess
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
    /// Sends a line with a file descriptor attached (SCM_RIGHTS), for `getfd`.
    func send(_ line: String, passing fd: Int32) throws(QMPError)
}

extension QMPTransport {
    public func send(_ line: String, passing fd: Int32) throws(QMPError) {
        throw QMPError("this QMP transport cannot pass file descriptors")
    }
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

/// QMP messages as Codable values (QEMU's docs/interop/qmp-spec).
public enum QMPMessage {
    /// `{"execute": …, "arguments": …}`; `arguments` is left out when nil.
    struct Request<Arguments: Encodable>: Encodable {
        var execute: String
        var arguments: Arguments?
    }

    /// A command without arguments.
    struct NoArguments: Encodable {}

    /// Any `return` value whose content the caller does not use (QMP's `{}` and the like).
    public struct Ignored: Decodable, Sendable {
        public init(from decoder: any Decoder) throws {}
    }

    /// `{"QMP": {"version": {"qemu": {"major", "minor", "micro"}, "package"}, "capabilities"}}`.
    struct Greeting: Decodable {
        struct Body: Decodable {
            struct Version: Decodable {
                struct Qemu: Decodable {
                    var major: Int
                    var minor: Int
                    var micro: Int
                }
                var qemu: Qemu
            }
            var version: Version?
        }
        var QMP: Body
    }

    /// `{"class": …, "desc": …}` of an error reply.
    struct ErrorBody: Decodable {
        var `class`: String?
        var desc: String?
    }

    /// One line from QEMU: an asynchronous event, an error, or a `return` of type `R`.
    struct Reply<R: Decodable>: Decodable {
        enum Kind {
            case event(String)
            case error(ErrorBody)
            case value(R)
            case other
        }
        var kind: Kind

        enum CodingKeys: String, CodingKey {
            case event, error
            case value = "return"
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            if let event = try c.decodeIfPresent(String.self, forKey: .event) {
                kind = .event(event)
            } else if let error = try c.decodeIfPresent(ErrorBody.self, forKey: .error) {
                kind = .error(error)
            } else if c.contains(.value) {
                kind = .value(try c.decode(R.self, forKey: .value))
            } else {
                kind = .other
            }
        }
    }

    /// One entry of `query-cpus-fast`.
    struct CPUInfoFast: Decodable {
        var cpuIndex: Int
        var threadID: Int

        enum CodingKeys: String, CodingKey {
            case cpuIndex = "cpu-index"
            case threadID = "thread-id"
        }
    }
}

/// A small QMP client: greeting, `qmp_capabilities`, commands; asynchronous events (`"event"`
/// lines) are skipped while waiting for a `return` or `error`. Messages are Codable values.
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
        guard let greeting = try? JSONDecoder().decode(QMPMessage.Greeting.self, from: Data(line.utf8)) else {
            throw QMPError("\(name): expected the QMP greeting, got \(line.prefix(200))")
        }
        let version = greeting.QMP.version.map { "\($0.qemu.major).\($0.qemu.minor).\($0.qemu.micro)" } ?? "?"
        try execute("qmp_capabilities")
        return version
    }

    /// Runs a command whose reply value is not used. A QMP `error` is thrown with its description.
    public func execute(_ command: String) throws(QMPError) {
        _ = try execute(command, arguments: QMPMessage.NoArguments?.none, returning: QMPMessage.Ignored.self)
    }

    /// Runs a command and decodes its `return` value. A QMP `error` is thrown with its description.
    public func execute<Arguments: Encodable, Value: Decodable>(
        _ command: String, arguments: Arguments?, returning: Value.Type
    ) throws(QMPError) -> Value {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(QMPMessage.Request(execute: command, arguments: arguments)) else {
            throw QMPError("\(name): cannot encode \(command)")
        }
        try transport.send(String(decoding: data, as: UTF8.self))
        while true {
            guard let line = try transport.receiveLine() else {
                throw QMPError("\(name): QMP closed while waiting for the reply to \(command)")
            }
            let reply: QMPMessage.Reply<Value>
            do {
                reply = try JSONDecoder().decode(QMPMessage.Reply<Value>.self, from: Data(line.utf8))
            } catch {
                throw QMPError("\(name): unexpected reply to \(command): \(line.prefix(200))")
            }
            switch reply.kind {
            case .event: continue
            case .error(let e):
                throw QMPError("\(name): \(command) failed: \(e.desc ?? e.class ?? "an error without a description")")
            case .value(let value): return value
            case .other: throw QMPError("\(name): unexpected reply to \(command): \(line.prefix(200))")
            }
        }
    }

    /// `getfd`: hands QEMU `fd` under `name` (for `migrate`/`migrate-incoming` with `fd:NAME`).
    public func getfd(_ fd: Int32, name fdName: String) throws(QMPError) {
        struct Arguments: Encodable { var fdname: String }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(QMPMessage.Request(execute: "getfd", arguments: Arguments(fdname: fdName)))
        else { throw QMPError("\(name): cannot encode getfd") }
        try transport.send(String(decoding: data, as: UTF8.self), passing: fd)
        while true {
            guard let line = try transport.receiveLine() else { throw QMPError("\(name): QMP closed while waiting for getfd") }
            guard let reply = try? JSONDecoder().decode(QMPMessage.Reply<QMPMessage.Ignored>.self, from: Data(line.utf8)) else {
                throw QMPError("\(name): unexpected reply to getfd: \(line.prefix(200))")
            }
            switch reply.kind {
            case .event: continue
            case .error(let e): throw QMPError("\(name): getfd failed: \(e.desc ?? e.class ?? "an error without a description")")
            case .value: return
            case .other: throw QMPError("\(name): unexpected reply to getfd: \(line.prefix(200))")
            }
        }
    }

    /// `query-cpus-fast`: each vCPU's host thread.
    public func vcpuThreads() throws(QMPError) -> [VCPUThread] {
        let list = try execute(
            "query-cpus-fast", arguments: QMPMessage.NoArguments?.none, returning: [QMPMessage.CPUInfoFast].self)
        return list.map { VCPUThread(cpuIndex: $0.cpuIndex, threadID: Int32($0.threadID)) }.sorted { $0.cpuIndex < $1.cpuIndex }
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

    public func send(_ line: String, passing descriptor: Int32) throws(QMPError) {
        let bytes = Array((line + "\n").utf8)
        let n = bytes.withUnsafeBytes { nb_send_with_fd(fd, $0.baseAddress, UInt($0.count), descriptor) }
        if n < 0 { throw QMPError("\(path): sendmsg: \(String(cString: strerror(errno)))") }
        if n < bytes.count { try send(String(decoding: bytes[n...].dropLast(), as: UTF8.self)) }
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
