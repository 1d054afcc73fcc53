import Foundation
import NestBenchAlignment
import NestBenchCollectors
import NestBenchModel
import NestBenchProcess
import NestBenchWorkloads

/// The alignment probe: one pass over a 4 GiB buffer of this process (THP-advised, then
/// MADV_NOHUGEPAGE) against reading the same pagemap range with `dd` and with one `pread` loop in
/// the same run; target < 1 s per layer per 4 GiB. Then its perturbation of the micro (probe on vs
/// off in interleaved pairs, like the collectors benchmark): the probe runs while the micro is
/// stopped after its measured phase, so the target is that ops/s does not move (< 1%). Last, the
/// same pairs with the opt-in timeline (`collectors.alignment.interval`, 250 ms) on, which probes the
/// running micro: its measured cost, and its probes and probing time per run.
enum AlignmentBenchmark {
    static let size: UInt64 = 4 << 30

    static func run() async throws {
        guard getuid() == 0 else {
            print("alignment: unavailable: the probe needs root (pagemap shows PFNs only with CAP_SYS_ADMIN)")
            return
        }
        for advice in [("MADV_HUGEPAGE", MADV_HUGEPAGE), ("MADV_NOHUGEPAGE", MADV_NOHUGEPAGE)] {
            try await probePass(adviceName: advice.0, advice: advice.1)
        }
        try await perturbation()
        try await perturbation(timelineMillis: 250)
    }

