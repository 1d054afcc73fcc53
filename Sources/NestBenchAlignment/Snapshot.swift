import Foundation

/// The page-table files of one process as a guest's agent read them (`verb probe` of
/// Harness/guest/nb-agent.c): `NBPROBE 1\n`, then sections `NAME OFFSET LENGTH\n` + LENGTH raw
/// bytes, then `end 0 0\n`. The probe runs on it as on this machine's files: a read outside what the
/// agent read is unavailable, never zero-filled.
public struct PageSnapshot: PageTableFiles {
    public struct Section: Sendable, Hashable {
        public var name: String
        public var offset: UInt64
        public var bytes: [UInt8]
    }

    public var pid: Int32
    /// Where the snapshot came from (in messages): "L1 (agent)".
    public var origin: String
    public var sections: [Section]

    public init(pid: Int32, origin: String, sections: [Section]) {
        self.pid = pid
        self.origin = origin
        self.sections = sections
    }

    /// Parses the agent's file; a malformed file is unavailable with what is wrong.
    public static func parse(_ data: [UInt8], pid: Int32, origin: String) throws(AlignmentUnavailable) -> PageSnapshot {
        let magic = Array("NBPROBE 1\n".utf8)
        guard data.count >= magic.count, Array(data[0..<magic.count]) == magic else {
            throw AlignmentUnavailable("\(origin): the probe file does not start with NBPROBE 1")
        }
        var sections: [Section] = []
        var i = magic.count
        while i < data.count {
            guard let newline = data[i...].firstIndex(of: UInt8(ascii: "\n")) else {
                throw AlignmentUnavailable("\(origin): the probe file ends inside a section header")
            }
            let header = String(decoding: data[i..<newline], as: UTF8.self).split(separator: " ")
            guard header.count == 3, let offset = UInt64(header[1]), let length = Int(header[2]) else {
                throw AlignmentUnavailable("\(origin): bad section header in the probe file at byte \(i)")
            }
            if header[0] == "end" { return PageSnapshot(pid: pid, origin: origin, sections: sections) }
            let start = newline + 1
            guard start + length <= data.count else {
                throw AlignmentUnavailable("\(origin): the probe file's \(header[0]) section is cut short")
            }
            sections.append(Section(name: String(header[0]), offset: offset, bytes: Array(data[start..<(start + length)])))
            i = start + length
        }
        throw AlignmentUnavailable("\(origin): the probe file has no end (the agent did not finish it)")
    }

    /// The agent's `error` sections ("WHAT: WHY").
    public var errors: [String] { sections.filter { $0.name == "error" }.map { String(decoding: $0.bytes, as: UTF8.self) } }

    func error(mentioning path: String) -> String? { errors.first { $0.hasPrefix(path) } }

    /// Frames the guest kernel marks as page-table pages (KPF_PGTABLE); nil when not asked or unreadable.
    public var pageTableFrames: [UInt64]? {
        guard let s = sections.first(where: { $0.name == "pgtable" }) else { return nil }
        return stride(from: 0, to: s.bytes.count / 8 * 8, by: 8).map { o in
            var v: UInt64 = 0
            for k in 0..<8 { v |= UInt64(s.bytes[o + k]) << (8 * UInt64(k)) }
            return v
        }
    }

    /// The `kvm` section's text ("VM FILE VALUE" lines), or why there is none.
    public var kvmText: Result<String, AlignmentUnavailable> {
        if let s = sections.first(where: { $0.name == "kvm" }) { return .success(String(decoding: s.bytes, as: UTF8.self)) }
        return .failure(AlignmentUnavailable(error(mentioning: "kvm") ?? "\(origin): KVM's counts were not read"))
    }

    func kind(of path: String) -> String? {
        if path == "/proc/\(pid)/maps" { return "maps" }
        if path == "/proc/\(pid)/pagemap" { return "pagemap" }
        if path == "/proc/kpageflags" { return "kpageflags" }
        return nil
    }

    public func text(_ path: String) throws(AlignmentUnavailable) -> String {
        guard kind(of: path) == "maps" else { throw AlignmentUnavailable("\(origin): \(path) is not in the probe file") }
        guard let s = sections.first(where: { $0.name == "maps" }) else {
            throw AlignmentUnavailable("\(origin): \(error(mentioning: path) ?? "\(path) was not read")")
        }
        return String(decoding: s.bytes, as: UTF8.self)
    }

    public func open(_ path: String) throws(AlignmentUnavailable) -> any PositionalReader {
        guard let name = kind(of: path), name != "maps" else {
            throw AlignmentUnavailable("\(origin): \(path) is not in the probe file")
        }
        if let e = error(mentioning: path) { throw AlignmentUnavailable("\(origin): \(e)") }
        return SectionReader(
            path: path, origin: origin, sections: sections.filter { $0.name == name }.sorted { $0.offset < $1.offset })
    }
}

/// Reads from the snapshot's sections of one file; bytes no section holds are unavailable.
final class SectionReader: PositionalReader {
    let path: String
    let origin: String
    let sections: [PageSnapshot.Section]

    init(path: String, origin: String, sections: [PageSnapshot.Section]) {
        self.path = path
        self.origin = origin
        self.sections = sections
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(AlignmentUnavailable) -> Int {
        var done = 0
        var position = offset
        var progress = true
        while done < buffer.count && progress {
            progress = false
            for s in sections where s.offset <= position && position < s.offset + UInt64(s.bytes.count) {
                let from = Int(position - s.offset)
                let n = min(s.bytes.count - from, buffer.count - done)
                s.bytes.withUnsafeBytes { src in
                    UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]).copyMemory(
                        from: UnsafeRawBufferPointer(rebasing: src[from..<(from + n)]))
                }
                done += n
                position += UInt64(n)
                progress = true
                break
            }
        }
        // A section that ends where the file ended (a short pread) is the file's end; a read whose
        // start no section holds was never read by the agent.
        if done == 0 && buffer.count > 0 {
            let endsHere = sections.contains { $0.offset + UInt64($0.bytes.count) == offset }
            if !endsHere {
                throw AlignmentUnavailable("\(origin): the probe file holds no \(path) bytes at offset \(offset)")
            }
        }
        return done
    }
}
