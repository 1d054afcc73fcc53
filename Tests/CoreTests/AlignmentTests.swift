import Foundation
import NestBenchAnalysis
import NestBenchModel
import NestBenchProcess
import NestBenchWorkloads
import TestSupport
import Testing

@testable import NestBenchAlignment
@testable import NestBenchCollectors

/// In-memory stand-ins for /proc/PID/maps, pagemap and kpageflags (sparse: absent words read as 0).
final class FakeWords: PositionalReader, @unchecked Sendable {
    let words: [UInt64: UInt64]
    let length: UInt64
    var bytesRead = 0

    init(_ words: [UInt64: UInt64], length: UInt64) {
        self.words = words
        self.length = length
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(AlignmentUnavailable) -> Int {
        precondition(offset % 8 == 0 && buffer.count % 8 == 0)
        let first = offset / 8
        let count = Int(min(UInt64(buffer.count / 8), length > first ? length - first : 0))
        for i in 0..<count {
            buffer.storeBytes(of: (words[first + UInt64(i)] ?? 0).littleEndian, toByteOffset: i * 8, as: UInt64.self)
        }
        bytesRead += count * 8
        return count * 8
    }
}

struct FakeFiles: PageTableFiles, @unchecked Sendable {
    var maps: String
    var pagemap: FakeWords
    var kpageflags: FakeWords?

    func text(_ path: String) throws(AlignmentUnavailable) -> String {
        guard path.hasSuffix("/maps") else { throw AlignmentUnavailable("cannot open \(path)") }
        return maps
    }

    func open(_ path: String) throws(AlignmentUnavailable) -> any PositionalReader {
        if path.hasSuffix("/pagemap") { return pagemap }
        if path == "/proc/kpageflags", let kpageflags { return kpageflags }
        throw AlignmentUnavailable("cannot open \(path): No such file or directory")
    }
}

@Suite("Alignment probe: parsing and classification")
struct AlignmentParsingTests {
    static let present = PagemapBits.present
    static let thpHead = KPageFlags([.compoundHead, .thp]).rawValue
    static let thpTail = KPageFlags([.compoundTail, .thp]).rawValue
    static let tlbHead = KPageFlags([.compoundHead, .huge]).rawValue
    static let tlbTail = KPageFlags([.compoundTail, .huge]).rawValue

    @Test func mapsSelectsPrivateAnonymousHeapAndHugetlb() throws {
        let text = """
            55d4c8a00000-55d4c8c00000 r-xp 00000000 fe:01 131090                     /usr/bin/nb-micro
            55d4c9e00000-55d4ca400000 rw-p 00000000 00:00 0                          [heap]
            7f0000000000-7f0040200000 rw-p 00000000 00:00 0 
            7f0040200000-7f0040400000 ---p 00000000 00:00 0 
            7f0040400000-7f0040a00000 rw-s 00000000 00:01 2050                       /dev/zero (deleted)
            7f0040a00000-7f0040e00000 rw-p 00000000 00:10 7321                       /anon_hugepage (deleted)
            7f0040e00000-7f0041000000 rw-p 00000000 00:00 0                          [anon:glibc malloc]
            7ffd00000000-7ffd00400000 rw-p 00000000 00:00 0                          [stack]
            ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
            """
        let maps = try MapsParser.parse(text)
        #expect(maps.count == 9)
        #expect(maps[0].path == "/usr/bin/nb-micro" && maps[0].inode == 131090)
        #expect(maps[5].path == "/anon_hugepage (deleted)")
        let probed = maps.filter(\.isProbed).map(\.start)
        #expect(probed == [0x55d4_c9e0_0000, 0x7f00_0000_0000, 0x7f00_40a0_0000, 0x7f00_40e0_0000])
        // 0x7f0000000000–0x7f0040200000: 513 whole regions; an unaligned heap keeps only whole ones.
        #expect(maps[2].hugeAlignedRange.count == 513 * Int(PageGeometry.hugeSize))
        let partial = Mapping(start: 0x1000, end: 0x401000, permissions: "rw-p", inode: 0, path: "")
        #expect(partial.hugeAlignedRange == 0x200000..<0x400000)
        let tiny = Mapping(start: 0x1000, end: 0x3000, permissions: "rw-p", inode: 0, path: "")
        #expect(tiny.hugeAlignedRange.isEmpty)
    }