    static func probePass(adviceName: String, advice: Int32) async throws {
        let length = Int(size) + (2 << 20)
        guard let raw = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED
        else { throw BenchmarkFailure(message: "mmap of 4 GiB failed: \(String(cString: strerror(errno)))") }
        defer { munmap(raw, length) }
        let aligned = (UInt(bitPattern: raw) + (2 << 20) - 1) & ~UInt((2 << 20) - 1)
        let base = UnsafeMutableRawPointer(bitPattern: aligned)!
        _ = madvise(base, Int(size), advice)
        for offset in stride(from: 0, to: Int(size), by: 4096) { base.storeBytes(of: 1, toByteOffset: offset, as: UInt8.self) }

        let pid = getpid()
        let probe = AlignmentProbe()
        var last: ProcessAlignment?
        let probeTimes = try measure(iterations: 5) { last = try probe.probe(pid: pid) }
        let offset = UInt64(aligned) / 4096 * 8
        let bytes = Int(size / 4096 * 8)
        // Reference 1: dd over the same pagemap range (a process start included, as a user would run it).
        let ddTimes = try await measureAsync(iterations: 5) {
            let outcome = try await ProcessRunner.run(
                ProcessSpec(
                    program: "dd",
                    arguments: [
                        "if=/proc/\(pid)/pagemap", "of=/dev/null", "bs=8M", "iflag=skip_bytes,count_bytes", "skip=\(offset)",
                        "count=\(bytes)", "status=none",
                    ], environment: ["PATH": "/usr/bin:/bin"], timeoutSeconds: 60))
            guard outcome.succeeded else { throw BenchmarkFailure(message: "dd failed: \(outcome.describe(timeout: 60))") }
        }
        // Reference 2: the same range with 8 MiB preads in this process (no process start).
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 << 20, alignment: 8)
        defer { buffer.deallocate() }
        let fd = open("/proc/\(pid)/pagemap", O_RDONLY)
        defer { close(fd) }
        let preadTimes = measure(iterations: 5) {
            var done = 0
            while done < bytes {
                let n = pread(fd, buffer.baseAddress, min(buffer.count, bytes - done), off_t(offset) + off_t(done))
                if n <= 0 { break }
                done += n
            }
        }
        let s = last!.summary
        print(
            "\(adviceName) 4 GiB buffer: \(s.present) present regions, \(s.huge) huge (\(s.hugeTHP) THP), \(s.base) base; "
                + "read \(last!.pagemapBytes) B pagemap + \(last!.kpageflagsBytes) B kpageflags per pass")
        print(describe("probe pass (maps + pagemap + kpageflags + classification)", probeTimes))
        print(describe("dd of the same pagemap range (reference)", ddTimes))
        print(describe("8 MiB preads of the same pagemap range (reference)", preadTimes))
        print(
            String(
                format: "ratio to dd: %.2fx; to pread: %.2fx; target < 1 s per layer per 4 GiB: %@",
                median(probeTimes) / median(ddTimes),
                median(probeTimes) / median(preadTimes), median(probeTimes) < 1 ? "met" : "NOT met"))
    }

    /// The probe's effect on the micro's throughput, paired on vs off: once at the end of the
    /// measured phase, or with `timelineMillis` also every that many ms while it runs (the timeline).
    static func perturbation(timelineMillis: Int? = nil) async throws {
        let binary = try await HarnessLocator().program("micro/nb-micro.c", name: "nb-micro")
        let dir = NSTemporaryDirectory() + "nestbench-bench-align-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let collector = AlignmentCollector(intervalMillis: timelineMillis)
        let label =
            timelineMillis.map { "random-access (alignment timeline every \($0) ms)" } ?? "random-access (alignment probe)"
        let spec = WorkloadSpec(
            suite: "micro", name: "random-access", params: ["size": "256MiB", "ops": "20000000", "thp": "huge"])
        var heldProbes: [Double] = []
        var timelineProbes: [Double] = []
        var timelineSeconds: [Double] = []
        try await CollectorsBenchmark.perturbation(of: label, pairs: 20) { on in
            let process = ProcessSpec(
                program: binary, arguments: MicroAdapter.arguments(for: spec),
                environment: ["PATH": "/usr/bin:/bin"].merging(on ? collector.environment : [:]) { $1 },
                workingDirectory: dir, cpus: [0], stdoutPath: dir + "/out", timeoutSeconds: 120)
            let child = try ProcessRunner.start(process)
            let session = on ? collector.attach(pid: child.pid) : nil
            try child.release()
            session?.started()
            let outcome = await child.wait()
            if let session {
                let (metrics, _) = session.finish(outcome)
                guard let seconds = metrics.first(where: { $0.name == "align.probe_seconds" })?.value else {
                    throw BenchmarkFailure(
                        message: "probe unavailable: \(metrics.first?.unavailable ?? "no metrics")")
                }
                heldProbes.append(seconds)
                if timelineMillis != nil {
                    guard let n = metrics.first(where: { $0.name == "align.timeline_probes" })?.value,
                        let s = metrics.first(where: { $0.name == "align.timeline_probe_seconds" })?.value
                    else { throw BenchmarkFailure(message: "the timeline's metrics are missing") }
                    timelineProbes.append(n)
                    timelineSeconds.append(s)
                }
            }
            let text = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
            guard outcome.succeeded,
                let ops = MetricLines.parse(text, source: "bench").first(where: { $0.name == "ops_per_sec" })?.value
            else { throw BenchmarkFailure(message: "nb-micro failed: \(outcome.describe(timeout: 120))") }
            return ops
        }
        print(describe("probe of the stopped 256 MiB micro (once per run, at the end of its measured phase)", heldProbes))
        if let timelineMillis {
            print(
                String(
                    format: "alignment timeline every %d ms: %.1f probes per run (median), %.4f s of probing per run (median)",
                    timelineMillis, median(timelineProbes), median(timelineSeconds)))
        }
    }
}

/// `measure` for async bodies.
func measureAsync(iterations: Int, _ body: () async throws -> Void) async rethrows -> [Double] {
    try await body()
    var times: [Double] = []
    for _ in 0..<iterations {
        let start = ContinuousClock.now
        try await body()
        let (s, atto) = (ContinuousClock.now - start).components
        times.append(Double(s) + Double(atto) / 1e18)
    }
    return times
}
