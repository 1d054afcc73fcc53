import Foundation
import NestBenchProcess
import NestBenchWorkloads
import Testing

@Suite struct LatsFileTests {
    static let runs = ["masstree-integrated-qps200", "masstree-integrated-qps1000", "silo-integrated-qps2000"]

    /// parselats.py's own output for the same file is the reference (see ../shared/README.md).
    @Test(.enabled(if: Fixtures.available, "needs ../shared/fixtures"), arguments: runs)
    func matchesParselats(run: String) throws {
        let summary = try LatsFile.analyze(path: Fixtures.path("tailbench/\(run)/lats.bin"))
        let line = try Fixtures.text("tailbench/\(run)/parselats.out").trimmingCharacters(in: .whitespacesAndNewlines)
        let fields = line.split(separator: " ")
        // "95th percentile latency <p95> ms | max latency <max> ms"
        let p95 = String(fields[3])
        let max = String(fields[8])
        #expect(String(format: "%.3f", summary.sojourn.p95) == p95)
        #expect(String(format: "%.3f", summary.sojourn.max) == max)
        let size = try FileManager.default.attributesOfItem(atPath: Fixtures.path("tailbench/\(run)/lats.bin"))[.size] as! Int
        #expect(summary.requests == size / 24)
        #expect(summary.sojourn.p50 <= summary.sojourn.p95 && summary.sojourn.p95 <= summary.sojourn.p99)
        #expect(summary.sojourn.p99 <= summary.sojourn.max)
    }

    /// Exact percentiles: the same as sorting everything and interpolating linearly (numpy's
    /// default), for spread, tied and huge values, with one and several threads.
    /// `misleadingSample` puts values outside the sampled blocks far from those inside them, so
    /// the one-pass brackets miss and the histogram fallback must still be exact.
    @Test(arguments: [
        (1, LatsFile.Method.automatic, false), (3, .automatic, false), (2, .histogram, false), (2, .automatic, true),
    ])
    func exactAgainstFullSort(threads: Int, method: LatsFile.Method, misleadingSample: Bool) throws {
        var rng = SplitMix(seed: 7)
        let n = 200_001
        var words: [UInt64] = []
        for i in 0..<n {
            let q = i % 7 == 0 ? rng.next() % 1_000_000 : 0  // mostly zeros, as under light load
            let s = i % 3 == 0 ? 42 : rng.next() % 50_000_000_000  // many ties, and values > 2^32
            var j = i == 5 ? UInt64.max - 1 : (rng.next() >> 20)  // one huge value, wide range
            if misleadingSample && i % (n / 64) >= 256 { j = 1 << 60 | rng.next() % 1000 }
            words += [q, s, j]
        }
        let summary = words.withUnsafeBufferPointer { LatsFile.summarize(words: $0, threads: threads, method: method) }
        for (column, got) in [(0, summary.queue), (1, summary.service), (2, summary.sojourn)] {
            let sorted = stride(from: column, to: words.count, by: 3).map { words[$0] }.sorted().map { Double($0) / 1e6 }
            func pct(_ p: Double) -> Double {
                let rank = p / 100 * Double(n - 1)
                let lo = Int(rank.rounded(.down))
                let t = rank - Double(lo)
                let a = sorted[lo]
                let b = sorted[Swift.min(lo + 1, n - 1)]
                return t >= 0.5 ? b - (b - a) * (1 - t) : a + (b - a) * t
            }
            #expect(got.p50 == pct(50))
            #expect(got.p95 == pct(95))
            #expect(got.p99 == pct(99))
            #expect(got.max == sorted.last!)
            let exactMean = sorted.reduce(0, +) / Double(n)
            #expect(abs(got.mean - exactMean) <= 1e-9 * Swift.max(1, exactMean))
        }
    }

    @Test func singleRecord() throws {
        let words: [UInt64] = [1_000_000, 2_000_000, 3_000_000]
        let s = words.withUnsafeBufferPointer { LatsFile.summarize(words: $0) }
        #expect(s.requests == 1)
        #expect(s.sojourn.p99 == 3 && s.sojourn.max == 3 && s.queue.mean == 1 && s.service.p50 == 2)
    }

    @Test func truncatedFileNamesTheFile() throws {
        let dir = Fixtures.temporaryDirectory()
        let path = dir + "/lats.bin"
        _ = FileManager.default.createFile(atPath: path, contents: Data(count: 24 * 3 + 5))
        #expect {
            _ = try LatsFile.analyze(path: path)
        } throws: { error in
            let e = error as! LatsError
            return e.code == .truncated && e.description.hasPrefix(path) && e.description.contains("24-byte")
        }
    }

    @Test func emptyAndMissingFiles() throws {
        let dir = Fixtures.temporaryDirectory()
        let path = dir + "/lats.bin"
        _ = FileManager.default.createFile(atPath: path, contents: Data())
        #expect(throws: LatsError.self) { _ = try LatsFile.analyze(path: path) }
        do {
            _ = try LatsFile.analyze(path: path)
        } catch {
            #expect(error.code == .empty && error.description.contains(path))
        }
        do {
            _ = try LatsFile.analyze(path: dir + "/nope.bin")
            Issue.record("a missing file must fail")
        } catch {
            #expect(error.code == .unreadable && error.description.contains("nope.bin"))
        }
    }

    /// The same file through numpy (np.fromfile + np.percentile + mean), when numpy is installed.
    @Test(.enabled(if: NumpyProbe.available, "needs python3 with numpy (python3-numpy)"), .timeLimit(.minutes(1)))
    func agreesWithNumpy() async throws {
        let dir = Fixtures.temporaryDirectory()
        let path = dir + "/lats.bin"
        var rng = SplitMix(seed: 99)
        var words: [UInt64] = []
        for _ in 0..<30_001 { words += [rng.next() % 10_000_000, rng.next() % 3_000_000, rng.next() % 90_000_000] }
        try words.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: path)) }
        let summary = try LatsFile.analyze(path: path)
        let script = """
            import numpy as np, sys
            a = np.fromfile(sys.argv[1], dtype='<u8').reshape(-1, 3) / 1e6
            for c in (2, 1, 0):
                print(repr(float(a[:, c].mean())), *[repr(float(np.percentile(a[:, c], p))) for p in (50, 95, 99)], repr(float(a[:, c].max())))
            """
        let out = dir + "/numpy.txt"
        let outcome = try await ProcessRunner.run(
            ProcessSpec(
                program: "python3", arguments: ["-c", script, path], environment: ["PATH": "/usr/bin:/bin"],
                stdoutPath: out, stderrPath: dir + "/numpy.err", timeoutSeconds: 50))
        #expect(outcome.succeeded)
        let lines = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n")
        for (line, column) in zip(lines, [summary.sojourn, summary.service, summary.queue]) {
            let v = line.split(separator: " ").map { Double($0)! }
            #expect(abs(v[0] - column.mean) <= 1e-9 * v[0])
            #expect(v[1] == column.p50)
            #expect(v[2] == column.p95)
            #expect(v[3] == column.p99)
            #expect(v[4] == column.max)
        }
    }
}