    @Test func mapsRejectsGarbageNamingTheLine() {
        #expect(throws: MapsParseError.self) { try MapsParser.parse("00400000-00452000 r-xp 0 fe:01 1 /bin/x\nnot a line\n") }
        do {
            _ = try MapsParser.parse("00400000-00452000 r-xp 0 fe:01 1 /bin/x\nnot a line\n")
        } catch {
            #expect(error.line == 2)
        }
    }

    func entries(_ make: (Int) -> UInt64) -> [UInt64] { (0..<512).map(make) }

    @Test func candidates() {
        let p = Self.present
        let cases: [([UInt64], RegionCandidate)] = [
            (entries { _ in 0 }, .notPresent),
            (entries { p | (0x4000 + UInt64($0)) }, .contiguous(firstPFN: 0x4000)),
            // Contiguous but not from a 512-aligned frame: cannot be one 2 MiB page.
            (entries { p | (0x4001 + UInt64($0)) }, .base(present: 512, pfnsVisible: true)),
            // One hole.
            (entries { $0 == 300 ? 0 : p | (0x4000 + UInt64($0)) }, .base(present: 511, pfnsVisible: true)),
            // One page out of order.
            (entries { p | ($0 == 511 ? 0x9000 : 0x4000 + UInt64($0)) }, .base(present: 512, pfnsVisible: true)),
            // Present, PFNs hidden (not CAP_SYS_ADMIN).
            (entries { $0 < 10 ? p : 0 }, .base(present: 10, pfnsVisible: false)),
            // Swapped entries are not present.
            (entries { _ in PagemapBits.swapped | 0x1234 }, .notPresent),
        ]
        for (words, expected) in cases {
            let got = words.withUnsafeBufferPointer { RegionClassifier.candidate($0) }
            #expect(got == expected)
        }
    }

    @Test func hugeKinds() {
        let cases: [([UInt64], HugeKind?)] = [
            (entries { $0 == 0 ? Self.thpHead : Self.thpTail }, .thp),
            (entries { $0 == 0 ? Self.tlbHead : Self.tlbTail }, .hugetlb),
            // A 2 MiB slice of a 1 GiB hugetlb page: all tails.
            (entries { _ in Self.tlbTail }, .hugetlb),
            // THP tails without their head here: part of a bigger folio or misread — not one 2 MiB page.
            (entries { _ in Self.thpTail }, nil),
            // Physically contiguous base pages (fresh memory often is).
            (entries { _ in 0 }, nil),
            // A second head inside: two smaller compound pages.
            (entries { $0 == 0 || $0 == 256 ? Self.thpHead : Self.thpTail }, nil),
            // One tail of another kind.
            (entries { $0 == 0 ? Self.thpHead : ($0 == 9 ? Self.tlbTail : Self.thpTail) }, nil),
            // A head with no compound bit.
            (entries { $0 == 0 ? KPageFlags.thp.rawValue : Self.thpTail }, nil),
        ]
        for (words, expected) in cases {
            let got = words.withUnsafeBufferPointer { RegionClassifier.hugeKind($0) }
            #expect(got == expected)
        }
    }

    /// Three regions of one mapping — a THP, contiguous base pages, nothing — plus a hugetlb
    /// mapping and a stack (ignored), read in one-region chunks.
    func fakeProcess(hidePFNs: Bool = false, kpageflags: Bool = true) -> (FakeFiles, FakeWords, FakeWords) {
        let maps = """
            00200000-00800000 rw-p 00000000 00:00 0 
            00a00000-00c00000 rw-p 00000000 00:10 99                     /anon_hugepage (deleted)
            7ffd00000000-7ffd00200000 rw-p 00000000 00:00 0                          [stack]
            """
        var pm: [UInt64: UInt64] = [:]
        var kf: [UInt64: UInt64] = [:]
        func page(_ va: UInt64, _ pfn: UInt64) { pm[va / 4096] = Self.present | (hidePFNs ? 0 : pfn) }
        for i in 0..<512 as Range<UInt64> {
            page(0x200000 + i * 4096, 0x1000 + i)  // THP at frame 0x1000
            kf[0x1000 + i] = i == 0 ? Self.thpHead : Self.thpTail
            page(0x400000 + i * 4096, 0x2000 + i)  // contiguous, aligned, but plain pages
            kf[0x2000 + i] = 0
            page(0xa00000 + i * 4096, 0x3000 + i)  // hugetlb at frame 0x3000
            kf[0x3000 + i] = i == 0 ? Self.tlbHead : Self.tlbTail
            page(0x7ffd_0000_0000 + i * 4096, 0x5000 + i)  // a huge stack: not probed
            kf[0x5000 + i] = i == 0 ? Self.thpHead : Self.thpTail
        }
        let pagemap = FakeWords(pm, length: 1 << 40)
        let flags = FakeWords(kf, length: 1 << 20)
        return (FakeFiles(maps: fakeMaps(maps), pagemap: pagemap, kpageflags: kpageflags ? flags : nil), pagemap, flags)
    }

