import Foundation

/// Why an input file could not be read; `message` names what is wrong, the caller adds the path.
public struct InputFileError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}

/// Reading files that must be regular files (experiment files, logs, exports, buddyinfo copies):
/// a FIFO, a device (/dev/zero), a directory or a socket is a clear error, never a hang or a read
/// until memory runs out. The file is opened non-blocking so that opening a FIFO cannot wait.
public enum InputFile {
    /// 1 GiB: larger than any experiment file, log or export nestbench reads whole.
    public static let defaultLimit = 1 << 30

    public static func read(_ path: String, limit: Int = InputFile.defaultLimit) throws(InputFileError) -> Data {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            throw InputFileError(path: path, message: "cannot open (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw InputFileError(path: path, message: "cannot stat (\(String(cString: strerror(errno))))")
        }
        if let kind = nonRegularKind(st.st_mode) {
            throw InputFileError(path: path, message: "is \(kind), not a regular file")
        }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw InputFileError(path: path, message: "cannot read (\(String(cString: strerror(errno))))")
            }
            if n == 0 { break }
            data.append(contentsOf: buffer[0..<n])
            if data.count > limit {
                throw InputFileError(path: path, message: "is larger than \(limit >> 20) MiB; not an input nestbench reads")
            }
        }
        return data
    }

    /// UTF-8 text of a regular file.
    public static func text(_ path: String, limit: Int = InputFile.defaultLimit) throws(InputFileError) -> String {
        let data = try read(path, limit: limit)
        guard let text = String(data: data, encoding: .utf8) else {
            throw InputFileError(path: path, message: "is not UTF-8 text")
        }
        return text
    }

    /// "a FIFO", "a character device" … for a mode that is not a regular file; nil for one.
    public static func nonRegularKind(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: nil
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        default: "not a regular file"
        }
    }
}
