// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "NestBench",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "nestbench", targets: ["nestbench"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/ordo-one/TextTable", from: "0.0.2"),
        .package(url: "https://github.com/yaslab/CSV.swift", from: "2.5.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
    ],
    targets: [
        // C shim for what Swift cannot do safely: fork + gated exec with affinity and process group.
        .target(name: "CProcess"),
        // C shim owning the libpfm4 + perf_event headers (perf_event_open, ioctls); links libpfm by name.
        .target(name: "CPerfmon", linkerSettings: [.linkedLibrary("pfm")]),
        // C kernel of the lats.bin scan: AVX2 when the CPU has it (chosen at run time), branch-free scalar otherwise.
        .target(name: "CLats"),
        // Pure value types: experiments, configurations, workloads, runs, metrics. Imports nothing of ours.
        .target(name: "NestBenchModel"),
        // Pure statistics: descriptive stats, Welch t, ratio CIs, geometric means.
        .target(name: "NestBenchStats"),
        // Experiment files (YAML) -> validated model -> randomized interleaved plan.
        .target(
            name: "NestBenchConfig",
            dependencies: ["NestBenchModel", "Yams", .product(name: "Crypto", package: "swift-crypto")]),
        // Spawning measured processes: pinning, gating, timeouts, process-group reaping, rusage.
        .target(
            name: "NestBenchProcess",
            dependencies: [
                "CProcess", "NestBenchModel", .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        // Cross-layer huge-page alignment: /proc/PID/maps + pagemap + kpageflags → per-2 MiB-region verdicts (pure parsing apart from the I/O).
        .target(name: "NestBenchAlignment", dependencies: ["NestBenchModel"]),
        // Collectors: procfs parsers (buddyinfo/FMFI, vmstat, smaps), perf counters, machine description.
        .target(
            name: "NestBenchCollectors",
            dependencies: [
                "CPerfmon", "NestBenchModel", "NestBenchProcess", "NestBenchAlignment",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Places where work runs (this machine; providers for other platforms), knobs with a crash-safe journal.
        .target(
            name: "NestBenchPlatforms",
            dependencies: [
                "NestBenchModel", "NestBenchProcess", "NestBenchCollectors", .product(name: "Logging", package: "swift-log"),
            ]),
        // QEMU/KVM stacks: command-line builder, QMP client, guest images and agent, stack boot, the qemu platform.
        .target(
            name: "NestBenchVM",
            dependencies: [
                "CProcess", "NestBenchModel", "NestBenchProcess", "NestBenchCollectors", "NestBenchAlignment",
                "NestBenchPlatforms", .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        // Workload adapters: the built-in microbenchmarks (Harness/), Tailbench and PARSEC (Suites/*.yaml), lats.bin analysis, input fetching.
        .target(
            name: "NestBenchWorkloads",
            dependencies: [
                "CLats", "NestBenchModel", "NestBenchProcess", "NestBenchCollectors", "NestBenchStats",
                .product(name: "Logging", package: "swift-log"), .product(name: "Crypto", package: "swift-crypto"),
                "Yams",
            ]),
        // Fragmentation injection: drives Harness/fragment/nb-fragment.c to a target FMFI, holds and verifies it.
        .target(
            name: "NestBenchFragmentation",
            dependencies: [
                "NestBenchModel", "NestBenchProcess", "NestBenchCollectors", "NestBenchPlatforms", "NestBenchStats",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The SQLite store (GRDB): experiment runs, measured runs, metrics.
        .target(
            name: "NestBenchStore",
            dependencies: ["NestBenchModel", .product(name: "GRDB", package: "GRDB.swift")]),
        // Slurm: the job scripts of a sharded campaign (a job array and a merge job), quoting, sbatch submission.
        .target(name: "NestBenchCluster", dependencies: ["NestBenchProcess"]),
        // Analysis: comparisons against the baseline (by the metrics' declarations) and report rendering (table, markdown, JSON, CSV).
        .target(
            name: "NestBenchAnalysis",
            dependencies: [
                "NestBenchModel", "NestBenchStats", "TextTable", "Yams", .product(name: "CSV", package: "CSV.swift"),
                .product(name: "OrderedCollections", package: "swift-collections"),
            ]),
        // Orchestration: executes a plan on a platform, collects, stores each run as it ends.
        .target(
            name: "NestBenchOrchestrator",
            dependencies: [
                "NestBenchModel", "NestBenchConfig", "NestBenchProcess", "NestBenchCollectors",
                "NestBenchPlatforms", "NestBenchWorkloads", "NestBenchStore", "NestBenchAnalysis",
                "NestBenchFragmentation", "NestBenchVM", .product(name: "Logging", package: "swift-log"),
            ]),
        // Builds GitInfo.swift (the commit NestBench is built from) before every build.
        .plugin(name: "BuildInfoPlugin", capability: .buildTool()),
        // The commit and version of this build, for `--version` and the runs' automatic tags.
        .target(name: "NestBenchBuildInfo", plugins: ["BuildInfoPlugin"]),
        // The commands: the only module that imports ArgumentParser and writes to stdout.
        .target(
            name: "NestBenchCLI",
            dependencies: [
                "NestBenchBuildInfo", "NestBenchOrchestrator", "NestBenchConfig", "NestBenchStore", "NestBenchAnalysis",
                "NestBenchCollectors", "NestBenchPlatforms", "NestBenchWorkloads", "NestBenchFragmentation", "NestBenchVM",
                "NestBenchAlignment", "NestBenchCluster", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The executable: a stub that calls the root command.
        .executableTarget(name: "nestbench", dependencies: ["NestBenchCLI"]),
        // Benchmarks run by `make bench`: each prints its measurement and the ratio to a reference run in the same process.
        .executableTarget(
            name: "nestbench-bench",
            dependencies: [
                "NestBenchModel", "NestBenchStats", "NestBenchCollectors", "NestBenchWorkloads", "NestBenchStore",
                "NestBenchAnalysis", "NestBenchProcess", "NestBenchFragmentation", "NestBenchPlatforms", "NestBenchAlignment",
            ]),

        // Parsers fed arbitrary bytes: `make fuzz` (nestbench-fuzz) and the regression corpus in CoreTests.
        .target(
            name: "NestBenchFuzz",
            dependencies: [
                "NestBenchModel", "NestBenchConfig", "NestBenchCollectors", "NestBenchWorkloads", "NestBenchStore",
            ]),
        .executableTarget(name: "nestbench-fuzz", dependencies: ["NestBenchFuzz"]),

        // What more than one test target needs (the machine-state lock of the tests).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "StatsTests", dependencies: ["NestBenchStats"]),
        .testTarget(name: "ConfigTests", dependencies: ["NestBenchConfig", "NestBenchModel"]),
        .testTarget(
            name: "CoreTests",
            dependencies: [
                "NestBenchModel", "NestBenchStore", "NestBenchAnalysis", "NestBenchCollectors",
                "NestBenchPlatforms", "NestBenchProcess", "NestBenchWorkloads", "NestBenchOrchestrator",
                "NestBenchFragmentation", "NestBenchVM", "NestBenchConfig", "NestBenchAlignment", "NestBenchFuzz",
                "NestBenchCluster", "TestSupport",
            ],
            exclude: ["Transcripts"]),
        // The commands run in process (parse + run, stdout/stderr captured): no binary, no machine state.
        .testTarget(
            name: "CommandTests",
            dependencies: ["NestBenchCLI", "NestBenchStore", "NestBenchModel", "NestBenchAnalysis", "NestBenchCluster"]),
        // Runs the built binary; depending on the executable makes `swift build --build-tests` and
        // `swift test` (re)build it first. The tests refuse a binary older than the sources.
        .testTarget(name: "EndToEndTests", dependencies: ["nestbench", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