    func fakeMaps(_ s: String) -> String { s }

    @Test func probeClassifiesEveryRegionAndReadsFlagsOnlyForCandidates() throws {
        let (files, pagemap, flags) = fakeProcess()
        let probe = AlignmentProbe(files: files, chunkBytes: 4096)
        let result = try probe.probe(pid: 42)
        #expect(result.mappings == 2)
        #expect(result.regions.map(\.virtualStart) == [0x200000, 0x400000, 0x600000, 0xa00000])
        #expect(result.regions.map(\.kind) == [.huge, .base, .notPresent, .huge])
        #expect(result.regions.map(\.hugeKind) == [.thp, nil, nil, .hugetlb])
        #expect(result.regions[0].physicalStart == 0x1000 * 4096)
        #expect(result.regions[3].physicalStart == 0x3000 * 4096)
        let s = result.summary
        #expect(s.huge == 2 && s.hugeTHP == 1 && s.hugeHugetlb == 1 && s.base == 1 && s.notPresent == 1)
        #expect(s.hugeFraction == 2.0 / 3.0)
        // pagemap: the 4 regions' entries; kpageflags: only the 3 contiguous candidates, not the stack's.
        #expect(pagemap.bytesRead == 4 * 512 * 8)
        #expect(flags.bytesRead == 3 * 512 * 8)
        #expect(result.kpageflagsBytes == 3 * 512 * 8)
    }

    @Test func probeCoalescesAdjacentFramesIntoOneRead() throws {
        var (files, _, _) = fakeProcess()
        files.maps = "00200000-00600000 rw-p 00000000 00:00 0 \n"
        // Make 0x400000 a THP at frame 0x1200, adjacent to 0x1000's.
        var pm: [UInt64: UInt64] = [:]
        var kf: [UInt64: UInt64] = [:]
        for i in 0..<1024 as Range<UInt64> {
            pm[0x200 + i] = Self.present | (0x1000 + i)
            kf[0x1000 + i] = i % 512 == 0 ? Self.thpHead : Self.thpTail
        }
        let flags = FakeWords(kf, length: 1 << 20)
        files.pagemap = FakeWords(pm, length: 1 << 40)
        files.kpageflags = flags
        let result = try AlignmentProbe(files: files).probe(pid: 1)
        #expect(result.summary.huge == 2)
        #expect(flags.bytesRead == 1024 * 8)
    }

    @Test func hiddenPFNsAreUnavailableNotEstimated() {
        let (files, _, _) = fakeProcess(hidePFNs: true)
        #expect(throws: AlignmentUnavailable.self) { try AlignmentProbe(files: files).probe(pid: 7) }
        do {
            _ = try AlignmentProbe(files: files).probe(pid: 7)
        } catch {
            #expect(error.description.hasPrefix("unavailable: "))
            #expect(error.reason.contains("CAP_SYS_ADMIN"))
        }
    }

    @Test func missingKpageflagsIsUnavailable() {
        let (files, _, _) = fakeProcess(kpageflags: false)
        do {
            _ = try AlignmentProbe(files: files).probe(pid: 7)
            Issue.record("expected unavailable")
        } catch {
            #expect(error.reason.contains("/proc/kpageflags"))
        }
    }

