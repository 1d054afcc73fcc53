import Foundation

/// `nestbench-bench [NAME...]`: runs the named benchmarks (all when none are named).
/// Each benchmark measures NestBench against a reference measured in the same run and prints the
/// ratio, so results are comparable across machines. Register new ones in `Benchmarks.all`.
enum Benchmarks {
    static let all: [(name: String, run: @Sendable () async throws -> Void)] = [
        ("fmfi-parse", FMFIParseBenchmark.run),
        ("fragment", FragmentBenchmark.run),
        ("collectors", CollectorsBenchmark.run),
        ("lats", LatsBenchmark.run),
        ("analysis-10k-runs", AnalysisBenchmark.run),
        ("alignment", AlignmentBenchmark.run),
        ("validity", ValidityBenchmark.run),
    ]
}

let requested = Set(CommandLine.arguments.dropFirst())
let unknown = requested.subtracting(Benchmarks.all.map(\.name))
if !unknown.isEmpty {
    FileHandle.standardError.write(
        Data(
            "unknown benchmark(s): \(unknown.sorted().joined(separator: ", ")); known: \(Benchmarks.all.map(\.name).joined(separator: ", "))\n"
                .utf8))
    exit(64)
}
for benchmark in Benchmarks.all where requested.isEmpty || requested.contains(benchmark.name) {
    print("== \(benchmark.name)")
    do {
        try await benchmark.run()
    } catch {
        print("\(benchmark.name): failed: \(error)")
        exit(1)
    }
}