enum NumpyProbe {
    static let available: Bool = {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", "import numpy"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }()
}

/// A small deterministic generator for test data.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct ParsecLogTests {
    /// parsecmgmt 3.0 given PARSECPLAT=amd64-linux.gcc-hooks and -c gcc-hooks looks under
    /// inst/amd64-linux.gcc-hooks.gcc-hooks: its error is the reason, not the build's ROI line.
    @Test func parsecmgmtErrorIsTheReason() {
        let log = """
            [PARSEC] Benchmarks to run:  parsec.canneal

            [PARSEC] [========== Running benchmark parsec.canneal [1] ==========]
            [PARSEC] Error: Binary '/opt/parsec-3.0/pkgs/kernels/canneal/inst/amd64-linux.gcc-hooks.gcc-hooks/bin/canneal' of package 'parsec.canneal' cannot be found.
            """
        let r = ParsecLog.parse(log)
        #expect(r.count == 1 && r[0].seconds == nil)
        #expect(r[0].failure?.contains("parsecmgmt did not run the program") == true)
        #expect(r[0].failure?.contains("amd64-linux.gcc-hooks.gcc-hooks") == true)
        #expect(r[0].failure?.contains("does not print it") == false)
    }

    @Test func roiResolutionIsThePrintedDecimals() {
        let three = ParsecLog.parse("[HOOKS] Entering ROI\n[HOOKS] Leaving ROI\n[HOOKS] Total time spent in ROI: 0.035s\n")
        #expect(three[0].resolution == 0.001 && three[0].resolutionWarning != nil)
        let six = ParsecLog.parse("[HOOKS] Total time spent in ROI: 2.387000s\n")
        #expect(six[0].resolution == 1e-6 && six[0].resolutionWarning == nil)
    }

    @Test(.enabled(if: Fixtures.available, "needs ../shared/fixtures"))
    func streamclusterROI() throws {
        let results = ParsecLog.parse(try Fixtures.text("parsec/streamcluster-simsmall-n2.log"))
        #expect(results.count == 1)
        #expect(results[0].benchmark == "parsec.streamcluster")
        #expect(results[0].seconds == 2.387)
        #expect(results[0].succeeded)
    }

    @Test(
        .enabled(if: Fixtures.available, "needs ../shared/fixtures"),
        arguments: ["canneal-simsmall-missing-input.log", "facesim-test-crash.log", "x264-simdev-crash.log"])
    func crashLogsFail(log: String) throws {
        let results = ParsecLog.parse(try Fixtures.text("parsec/\(log)"))
        #expect(results.count == 1)
        #expect(!results[0].succeeded)
        #expect(results[0].seconds == nil)
        #expect(results[0].failure?.contains("no ROI time: the program crashed") == true)
    }

    @Test(.enabled(if: Fixtures.available, "needs ../shared/fixtures"))
    func splash2xPrintsNoROI() throws {
        let results = ParsecLog.parse(try Fixtures.text("parsec/splash2x-fft-simsmall-n2.log"))
        #expect(results.count == 1)
        #expect(results[0].seconds == nil)
        #expect(results[0].failure?.contains("does not print it") == true)
    }

    /// Two benchmarks in one log; canneal's 0.000s is below the resolution, not a zero throughput.
    @Test(.enabled(if: Fixtures.available, "needs ../shared/fixtures"))
    func twoBenchmarksInOneLog() throws {
        let results = ParsecLog.parse(try Fixtures.text("parsec/canneal-streamcluster-simdev-n2.log"))
        #expect(results.map(\.benchmark) == ["parsec.canneal", "parsec.streamcluster"])
        #expect(!results[0].succeeded)
        #expect(results[0].failure?.contains("resolution") == true)
        #expect(results[1].seconds == 0.012)
    }

    @Test(arguments: [
        ("[HOOKS] Total time spent in ROI: 1.234567s", 1.234567), ("[HOOKS] Total time spent in ROI: 12s", 12.0),
        ("[HOOKS] Total time spent in ROI: 0.5s", 0.5),
    ])
    func anyNumberOfDecimals(line: String, seconds: Double) {
        let text = "[HOOKS] PARSEC Hooks Version 1.2\n[HOOKS] Entering ROI\n[HOOKS] Leaving ROI\n\(line)\n[HOOKS] Terminating\n"
        #expect(ParsecLog.parse(text).first?.seconds == seconds)
    }
}