    @Test func metricsNameTheLayerAndScope() throws {
        let (files, _, _) = fakeProcess()
        let result = try AlignmentProbe(files: files).probe(pid: 42)
        let metrics = AlignmentMetrics.process(result, layer: "host", when: "probed once at the end")
        let byName = Dictionary(uniqueKeysWithValues: metrics.map { ($0.name, $0) })
        #expect(byName["align.regions"]?.value == 3)
        #expect(byName["align.not_present"]?.value == 1)
        #expect(byName["align.huge.host"]?.value == 2.0 / 3.0)
        #expect(byName["align.huge.host"]?.detail?.contains("probed once at the end") == true)
        let none = AlignmentMetrics.unavailable(layer: "L1", reason: "unavailable: no QMP")
        #expect(none.allSatisfy { $0.value == nil && $0.unavailable == "unavailable: no QMP" })
        #expect(none.map(\.name).contains("align.huge.L1"))
        // Unavailable or measured, a layer gives the same names.
        #expect(Set(none.map(\.name)) == Set(AlignmentMetrics.process(result, layer: "L1", when: "-").map(\.name)))
    }
}

/// The collector on a real nb-micro: the micro stops itself after its measured phase, the probe
/// reads its page tables, and the verdict is checked against the kernel's own AnonHugePages (the
/// micro prints it right after it is continued) and the THP mode this test set.
@Suite(.serialized)
struct AlignmentCollectorTests {
    static let isRoot = getuid() == 0
    static let thpEnabled = "/sys/kernel/mm/transparent_hugepage/enabled"
    static let thpDefrag = "/sys/kernel/mm/transparent_hugepage/defrag"

    struct Run {
        var metrics: [String: Metric]
        var output: [String: Double]
        var stdout: String
    }

    func runMicro(thp: String, size: UInt64 = 64 << 20, collector: AlignmentCollector = AlignmentCollector()) async throws -> Run
    {
        let binary = try await HarnessLocator().program("micro/nb-micro.c", name: "nb-micro")
        let dir = Fixtures.temporaryDirectory()
        let spec = ProcessSpec(
            program: binary, arguments: ["random", "--size", String(size), "--ops", "200000", "--thp", thp],
            environment: ["PATH": "/usr/bin:/bin"].merging(([collector] as [any RunCollector]).environment) { $1 },
            workingDirectory: dir, stdoutPath: dir + "/out", stderrPath: dir + "/err", timeoutSeconds: 60)
        let child = try ProcessRunner.start(spec)
        let session = collector.attach(pid: child.pid)
        try child.release()
        session.started()
        let outcome = await child.wait()
        #expect(outcome.succeeded)
        let (metrics, _) = session.finish(outcome)
        let stdout = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
        var output: [String: Double] = [:]
        for line in stdout.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count >= 3, let v = Double(f[2]) { output[String(f[1])] = v }
        }
        return Run(metrics: Dictionary(metrics.map { ($0.name, $0) }) { a, _ in a }, output: output, stdout: stdout)
    }

    /// Sets THP to `madvise` (enabled and defrag, so MADV_HUGEPAGE faults compact directly) for the
    /// body, holding the tests' machine-state lock (no other test changes THP meanwhile).
    func withMadviseTHP<T>(_ body: () async throws -> T) async throws -> T {
        try await MachineStateLock.withLock { try await madviseTHP(body) }
    }

    private func madviseTHP<T>(_ body: () async throws -> T) async throws -> T {
        let old = try [Self.thpEnabled, Self.thpDefrag].map { path in
            (path, try String(contentsOfFile: path, encoding: .utf8))
        }
        for (path, _) in old { try "madvise".write(toFile: path, atomically: false, encoding: .utf8) }
        defer {
            for (path, text) in old {
                try? KernelFileSelected.value(text).write(toFile: path, atomically: false, encoding: .utf8)
            }
        }
        return try await body()
    }

