import Foundation
import NestBenchCollectors
import NestBenchConfig
import NestBenchModel
import NestBenchStore
import NestBenchWorkloads

/// One parser fed arbitrary bytes. A target returns normally for any input: a result or a typed
/// error. A Swift runtime trap (overflow, bad conversion, out of range) is the bug it looks for.
/// `nestbench-fuzz` mutates inputs through these; CoreTests replays Tests/Corpus/<name>/ with them.
public struct FuzzTarget: Sendable {
    public var name: String
    /// Seed inputs (beside Tests/Corpus/<name>/): small valid examples to mutate.
    public var seeds: [[UInt8]]
    public var run: @Sendable ([UInt8]) -> Void

    public static let all: [FuzzTarget] = [yaml, lats, parsec, buddyinfo, importJSON, cpulist]

    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }

    /// Experiment YAML through the loader (no catalog: the workload adapters read suite files).
    public static let yaml = FuzzTarget(
        name: "yaml",
        seeds: [
            Array(
                """
                name: e
                baseline: a
                seed: 1
                configurations:
                  a: {host: {thp: {enabled: never}}}
                  b: {host: {thp: {enabled: always}, sysctl: {vm.swappiness: "10"}}}
                workloads:
                  - {name: random-access, suite: micro, params: {size: 64MiB}, cpus: "0-1", timeout: 10s}
                conditions:
                  clean: {compact: true}
                repetitions: {min: 3, max: 5, target_ci: 0.02}
                analysis: {alpha: 0.05}
                """.utf8)
        ],
        run: { bytes in
            guard let text = String(validating: bytes, as: UTF8.self) else { return }
            _ = try? ExperimentLoader.parse(text, file: "fuzz.yaml", environment: [:])
        })

    /// lats.bin: the first 3 bytes give a record count (up to 300,000, so the ≥ 100,000-record
    /// bracket path runs), the rest is repeated as the records' bytes.
    public static let lats = FuzzTarget(
        name: "lats",
        seeds: [
            [0x01, 0x86, 0xa0] + (0..<24).map { UInt8(truncatingIfNeeded: $0 * 37) },
            [0x01, 0x86, 0xa0] + [UInt8](repeating: 0xff, count: 8) + [UInt8](repeating: 0x7f, count: 16),
            // Small files (the histogram path) keep the run fast between bracket-path inputs.
            [0x00, 0x03, 0xe8] + (0..<48).map { UInt8(truncatingIfNeeded: $0 * 91) },
        ],
        run: { bytes in
            guard bytes.count > 3, bytes[0] | bytes[1] | bytes[2] != 0 else { return }
            // At most 120,000 records: past the 100,000 where the bracket path starts.
            let records = Swift.min(Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2]), 120_000)
            let pattern = Array(bytes[3...])
            var words = [UInt64](repeating: 0, count: records * 3)
            words.withUnsafeMutableBytes { raw in
                // The pattern, then doubling copies (a byte loop is slow in a debug build).
                let first = Swift.min(pattern.count, raw.count)
                pattern.withUnsafeBytes { p in raw.baseAddress!.copyMemory(from: p.baseAddress!, byteCount: first) }
                var filled = first
                while filled < raw.count {
                    let n = Swift.min(filled, raw.count - filled)
                    memmove(raw.baseAddress! + filled, raw.baseAddress!, n)
                    filled += n
                }
            }
            words.withUnsafeBufferPointer { buffer in
                _ = LatsFile.summarize(words: buffer, threads: 2)
            }
        })

    public static let parsec = FuzzTarget(
        name: "parsec",
        seeds: [
            Array(
                """
                [PARSEC] [========== Running benchmark parsec.streamcluster [1] ==========]
                [HOOKS] PARSEC Hooks Version 1.2
                [HOOKS] Entering ROI
                [HOOKS] Leaving ROI
                [HOOKS] Total time spent in ROI: 1.234s
                [HOOKS] Terminating
                """.utf8)
        ],
        run: { bytes in
            _ = ParsecLog.parse(String(decoding: bytes, as: UTF8.self))
        })

    public static let buddyinfo = FuzzTarget(
        name: "buddyinfo",
        seeds: [
            Array(
                """
                Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      2
                Node 0, zone    DMA32   1226    882    610    420    262    143     73     35     17     12    398
                Node 0, zone   Normal  43813  22411   9420   3021    980    422    182     87     40     23   2901
                """.utf8)
        ],
        run: { bytes in
            guard let buddy = try? Buddyinfo.parse(String(decoding: bytes, as: UTF8.self), path: "fuzz") else { return }
            for order in [0, 9, 10] { _ = FMFIReport(buddy, order: order, source: "fuzz") }
        })

    public static let importJSON = FuzzTarget(
        name: "import",
        seeds: [],
        run: { bytes in
            guard let bundle = try? RunExport.decoder().decode(RunExport.self, from: Data(bytes)) else { return }
            _ = bundle.problems
        })

    public static let cpulist = FuzzTarget(
        name: "cpulist",
        seeds: [Array("0-3,6".utf8), Array("0-2000000000".utf8)],
        run: { bytes in
            _ = CPUList.parse(String(decoding: bytes, as: UTF8.self))
        })
}
