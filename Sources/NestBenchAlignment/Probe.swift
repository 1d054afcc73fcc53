import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Why a layer's alignment cannot be measured; the text starts with "unavailable:".
public struct AlignmentUnavailable: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "unavailable: \(reason)" }
}

/// Reads a file at offsets (pagemap, kpageflags).
public protocol PositionalReader: AnyObject {
    /// Fills as much of `buffer` as the file has from `offset`; returns the bytes read (short only at the end).
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(AlignmentUnavailable) -> Int
}

/// The files of one layer the probe reads: this machine's, or a guest's through its agent.
public protocol PageTableFiles: Sendable {
    func text(_ path: String) throws(AlignmentUnavailable) -> String
    func open(_ path: String) throws(AlignmentUnavailable) -> any PositionalReader
}

/// This machine's files, read with `pread`.
public struct LocalPageTableFiles: PageTableFiles {
    public init() {}

    public func text(_ path: String) throws(AlignmentUnavailable) -> String {
        let reader = try FileReader(path: path)
        var data = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var offset: UInt64 = 0
        while true {
            var failure: AlignmentUnavailable?
            let n = chunk.withUnsafeMutableBytes { b -> Int in
                do throws(AlignmentUnavailable) {
                    return try reader.readOnce(at: offset, into: b)
                } catch {
                    failure = error
                    return 0
                }
            }
            if let failure { throw failure }
            if n == 0 { break }
            data += chunk[0..<n]
            offset += UInt64(n)
        }
        return String(decoding: data, as: UTF8.self)
    }

    public func open(_ path: String) throws(AlignmentUnavailable) -> any PositionalReader {
        try FileReader(path: path)
    }
}

final class FileReader: PositionalReader {
    let fd: Int32
    let path: String