    @Test(.enabled(if: isRoot), .timeLimit(.minutes(10)))  // the machine-state lock may first wait for a VM test
    func hugeBufferIsHugeAndNohugeIsNot() async throws {
        try await withMadviseTHP {
            for thp in ["huge", "nohuge"] {
                let run = try await runMicro(thp: thp)
                #expect(run.output["phase_stop"] == 1, "the micro stopped at the end of its measured phase")
                let regions = try #require(run.metrics["align.regions"]?.value)
                let fraction = try #require(
                    run.metrics["align.huge.host"]?.value, "\(run.metrics["align.huge.host"]?.unavailable ?? "")")
                let huge = (fraction * regions).rounded()
                let anonHuge = try #require(run.output["anon_huge_bytes"])
                // The kernel's count of PMD-mapped THP bytes of the whole process, read just after the probe.
                #expect(abs(huge - anonHuge / Double(2 << 20)) <= 1, "\(thp): \(huge) huge regions vs AnonHugePages \(anonHuge)")
                // The 64 MiB buffer: 32 whole regions (the 2 MiB over-allocation may add one).
                #expect(regions >= 32)
                if thp == "huge" {
                    #expect(fraction >= 0.9, "MADV_HUGEPAGE with THP madvise: \(fraction)")
                } else {
                    #expect(fraction <= 0.05, "MADV_NOHUGEPAGE: \(fraction)")
                }
                #expect(run.metrics["align.huge.host"]?.detail?.contains("end of the measured phase") == true)
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aWorkloadThatNeverStopsGetsUnavailable() async throws {
        let collector = AlignmentCollector()
        let spec = ProcessSpec(
            program: "/bin/true", environment: ["PATH": "/usr/bin:/bin", "NB_PHASE_STOP": "1"], timeoutSeconds: 30)
        let child = try ProcessRunner.start(spec)
        let session = collector.attach(pid: child.pid)
        try child.release()
        session.started()
        let outcome = await child.wait()
        let (metrics, _) = session.finish(outcome)
        let huge = try #require(metrics.first { $0.name == "align.huge.host" })
        #expect(huge.value == nil)
        #expect(huge.unavailable?.contains("without stopping") == true || huge.unavailable?.contains("ended") == true)
    }

    @Test(.enabled(if: !isRoot), .timeLimit(.minutes(1)))
    func withoutRootThePFNsAreUnavailable() async throws {
        let run = try await runMicro(thp: "huge", size: 8 << 20)
        let huge = try #require(run.metrics["align.huge.host"])
        #expect(huge.value == nil)
        #expect(huge.unavailable?.hasPrefix("unavailable:") == true)
    }
}

/// `always [madvise] never` → `madvise`.
enum KernelFileSelected {
    static func value(_ text: String) -> String { KernelFile.selectedValue(text) }
}

@Suite("Alignment figure")
struct AlignmentFigureTests {
    func report(withAlignment: Bool) -> Report {
        let e = Synthetic.experiment(configurations: ["thp-never", "thp-always"])
        let runs = Synthetic.runs("q", ["thp-never": [100, 102, 98, 101], "thp-always": [140, 143, 139, 141]]).map { r in
            var r = r
            r.planned.workload = "random-4g"
            if withAlignment {
                let v = r.planned.configuration == "thp-always" ? 0.97 : 0.0
                r.metrics.append(
                    Metric(name: "align.huge.host", value: v, unit: "fraction", polarity: .higherIsBetter, source: "pagemap"))
            }
            return r
        }
        let e2 = Experiment(
            name: "quickstart", baseline: "thp-never", configurations: e.configurations,
            workloads: [WorkloadSpec(label: "random-4g", suite: "micro", name: "random-access", cpus: [1])],
            repetitions: e.repetitions, analysis: e.analysis)
        return Report(record: Synthetic.record("q", e2, plan: runs.map(\.planned), at: Date()), runs: runs)
    }

    @Test func drawsAbsoluteFractionsPerConfiguration() {
        let html = HTMLReport.render(report(withAlignment: true))
        #expect(html.contains("id=\"alignment\""))
        #expect(html.contains("0.970 (n=4)"), "thp-always's mean fraction")
        #expect(html.contains("0.000 (n=4)"), "the baseline's, drawn though its ratio is undefined")
        #expect(html.contains("width=\"388\""), "0.97 of the 400-pixel axis")
        #expect(html.contains("data-figure=\"alignment-layers\""), "says the per-layer bars are missing")
    }

    /// Runs in a stack: L2 huge 0.8; backed 1.0 in L1, 0.5 in L0, 0.5 here (thp-always) → segments
    /// 0 (L2 only), 0.4 (also L1), 0 (also L0), 0.4 well-aligned; the baseline all base pages.
    @Test func stackedBarPerLayerAndWellAlignedOnTheVerdictLine() {
        let e = Synthetic.experiment(configurations: ["thp-never", "thp-always"])
        let runs = Synthetic.runs("q", ["thp-never": [100, 102, 98, 101], "thp-always": [140, 143, 139, 141]]).map { r in
            var r = r
            r.planned.workload = "random-4g"
            let aligned = r.planned.configuration == "thp-always"
            let values: [(String, Double?)] = [
                ("align.huge.L2", aligned ? 0.8 : 0), ("align.backed.L1", aligned ? 1 : nil),
                ("align.backed.L0", aligned ? 0.5 : nil), ("align.backed.host", aligned ? 0.5 : nil),
                ("align.well_aligned", aligned ? 0.4 : 0),
            ]
            for (name, v) in values {
                r.metrics.append(
                    Metric(
                        name: name, value: v, unit: "fraction", polarity: .higherIsBetter, source: "pagemap",
                        unavailable: v == nil ? "unavailable: none to count" : nil))
            }
            return r
        }
        let e2 = Experiment(
            name: "quickstart", baseline: "thp-never", configurations: e.configurations,
            workloads: [WorkloadSpec(label: "random-4g", suite: "micro", name: "random-access", cpus: [1])],
            repetitions: e.repetitions, analysis: e.analysis)
        let report = Report(record: Synthetic.record("q", e2, plan: runs.map(\.planned), at: Date()), runs: runs)
        let html = HTMLReport.render(report)
        #expect(html.contains("<svg class=\"figure\" data-figure=\"alignment-layers\""))
        #expect(html.contains("huge in L2 only") && html.contains("also in L1") && html.contains("also in L0"))
        #expect(html.contains("well-aligned (also in host: every layer): 0.400"))
        #expect(html.contains("also in L1: 0.400"))
        let lines = ReportRenderer.verdictLines(report)
        #expect(lines.contains { $0.contains("align.well_aligned 0.400 vs 0.000 in thp-never") }, "\(lines)")
    }

    @Test func saysWhyWhenNothingWasProbed() {
        let html = HTMLReport.render(report(withAlignment: false))
        #expect(html.contains("data-figure=\"alignment\""))
        #expect(!html.contains("(n=4)</text>"))
    }
}

@Suite("Alignment across layers (pure)")
struct CrossLayerTests {
    @Test func parsesGpa2hva() {
        let ok = QEMUMonitorText.gpa2hva("Host virtual address for 0x200000 (pc.ram) is 0x7fb2a8000000\r\n")
        #expect(ok?.block == "pc.ram" && ok?.hva == 0x7fb2_a800_0000)
        #expect(QEMUMonitorText.gpa2hva("Memory at address 0xffffffff0 is not RAM") == nil)
        #expect(QEMUMonitorText.gpa2hva("") == nil)
    }

    func region(_ va: UInt64, _ kind: RegionKind, _ phys: UInt64? = nil) -> RegionMapping {
        RegionMapping(
            virtualStart: va, kind: kind, hugeKind: kind == .huge ? .thp : nil, physicalStart: phys,
            presentPages: kind == .notPresent ? 0 : 512)
    }

    @Test func followsHugeRegionsDownAndStopsAtTheFirstBaseLayer() throws {
        let mb2: UInt64 = 2 << 20
        // L2: four huge regions at guest-physical 0, 2, 4, 6 MiB, one base, one absent.
        let guest = [
            region(0x10_0000_0000, .huge, 0), region(0x10_0020_0000, .huge, mb2), region(0x10_0040_0000, .huge, 2 * mb2),
            region(0x10_0060_0000, .huge, 3 * mb2), region(0x10_0080_0000, .base), region(0x10_00a0_0000, .notPresent),
        ]
        // L1's QEMU maps L2 RAM at 0x7f0000000000 (+ gpa); 6 MiB is off by 4 KiB (unaligned → not backed).
        let l1 = LowerLayer(
            name: "L1", translate: { $0 == 3 * mb2 ? 0x7f00_0000_0000 + $0 + 4096 : 0x7f00_0000_0000 + $0 },
            regions: [
                region(0x7f00_0000_0000, .huge, 100 * mb2), region(0x7f00_0020_0000, .huge, 101 * mb2),
                region(0x7f00_0040_0000, .base),
            ])
        // L0's QEMU maps L1 RAM at 0x7e0000000000; only 100 × 2 MiB is huge there.
        let l0 = LowerLayer(
            name: "L0", translate: { 0x7e00_0000_0000 + $0 },
            regions: [region(0x7e00_0000_0000 + 100 * mb2, .huge, 5 * mb2), region(0x7e00_0000_0000 + 101 * mb2, .base)])
        let r = CrossLayer.follow(guest: guest, guestLayer: "L2", below: [l1, l0])
        #expect(r.present == 5 && r.guestHuge == 4)
        #expect(r.backed == [2, 1])
        #expect(r.wellAligned == 1)
        let m = Dictionary(uniqueKeysWithValues: CrossLayer.metrics(r, when: "at the end").map { ($0.name, $0) })
        #expect(m["align.huge.L2"]?.value == 0.8)
        #expect(m["align.backed.L1"]?.value == 0.5)
        #expect(m["align.backed.L0"]?.value == 0.25)
        #expect(m["align.well_aligned"]?.value == 0.2)
        #expect(m["align.misaligned.guest_huge"]?.value == 0.6)
    }

    @Test func nothingPresentIsUnavailable() {
        let r = CrossLayer.follow(guest: [region(0, .notPresent)], guestLayer: "L1", below: [])
        let m = CrossLayer.metrics(r, when: "x")
        #expect(m.allSatisfy { $0.value == nil && $0.unavailable != nil })
    }
}

@Suite("Alignment: the agent's probe file, base regions over huge pages, page tables, KVM counts (pure)")
struct StackProbePieceTests {
    static func file(_ sections: [(String, UInt64, [UInt8])], end: Bool = true) -> [UInt8] {
        var out = Array("NBPROBE 1\n".utf8)
        for (name, offset, bytes) in sections {
            out += Array("\(name) \(offset) \(bytes.count)\n".utf8) + bytes
        }
        if end { out += Array("end 0 0\n".utf8) }
        return out
    }

    static func words(_ values: [UInt64]) -> [UInt8] {
        values.flatMap { v in (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
    }

    @Test func snapshotServesReadsFromItsSectionsAndRefusesTheRest() throws {
        let data = Self.file([
            ("maps", 0, Array("00400000-00600000 rw-p 00000000 00:00 0 \n".utf8)),
            ("pagemap", 8192, Self.words([1, 2, 3, 4])), ("pagemap", 8224, Self.words([5, 6])),
            ("pgtable", 0, Self.words([7, 4096])), ("error", 0, Array("/proc/kpageflags: Permission denied".utf8)),
        ])
        let s = try PageSnapshot.parse(data, pid: 42, origin: "L2")
        #expect(try s.text("/proc/42/maps").hasPrefix("00400000-00600000"))
        #expect(s.pageTableFrames == [7, 4096])
        let reader = try s.open("/proc/42/pagemap")
        var buffer = [UInt64](repeating: 0, count: 6)
        // Across two adjacent sections.
        let n = try buffer.withUnsafeMutableBytes { try reader.read(at: 8192, into: $0) }
        #expect(n == 48 && buffer == [1, 2, 3, 4, 5, 6])
        // Never read by the agent: unavailable, not zeros.
        #expect(throws: AlignmentUnavailable.self) {
            try buffer.withUnsafeMutableBytes { _ = try reader.read(at: 0, into: $0) }
        }
        // The agent could not open kpageflags: its reason, not a made-up reading.
        #expect {
            _ = try s.open("/proc/kpageflags")
        } throws: { ($0 as? AlignmentUnavailable)?.reason.contains("Permission denied") == true }
        #expect(throws: AlignmentUnavailable.self) { _ = try s.open("/proc/43/pagemap") }
        if case .success = s.kvmText { Issue.record("no kvm section: its counts are unavailable") }
    }

    @Test func aTruncatedOrForeignFileIsUnavailable() {
        #expect(throws: AlignmentUnavailable.self) {
            _ = try PageSnapshot.parse(Self.file([("maps", 0, [65])], end: false), pid: 1, origin: "L1")
        }
        #expect(throws: AlignmentUnavailable.self) { _ = try PageSnapshot.parse(Array("hello".utf8), pid: 1, origin: "L1") }
        var cut = Self.file([("pagemap", 0, Self.words([1, 2]))])
        cut.removeLast(12)
        #expect(throws: AlignmentUnavailable.self) { _ = try PageSnapshot.parse(cut, pid: 1, origin: "L1") }
    }

    @Test func baseRegionsOverHugePagesAndPageTablesAreFollowedDown() {
        let mb2: UInt64 = 2 << 20
        var base1 = RegionMapping(virtualStart: 0, kind: .base, hugeKind: nil, physicalStart: nil, presentPages: 10)
        base1.frames = [0, mb2]  // both huge below
        var base2 = RegionMapping(virtualStart: mb2, kind: .base, hugeKind: nil, physicalStart: nil, presentPages: 10)
        base2.frames = [mb2, 2 * mb2]  // 4 MiB is base below
        let huge = RegionMapping(virtualStart: 2 * mb2, kind: .huge, hugeKind: .thp, physicalStart: mb2, presentPages: 512)
        let l1 = LowerLayer(
            name: "L1", translate: { 0x1000_0000 + $0 },
            regions: [
                RegionMapping(virtualStart: 0x1000_0000, kind: .huge, hugeKind: .thp, physicalStart: 9 * mb2, presentPages: 512),
                RegionMapping(
                    virtualStart: 0x1000_0000 + mb2, kind: .huge, hugeKind: .hugetlb, physicalStart: 8 * mb2, presentPages: 512),
                RegionMapping(
                    virtualStart: 0x1000_0000 + 2 * mb2, kind: .base, hugeKind: nil, physicalStart: nil, presentPages: 512),
            ])
        let host = LowerLayer(name: "host", translate: { $0 }, regions: [])
        // Page-table pages: two in [0, 2 MiB) (huge in L1), one in [4, 6 MiB) (base in L1).
        let r = CrossLayer.follow(
            guest: [base1, base2, huge], guestLayer: "L2", below: [l1, host], pageTableFrames: [1, 2, 1024 + 5])
        #expect(r.baseOverHuge == 1)
        #expect(r.backed == [1, 0])
        #expect(r.pageTables == 3 && r.pageTablesBacked == [2, 0])
        #expect(
            Set(CrossLayer.framesToTranslate(guest: [base1, base2, huge], pageTableFrames: [1, 1024 + 5]))
                == [0, mb2, 2 * mb2])
        let m = Dictionary(uniqueKeysWithValues: CrossLayer.metrics(r, when: "t").map { ($0.name, $0) })
        #expect(m["align.misaligned.host_huge"]?.value == 1.0 / 3.0)
        #expect(m["align.pgtable_backed.L1"]?.value == 2.0 / 3.0)
        #expect(m["align.pgtable_backed.host"]?.value == 0)
        #expect(m["align.pgtable_backed.L1"]?.detail?.contains("whole guest") == true)
        // The unavailable form has the same names.
        let none = CrossLayer.unavailable(guestLayer: "L2", layers: ["L1", "host"], pageTables: true, reason: "x")
        #expect(Set(none.map(\.name)) == Set(m.keys).subtracting(["align.huge.L2"]))
    }

