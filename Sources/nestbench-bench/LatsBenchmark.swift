import Foundation
import NestBenchProcess
import NestBenchWorkloads

/// `nestbench lats` on a 10-million-request lats.bin (240 MB, generated here), against numpy
/// (np.fromfile + np.percentile + mean over the three columns, as parselats does) and against
/// `cat FILE > /dev/null` (reading the file once), all on the same page-cached file.
/// Targets: at least 5x faster than numpy, within 3x of cat. NestBench and numpy are timed in
/// process (the analysis itself); cat as the command, its start-up included.
enum LatsBenchmark {
    static func run() async throws {
        let dir = NSTemporaryDirectory() + "nestbench-bench-lats-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/lats.bin"
        let n = 10_000_000
        // Queue, service, sojourn in ns: exponential-ish service around 200 us, heavy-tailed queueing.
        var words = [UInt64](repeating: 0, count: 3 * n)
        var state: UInt64 = 0x1234_5678
        for i in 0..<n {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let u = Double(state >> 11) / 9_007_199_254_740_992.0
            let service = UInt64(200_000 * -log(1 - u * 0.999_999)) + 1000
            let queue = (state >> 40) % 7 == 0 ? UInt64(Double(state >> 44) * 3.7) : 0
            words[3 * i] = queue.littleEndian
            words[3 * i + 1] = service.littleEndian
            words[3 * i + 2] = (queue + service).littleEndian
        }
        try words.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: path)) }
        words = []
        print("file: \(path), \(n) records, \(n * 24 / 1_000_000) MB")

        let env = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        func timed(_ spec: ProcessSpec) async throws -> Double {
            let outcome = try await ProcessRunner.run(spec)
            guard outcome.succeeded else { throw FetchError("\(spec.program) failed: \(outcome.describe(timeout: nil))") }
            return outcome.wallSeconds
        }
        let cat = ProcessSpec(program: "cat", arguments: [path], environment: env, stdoutPath: "/dev/null", timeoutSeconds: 120)
        _ = try await timed(cat)  // into the page cache
        var catTimes: [Double] = []
        for _ in 0..<9 { catTimes.append(try await timed(cat)) }

        var ours: [Double] = []
        var summary: LatsSummary?
        for _ in 0..<9 {
            let start = ContinuousClock.now
            summary = try LatsFile.analyze(path: path)
            ours.append((ContinuousClock.now - start).seconds)
        }

        let script = """
            import numpy as np, sys, time
            t = time.perf_counter()
            a = np.fromfile(sys.argv[1], dtype='<u8').reshape(-1, 3)
            r = [(a[:, c].mean(), np.percentile(a[:, c], [50, 95, 99]), a[:, c].max()) for c in (0, 1, 2)]
            print(time.perf_counter() - t)
            print(r[2][1][2] / 1e6)
            """
        var numpyTimes: [Double] = []
        var numpyP99 = ""
        let out = dir + "/numpy.out"
        for _ in 0..<3 {
            _ = try await timed(
                ProcessSpec(
                    program: "python3", arguments: ["-c", script, path], environment: env, stdoutPath: out,
                    stderrPath: dir + "/numpy.err", timeoutSeconds: 300))
            let lines = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n")
            numpyTimes.append(Double(lines[0])!)
            numpyP99 = String(lines[1])
        }
        let s = summary!
        print(String(format: "sojourn p99: nestbench %.6f ms, numpy %@ ms", s.sojourn.p99, numpyP99))
        print(describe("cat FILE > /dev/null (reference)", catTimes))
        print(describe("numpy fromfile + percentile + mean, in-process time (reference)", numpyTimes))
        print(describe("nestbench lats (LatsFile.analyze)", ours))
        let vsNumpy = median(numpyTimes) / median(ours)
        let vsCat = median(ours) / median(catTimes)
        print(String(format: "speed-up over numpy: %.1fx (target >= 5x)", vsNumpy))
        print(String(format: "time relative to cat: %.2fx (target <= 3x)", vsCat))
    }
}