    init(path: String) throws(AlignmentUnavailable) {
        self.path = path
        fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw AlignmentUnavailable("cannot open \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { Glibc.close(fd) }

    func readOnce(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(AlignmentUnavailable) -> Int {
        while true {
            let n = pread(fd, buffer.baseAddress, buffer.count, off_t(Int64(bitPattern: offset)))
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw AlignmentUnavailable("cannot read \(path) at offset \(offset): \(String(cString: strerror(errno)))")
        }
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(AlignmentUnavailable) -> Int {
        var done = 0
        while done < buffer.count {
            let n = try readOnce(
                at: offset + UInt64(done), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 { break }
            done += n
        }
        return done
    }
}

/// The probe: for one process at one layer, every whole 2 MiB region of its private anonymous,
/// heap and anonymous-hugetlb mappings — one huge page, base pages or not present — and the
/// physical start of each huge one. Reads pagemap in `chunkBytes` `pread`s and kpageflags only
/// for the frames of regions that pagemap shows physically contiguous from a 512-aligned frame.
public struct AlignmentProbe: Sendable {
    public var files: any PageTableFiles
    public var chunkBytes: Int
    public var kpageflagsPath: String

    public init(
        files: any PageTableFiles = LocalPageTableFiles(), chunkBytes: Int = 8 << 20, kpageflagsPath: String = "/proc/kpageflags"
    ) {
        self.files = files
        self.chunkBytes = max(chunkBytes, PageGeometry.pagesPerHuge * 8)
        self.kpageflagsPath = kpageflagsPath
    }

    public func probe(pid: Int32) throws(AlignmentUnavailable) -> ProcessAlignment {
        let start = ContinuousClock.now
        let mapsPath = "/proc/\(pid)/maps"
        let mappings: [Mapping]
        do {
            mappings = try MapsParser.parse(try files.text(mapsPath)).filter(\.isProbed)
        } catch let error as AlignmentUnavailable {
            throw error
        } catch {
            throw AlignmentUnavailable("\(mapsPath): \(error)")
        }
        return try classify(pid: pid, ranges: mappings.map(\.hugeAlignedRange), mappings: mappings.count, start: start)
    }

    /// The verdicts on exactly the 2 MiB regions starting at `regionStarts` (2 MiB-aligned
    /// virtual addresses) of `pid`, whatever mapping holds them: a layer below, where the guest's
    /// memory is one mapping of its QEMU (private or shared, anonymous, memfd or hugetlbfs).
    public func probe(pid: Int32, regionStarts: [UInt64]) throws(AlignmentUnavailable) -> ProcessAlignment {
        let start = ContinuousClock.now
        var ranges: [Range<UInt64>] = []
        for va in Set(regionStarts.map { $0 / PageGeometry.hugeSize * PageGeometry.hugeSize }).sorted() {
            if let last = ranges.last, last.upperBound == va {
                ranges[ranges.count - 1] = last.lowerBound..<(va + PageGeometry.hugeSize)
            } else {
                ranges.append(va..<(va + PageGeometry.hugeSize))
            }
        }
        return try classify(pid: pid, ranges: ranges, mappings: ranges.count, start: start)
    }

    /// Virtual ranges (whole 2 MiB regions) → verdicts: pagemap in `chunkBytes` preads, kpageflags
    /// only for the candidates.
    func classify(pid: Int32, ranges: [Range<UInt64>], mappings: Int, start: ContinuousClock.Instant)
        throws(AlignmentUnavailable) -> ProcessAlignment
    {
        let pagemap = try files.open("/proc/\(pid)/pagemap")
        let kpageflags = try files.open(kpageflagsPath)

        let per = PageGeometry.pagesPerHuge
        let chunkEntries = chunkBytes / 8 / per * per
        let buffer = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: chunkEntries)
        defer { buffer.deallocate() }
        var regions: [RegionMapping] = []
        var candidates: [(index: Int, pfn: UInt64)] = []
        var presentWithoutPFN = 0
        var anyPFN = false
        var pagemapBytes = 0
        for range in ranges {
            var va = range.lowerBound
            while va < range.upperBound {
                let entries = Int(min((range.upperBound - va) / PageGeometry.baseSize, UInt64(chunkEntries)))
                let bytes = try pagemap.read(
                    at: va / PageGeometry.baseSize * 8,
                    into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[0..<(entries * 8)]))
                pagemapBytes += bytes
                // A short read: the mapping went away while we read; the rest is not present.
                if bytes < entries * 8 {
                    UnsafeMutableRawBufferPointer(buffer)[bytes..<(entries * 8)].initializeMemory(as: UInt8.self, repeating: 0)
                }
                for block in stride(from: 0, to: entries, by: per) {
                    let virtualStart = va + UInt64(block) * PageGeometry.baseSize
                    let slice = UnsafeBufferPointer(rebasing: buffer[block..<(block + per)])
                    switch RegionClassifier.candidate(slice) {
                    case .notPresent:
                        regions.append(
                            RegionMapping(
                                virtualStart: virtualStart, kind: .notPresent, hugeKind: nil, physicalStart: nil, presentPages: 0)
                        )
                    case .base(let present, let visible):
                        if visible { anyPFN = true } else { presentWithoutPFN += 1 }
                        var region = RegionMapping(
                            virtualStart: virtualStart, kind: .base, hugeKind: nil, physicalStart: nil, presentPages: present)
                        if visible { region.frames = RegionClassifier.frames(slice) }
                        regions.append(region)
                    case .contiguous(let pfn):
                        anyPFN = true
                        candidates.append((regions.count, pfn))
                        var region = RegionMapping(
                            virtualStart: virtualStart, kind: .base, hugeKind: nil, physicalStart: nil, presentPages: per)
                        region.frames = [pfn * PageGeometry.baseSize]
                        regions.append(region)
                    }
                }
                va += UInt64(entries) * PageGeometry.baseSize
            }
        }
        if presentWithoutPFN > 0 && !anyPFN {
            throw AlignmentUnavailable(
                "/proc/\(pid)/pagemap shows present pages but no page frame numbers (reading them needs CAP_SYS_ADMIN: run as root)"
            )
        }

        // kpageflags for the contiguous candidates, in runs of adjacent frames.
        candidates.sort { $0.pfn < $1.pfn }
        var kpageflagsBytes = 0
        var i = 0
        while i < candidates.count {
            var j = i + 1
            while j < candidates.count, candidates[j].pfn == candidates[j - 1].pfn + UInt64(per),
                (j - i + 1) * per <= chunkEntries
            {
                j += 1
            }
            let frames = (j - i) * per
            let raw = UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[0..<(frames * 8)])
            let bytes = try kpageflags.read(at: candidates[i].pfn * 8, into: raw)
            kpageflagsBytes += bytes
            if bytes < frames * 8 {
                throw AlignmentUnavailable(
                    "\(kpageflagsPath) ends before frame \(candidates[i].pfn + UInt64(frames)) (read \(bytes) of \(frames * 8) bytes)"
                )
            }
            for k in i..<j {
                let offset = (k - i) * per
                if let kind = RegionClassifier.hugeKind(UnsafeBufferPointer(rebasing: buffer[offset..<(offset + per)])) {
                    let index = candidates[k].index
                    regions[index].kind = .huge
                    regions[index].hugeKind = kind
                    regions[index].physicalStart = candidates[k].pfn * PageGeometry.baseSize
                }
            }
            i = j
        }
        return ProcessAlignment(
            pid: pid, mappings: mappings, regions: regions, seconds: (ContinuousClock.now - start).seconds,
            pagemapBytes: pagemapBytes, kpageflagsBytes: kpageflagsBytes)
    }
}

extension Duration {
    var seconds: Double {
        let (s, a) = components
        return Double(s) + Double(a) / 1e18
    }
}