    @Test func kvmCountsAreWholeVMAndNamedForTheirVM() {
        let text = "1234-11 pages_4k 100\n1234-11 pages_2m 7\n1234-11 pages_1g 0\n99-3 pages_4k 5\n"
        #expect(KVMPageCounts.counts(text, qemuPID: 1234) == ["pages_4k": 100, "pages_2m": 7, "pages_1g": 0])
        #expect(KVMPageCounts.counts(text, qemuPID: 12) == nil)
        let m = KVMPageCounts.metrics(vm: "L1", in: "L0", qemuPID: 1234, text: .success(text))
        #expect(m.map(\.name) == ["align.kvm.L1.pages_4k", "align.kvm.L1.pages_2m", "align.kvm.L1.pages_1g"])
        #expect(m.allSatisfy { $0.detail?.contains("whole-VM") == true })
        let tcg = KVMPageCounts.metrics(vm: "L0", in: "host", qemuPID: 5, text: .success(text))
        #expect(tcg.allSatisfy { $0.value == nil && $0.unavailable?.contains("not a KVM guest") == true })
        let noDebugfs = KVMPageCounts.metrics(
            vm: "L2", in: "L1", qemuPID: 5, text: .failure(AlignmentUnavailable("kvm: /sys/kernel/debug/kvm: No such file")))
        #expect(noDebugfs.allSatisfy { $0.unavailable?.contains("No such file") == true })
    }

    @Test func regionStartsAreProbedWhateverTheirMapping() throws {
        // A shared mapping (a memfd-backed guest RAM) is not probed as a process's memory, but by its starts it is.
        let maps = "00400000-00800000 rw-s 00000000 00:01 77 /memfd:ram0 (deleted)\n"
        var pagemap = [UInt64](repeating: 0, count: 1024)
        for i in 0..<512 { pagemap[i] = (1 << 63) | UInt64(1024 + i) }
        let pagemapStart = UInt64(0x400000 / 4096 * 8)
        var flags = [UInt64](repeating: (1 << 16) | (1 << 17), count: 512)
        flags[0] = (1 << 15) | (1 << 17)
        let s = try PageSnapshot.parse(
            Self.file([
                ("maps", 0, Array(maps.utf8)), ("pagemap", pagemapStart, Self.words(pagemap)),
                ("kpageflags", 1024 * 8, Self.words(flags)),
            ]), pid: 9, origin: "L1")
        let probe = AlignmentProbe(files: s)
        #expect(try probe.probe(pid: 9).regions.isEmpty)
        let byStart = try probe.probe(pid: 9, regionStarts: [0x400000, 0x600000])
        #expect(byStart.regions.map(\.kind) == [.huge, .notPresent])
        #expect(byStart.regions.first?.hugeKind == .hugetlb && byStart.regions.first?.physicalStart == 1024 * 4096)
    }
}
