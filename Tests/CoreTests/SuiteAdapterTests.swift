import Foundation
import Logging
import NestBenchModel
import NestBenchProcess
import Testing

@testable import NestBenchWorkloads

/// The project's Suites/ and the fake apps under Tests/CoreTests/FakeApps.
enum SuitePaths {
    static let project: String = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { dir.deleteLastPathComponent() }
        return dir.path
    }()
    static let suites = project + "/Suites"
    static let fakeApps = project + "/Tests/FakeApps"

    static func locator(cache: String) -> SuiteLocator { SuiteLocator(directory: suites, cacheDirectory: cache) }

    /// A workload context that runs the measured process without collectors.
    static func context(runDirectory: String) -> WorkloadContext {
        try? FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        return WorkloadContext(
            runDirectory: runDirectory, logger: Logger(label: "test"),
            launchMeasured: { spec throws(ProcessError) in
                MeasuredOutcome(outcome: try await ProcessRunner.run(spec), metrics: [])
            },
            startHelper: { spec throws(ProcessError) in
                let child = try ProcessRunner.start(spec)
                try child.release()
                return child
            })
    }

    /// Compiles the fake Tailbench app once per test process.
    static let fakeTailbench: String? = {
        let out = NSTemporaryDirectory() + "nestbench-fake-tailbench-\(getpid())"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["cc", "-O2", "-o", out, fakeApps + "/fake_tailbench.c", "-lm"]
        do { try p.run() } catch { return nil }
        p.waitUntilExit()
        return p.terminationStatus == 0 ? out : nil
    }()

    /// Compiles the fake hooks library (libhooks.so.0) and the fake PARSEC program linked against
    /// it, once per test process: (library directory, program).
    static let fakeParsec: (library: String, program: String)? = {
        let dir = NSTemporaryDirectory() + "nestbench-fake-parsec-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        func cc(_ arguments: [String]) -> Bool {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["cc", "-O2"] + arguments
            do { try p.run() } catch { return false }
            p.waitUntilExit()
            return p.terminationStatus == 0
        }
        guard
            cc(["-shared", "-fPIC", "-Wl,-soname,libhooks.so.0", "-o", dir + "/libhooks.so.0", fakeApps + "/fake_hooks.c"]),
            (try? FileManager.default.createSymbolicLink(atPath: dir + "/libhooks.so", withDestinationPath: "libhooks.so.0"))
                != nil,
            cc(["-o", dir + "/program", fakeApps + "/fake_parsec.c", "-L" + dir, "-lhooks"])
        else { return nil }
        return (dir, dir + "/program")
    }()

    static func install(_ source: String, at path: String) throws {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: source, toPath: path)
        chmod(path, 0o755)
    }

    static func script(_ text: String, at path: String) throws {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
    }

    static func processExists(_ pid: Int32) -> Bool {
        if kill(pid, 0) != 0 { return false }
        // A zombie waiting for its reaper counts as gone.
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return !stat.contains(") Z ")
    }
}

@Suite struct SuiteFileTests {
    @Test func tailbenchCoversEveryApp() throws {
        let d = try SuiteDefinition.load(path: SuitePaths.suites + "/tailbench.yaml")
        #expect(
            Set(d.apps.keys) == ["img-dnn", "masstree", "moses", "silo", "specjbb", "sphinx", "xapian", "shore"])
        for (name, app) in d.apps {
            #expect(app.integrated != nil, "\(name) has an integrated binary")
            #expect(app.defaults?["qps"] != nil, "\(name) has its run.sh QPS")
        }
    }

    @Test func parsecCoversEveryAppAndSize() throws {
        let d = try SuiteDefinition.load(path: SuitePaths.suites + "/parsec.yaml")
        #expect(
            Set(d.apps.keys) == [
                "canneal", "facesim", "raytrace", "streamcluster", "dedup", "x264", "splash2x.fft", "ferret",
            ])
        for (name, app) in d.apps {
            for size in ["test", "simdev", "simsmall", "simmedium", "simlarge", "native"] {
                #expect(app.args.arguments(size: size) != nil, "\(name) \(size)")
            }
        }
    }

    /// The arguments are those parsecmgmt ran in the shared fixture logs.
    @Test(
        .enabled(if: Fixtures.available, "needs ../shared/fixtures"),
        arguments: [
            ("streamcluster", "simsmall", "streamcluster-simsmall-n2.log"),
            ("canneal", "simsmall", "canneal-simsmall-missing-input.log"),
            ("x264", "simdev", "x264-simdev-crash.log"), ("facesim", "test", "facesim-test-crash.log"),
            ("splash2x.fft", "simsmall", "splash2x-fft-simsmall-n2.log"),
        ])
    func argumentsMatchParsecmgmt(app: String, size: String, log: String) throws {
        let d = try SuiteDefinition.load(path: SuitePaths.suites + "/parsec.yaml")
        let entry = try #require(d.apps[app])
        let args = entry.args.arguments(size: size)!.map { Placeholders.expand($0, ["threads": "2", "size": size]) }
        let binary = "/opt/parsec-3.0/\(entry.dir)/inst/amd64-linux.gcc-hooks/\(entry.exec!)"
        let expected = "[PARSEC] Running 'time \(([binary] + args).joined(separator: " "))':"
        #expect(try Fixtures.text("parsec/\(log)").contains(expected))
    }
}

/// Which programs a context launched as the measured process.
final class LaunchLog: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func append(_ program: String) { lock.withLock { list.append(program) } }
    var programs: [String] { lock.withLock { list } }
}

@Suite(.serialized) struct TailbenchAdapterTests {
    let root = Fixtures.temporaryDirectory()

    /// A client whose place reported no usage (an older guest agent) gives the same metrics as a
    /// measured one, each unavailable with the reason: none is left out.
    @Test func clientMetricsWithoutUsageAreAllUnavailable() {
        let measured = TailbenchAdapter.clientMetrics(
            ProcessOutcome(
                pid: 1, exitStatus: 0, signal: nil, timedOut: false,
                usage: ResourceUsage(
                    minorFaults: 3, majorFaults: 0, userSeconds: 0.5, systemSeconds: 0.1, maxRSSKiB: 2,
                    voluntaryContextSwitches: 0, involuntaryContextSwitches: 0),
                wallSeconds: 1, argv: ["client"]))
        let missing = TailbenchAdapter.clientMetrics(nil)
        #expect(measured.count == 5 && measured.allSatisfy { $0.value != nil })
        #expect(missing.map(\.name) == measured.map(\.name))
        #expect(missing.map(\.unit) == measured.map(\.unit))
        #expect(missing.allSatisfy { $0.value == nil && $0.unavailable?.hasPrefix("unavailable: ") == true })
    }

    func adapter(env: [String: String] = [:]) throws -> TailbenchAdapter {
        let d = try SuiteDefinition.load(path: SuitePaths.suites + "/tailbench.yaml")
        return TailbenchAdapter(
            definition: d, locator: SuitePaths.locator(cache: root + "/cache"),
            environment: ["PATH": "/usr/bin:/bin", "TAILBENCH_ROOT": root].merging(env) { $1 })
    }

    func installFake() throws {
        let fake = try #require(SuitePaths.fakeTailbench, "cc must build the fake app")
        for name in ["mttest_integrated", "mttest_server_networked", "mttest_client_networked"] {
            try SuitePaths.install(fake, at: "\(root)/masstree/\(name)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func integratedRun() async throws {
        try installFake()
        let spec = WorkloadSpec(
            suite: "tailbench", name: "masstree",
            params: ["requests": "500", "qps": "1000", "seed": "9", "warmup_requests": "50"], cpus: [0],
            timeoutSeconds: 30, environment: ["FAKE_SERVICE_US": "200"])
        let run = root + "/run1"
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: run))
        #expect(result.status == .ok, "\(result.reason ?? "")")
        #expect(result.invocations.first?.cpus == [0])
        let env = try #require(result.invocations.first?.environment)
        for name in TailbenchAdapter.harnessVariables { #expect(env[name] != nil, "\(name) set") }
        #expect(env["TBENCH_MAXREQS"] == "500" && env["TBENCH_QPS"] == "1000" && env["TBENCH_RANDSEED"] == "9")
        #expect(result.invocations.first?.argv.suffix(3) == ["-j1", "mycsba", "masstree"])
        let stdout = try String(contentsOfFile: run + "/stdout.txt", encoding: .utf8)
        #expect(stdout.contains("TBENCH_NCLIENTS = 1"))
        // The metrics are lats.bin's, as `nestbench lats` computes them.
        let lats = try LatsFile.analyze(path: run + "/lats.bin")
        #expect(result.metrics.first { $0.name == "sojourn_max_ms" }?.value == lats.sojourn.max)
        #expect(result.metrics.first { $0.name == "requests" }?.value == 500)
        #expect(result.metrics.first { $0.name == "offered_qps" }?.value == 1000)
        #expect(!result.metrics.contains { $0.name == "throughput_rps" }, "no whole-process rate")
        #expect(result.metrics.contains { $0.name == "sojourn_p99_ms" })
        #expect(result.metrics.contains { $0.name == "queue_p95_ms" } && result.metrics.contains { $0.name == "service_mean_ms" })
    }

    /// The fake serves each request with 1 ms of CPU work: capacity is threads / mean service time
    /// of lats.bin (1000 req/s at most), whatever the offered load and the warm-up. The old metric,
    /// requests / wall time of the process, counted the paced warm-up and gave about offered/2
    /// (200 req/s here), halving again when the warm-up doubles. The bounds leave room for a loaded
    /// or virtualized machine, whose thread CPU clock can run over the spin (CI saw 13%).
    @Test(.timeLimit(.minutes(1)))
    func capacityIsTheKnownServiceRateWhateverTheWarmup() async throws {
        try installFake()
        for warmup in ["150", "300"] {
            let spec = WorkloadSpec(
                suite: "tailbench", name: "masstree",
                params: ["requests": "300", "qps": "400", "warmup_requests": warmup], timeoutSeconds: 30,
                environment: ["FAKE_SERVICE_US": "1000"])
            let run = root + "/cap\(warmup)"
            let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: run))
            #expect(result.status == .ok, "\(result.reason ?? "")")
            let capacity = try #require(result.metrics.first { $0.name == "capacity_rps" }?.value)
            let lats = try LatsFile.analyze(path: run + "/lats.bin")
            #expect(abs(capacity - 1 / (lats.service.mean / 1000)) < 1e-6, "capacity is 1 / mean service of lats.bin")
            #expect(capacity <= 1000 * 1.001, "capacity \(capacity) req/s: no request is served in under 1 ms")
            #expect(capacity > 600, "capacity \(capacity) req/s, warm-up \(warmup): not the process's wall-time rate")
        }
    }

    /// Loopback: the server is the measured process; the client's usage is kept under `client.`;
    /// the server ends on its own after its client, as the real harness server does.
    @Test(.timeLimit(.minutes(1)))
    func loopbackMeasuresTheServer() async throws {
        try installFake()
        let spec = WorkloadSpec(
            suite: "tailbench", name: "masstree",
            params: ["mode": "loopback", "requests": "300", "qps": "2000", "warmup_requests": "20"], cpus: [0],
            timeoutSeconds: 30, environment: ["FAKE_SERVICE_US": "100"])
        let run = root + "/run2"
        let launched = LaunchLog()
        let base = SuitePaths.context(runDirectory: run)
        let context = WorkloadContext(
            runDirectory: run, logger: base.logger,
            launchMeasured: { spec throws(ProcessError) in
                launched.append(spec.program)
                return try await base.launchMeasured(spec)
            }, startHelper: base.startHelper)
        let result = try await adapter().run(spec, context: context)
        #expect(result.status == .ok, "\(result.reason ?? "")")
        #expect(launched.programs.count == 1 && launched.programs.first?.hasSuffix("mttest_server_networked") == true)
        #expect(result.invocations.count == 2)
        let port = try #require(result.invocations.last?.environment["TBENCH_SERVER_PORT"])
        #expect(result.invocations.first?.argv.first?.hasSuffix("mttest_server_networked") == true)
        #expect(result.invocations.last?.argv.first?.hasSuffix("mttest_client_networked") == true)
        #expect(result.metrics.first { $0.name == "requests" }?.value == 300)
        #expect(result.metrics.contains { $0.name == "client.user_seconds" })
        #expect(result.metrics.contains { $0.name == "capacity_rps" })
        #expect(try String(contentsOfFile: run + "/server-stderr.txt", encoding: .utf8).contains("Server finishing"))
        // The server is gone: nothing listens on its port any more.
        #expect(!FileManager.default.fileExists(atPath: "/proc/net/tcp") || !Self.listening(Int(port)!))
    }

    /// A server that aborts after its client finished (silo's harness does, sending to the
    /// departed client): the measured requests are complete — ok, with a warning.
    @Test(.timeLimit(.minutes(1)))
    func serverAbortingAfterItsClientLeftIsAWarning() async throws {
        try installFake()
        let spec = WorkloadSpec(
            suite: "tailbench", name: "masstree",
            params: ["mode": "loopback", "requests": "100", "qps": "2000", "warmup_requests": "10"], timeoutSeconds: 30,
            environment: ["FAKE_MODE": "server-aborts-at-end"])
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: root + "/run9"))
        #expect(result.status == .ok, "\(result.reason ?? "")")
        #expect(result.signal == SIGABRT)
        #expect(result.provenance["warning.server_exit"]?.contains("after its client had finished") == true)
        #expect(result.metrics.first { $0.name == "requests" }?.value == 100)
    }

    @Test(.timeLimit(.minutes(1)))
    func serverDyingBeforeItsClientFailsTheRun() async throws {
        try installFake()
        let spec = WorkloadSpec(
            suite: "tailbench", name: "masstree",
            params: ["mode": "loopback", "requests": "300", "qps": "2000", "warmup_requests": "20"], timeoutSeconds: 30,
            environment: ["FAKE_MODE": "server-dies", "FAKE_DIE_AFTER": "10"])
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: root + "/run5"))
        #expect(result.status == .failed)
        let reason = result.reason ?? ""
        #expect(reason.contains("server ended before its client") && reason.contains("exit status 3"), "\(reason)")
        #expect(reason.contains("out of memory after 10 requests"), "the server's last stderr line: \(reason)")
        #expect(result.exitStatus == 3)
    }

    static func listening(_ port: Int) -> Bool {
        let hex = String(format: ":%04X", port)
        let text = (try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").contains { line in
            let f = line.split(separator: " ")
            return f.count > 3 && f[1].hasSuffix(hex) && f[3] == "0A"
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func hangingAppIsKilledWithItsChildren() async throws {
        try installFake()
        let spec = WorkloadSpec(
            suite: "tailbench", name: "masstree", timeoutSeconds: 1, environment: ["FAKE_MODE": "hang"])
        let run = root + "/run3"
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: run))
        #expect(result.status == .failed)
        #expect(result.reason?.contains("timed out") == true)
        let childPid = try #require(
            Int32(
                try String(contentsOfFile: run + "/hang-child.pid", encoding: .utf8).trimmingCharacters(
                    in: .whitespacesAndNewlines)))
        try await Task.sleep(for: .milliseconds(300))
        #expect(!SuitePaths.processExists(childPid), "the forked child went with the group")
    }

    @Test(.timeLimit(.minutes(1)))
    func crashingAppFails() async throws {
        try installFake()
        let spec = WorkloadSpec(suite: "tailbench", name: "masstree", timeoutSeconds: 20, environment: ["FAKE_MODE": "crash"])
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: root + "/run4"))
        #expect(result.status == .failed)
        #expect(result.signal == SIGSEGV)
        #expect(result.metrics.isEmpty)
        #expect(result.invocations.first?.environment["TBENCH_WARMUPREQS"] == "14000")  // masstree's run.sh default
    }

    @Test func missingPiecesAreExplained() throws {
        let unset = try TailbenchAdapter(
            definition: SuiteDefinition.load(path: SuitePaths.suites + "/tailbench.yaml"),
            locator: SuitePaths.locator(cache: root + "/cache"), environment: ["PATH": "/usr/bin"])
        let img = WorkloadSpec(suite: "tailbench", name: "img-dnn")
        #expect(unset.unavailableReason(for: img)?.contains("TAILBENCH_ROOT") == true)
        let a = try adapter()
        let notBuilt = try #require(a.unavailableReason(for: img))
        #expect(notBuilt.contains("\(root)/img-dnn/img-dnn_integrated") && notBuilt.contains("build.sh"))
        let fake = try #require(SuitePaths.fakeTailbench)
        try SuitePaths.install(fake, at: "\(root)/img-dnn/img-dnn_integrated")
        chmod("\(root)/img-dnn/img-dnn_integrated", 0o644)
        #expect(a.unavailableReason(for: img)?.contains("chmod +x \(root)/img-dnn/img-dnn_integrated") == true)
        chmod("\(root)/img-dnn/img-dnn_integrated", 0o755)
        let notFetched = try #require(a.unavailableReason(for: img))
        #expect(
            notFetched.contains("\(root)/cache/suites/tailbench/data/img-dnn")
                && notFetched.contains("nestbench fetch tailbench --only img-dnn"))
    }

    @Test func parameterProblems() throws {
        let a = try adapter()
        let bad = WorkloadSpec(
            suite: "tailbench", name: "masstree", params: ["qps": "-3", "requests": "0", "bogus": "1"],
            environment: ["TBENCH_QPS": "9"])
        let keys = Set(a.problems(for: bad).map(\.key))
        #expect(keys == ["params.qps", "params.requests", "params.bogus", "env"])
        #expect(a.problems(for: WorkloadSpec(suite: "tailbench", name: "specjbb", params: ["mode": "loopback"])).count == 1)
        #expect(a.problems(for: WorkloadSpec(suite: "tailbench", name: "nope")).first?.key == "name")
        #expect(a.problems(for: WorkloadSpec(suite: "tailbench", name: "silo", params: ["warehouses": "4"])).isEmpty)
    }
}

@Suite(.serialized) struct ParsecAdapterTests {
    let root = Fixtures.temporaryDirectory()

    func adapter() throws -> ParsecAdapter {
        let d = try SuiteDefinition.load(path: SuitePaths.suites + "/parsec.yaml")
        return ParsecAdapter(
            definition: d, locator: SuitePaths.locator(cache: root + "/cache"),
            environment: ["PATH": "/usr/bin:/bin", "PARSEC_ROOT": root])
    }

    func binary(_ dir: String, _ exec: String) -> String { "\(root)/\(dir)/inst/amd64-linux.gcc-hooks/\(exec)" }
    var hooksDirectory: String { "\(root)/pkgs/libs/hooks/inst/amd64-linux.gcc-hooks/lib" }

    /// The fake hooks library where a gcc-hooks build installs it.
    func installHooks() throws {
        let fake = try #require(SuitePaths.fakeParsec, "cc must build the fake hooks library")
        try SuitePaths.install(fake.library + "/libhooks.so.0", at: hooksDirectory + "/libhooks.so.0")
    }

    /// A fake canneal linked against the shared hooks library, with its simsmall input archive.
    func installCanneal() async throws {
        let fake = try #require(SuitePaths.fakeParsec, "cc must build the fake PARSEC program")
        try installHooks()
        try SuitePaths.install(fake.program, at: binary("pkgs/kernels/canneal", "bin/canneal"))
        let inputDir = root + "/pkgs/kernels/canneal/inputs"
        try FileManager.default.createDirectory(atPath: inputDir + "/src", withIntermediateDirectories: true)
        try "netlist".write(toFile: inputDir + "/src/100000.nets", atomically: true, encoding: .utf8)
        let tar = try await ProcessRunner.run(
            ProcessSpec(
                program: "tar",
                arguments: ["-c", "-f", inputDir + "/input_simsmall.tar", "-C", inputDir + "/src", "100000.nets"],
                environment: ["PATH": "/usr/bin:/bin"], timeoutSeconds: 30))
        #expect(tar.succeeded)
    }

    /// Direct mode runs the binary as parsecmgmt would; a gcc-hooks binary needs its shared
    /// hooks library (without it the loader exits 127), which the run gets and records.
    @Test(.timeLimit(.minutes(1)))
    func runsLikeParsecmgmtAndParsesROI() async throws {
        try await installCanneal()
        let spec = WorkloadSpec(
            suite: "parsec", name: "canneal", params: ["threads": "3"], cpus: [0], timeoutSeconds: 30,
            environment: ["FAKE_INPUT_ARG": "4"])
        let run = root + "/run1"
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: run))
        #expect(result.status == .ok, "\(result.reason ?? "")")
        #expect(try String(contentsOfFile: run + "/args.txt", encoding: .utf8) == "3 10000 2000 100000.nets 32\n")
        #expect(try String(contentsOfFile: run + "/env.txt", encoding: .utf8) == "\(root) amd64-linux.gcc-hooks\n")
        #expect(result.metrics.first { $0.name == "roi_seconds" }?.value == 0.25)
        #expect(result.metrics.first { $0.name == "roi_throughput" }?.value == 4)
        #expect(result.metrics.first { $0.name == "roi_resolution_seconds" }?.value == 1e-6)
        #expect(result.invocations.first?.cpus == [0])
        #expect(result.invocations.first?.environment["LD_LIBRARY_PATH"]?.hasPrefix(hooksDirectory) == true)
        #expect(result.provenance["parsec.hooks_library"] == hooksDirectory + "/libhooks.so.0")
        #expect(result.provenance["warning.roi_resolution"] == nil)
        #expect(result.exitStatus == 0)
    }

    /// A ROI under 100× its printed resolution is a warning (the run stays ok).
    @Test(.timeLimit(.minutes(1)))
    func shortROIIsFlaggedForItsResolution() async throws {
        try await installCanneal()
        let spec = WorkloadSpec(
            suite: "parsec", name: "canneal", timeoutSeconds: 30, environment: ["FAKE_ROI": "0.012"])
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: root + "/run6"))
        #expect(result.status == .ok, "\(result.reason ?? "")")
        #expect(result.metrics.first { $0.name == "roi_resolution_seconds" }?.value == 0.001)
        let warning = try #require(result.provenance["warning.roi_resolution"])
        #expect(warning.contains("0.001") && warning.contains("larger input"))
    }

    /// canneal test on a tree printing 3 decimals: "0.000s" is a warning, never a 0 or a failure.
    @Test(.timeLimit(.minutes(1)))
    func roiPrintedAsZeroIsAWarningWithoutNumbers() async throws {
        try await installCanneal()
        let spec = WorkloadSpec(suite: "parsec", name: "canneal", timeoutSeconds: 30, environment: ["FAKE_ROI": "0.000"])
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: root + "/run8"))
        #expect(result.status == .ok, "\(result.reason ?? "")")
        #expect(result.metrics.first { $0.name == "roi_throughput" }.map { $0.value == nil && $0.unavailable != nil } == true)
        #expect(result.metrics.first { $0.name == "roi_seconds" }?.value == nil)
        #expect(result.provenance["warning.roi_resolution"]?.contains("larger input") == true)
    }

    /// parsecmgmt 3.0 appends `-c CONFIG` to $PARSECPLAT: NestBench exports only <arch>-<os>.
    @Test(.timeLimit(.minutes(1)))
    func parsecmgmtModeGetsPlatformAndConfigAsItExpects() async throws {
        try await installCanneal()
        try SuitePaths.install(SuitePaths.fakeApps + "/fake_parsecmgmt.sh", at: root + "/bin/parsecmgmt")
        let spec = WorkloadSpec(
            suite: "parsec", name: "canneal", params: ["mode": "parsecmgmt", "threads": "2"], timeoutSeconds: 30,
            environment: ["FAKE_INPUT_ARG": "4"])
        let run = root + "/run7"
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: run))
        #expect(result.status == .ok, "\(result.reason ?? "")")
        let invocation = try #require(result.invocations.first)
        #expect(invocation.environment["PARSECPLAT"] == "amd64-linux")
        #expect(invocation.argv.contains("gcc-hooks"))
        #expect(result.metrics.first { $0.name == "roi_seconds" }?.value == 0.25)
        // The program ran with the full platform parsecmgmt built from both.
        let env = try String(contentsOfFile: run + "/pkgs/kernels/canneal/run/env.txt", encoding: .utf8)
        #expect(env == "\(root) amd64-linux.gcc-hooks\n")
    }

    /// parsecmgmt prints nothing while it starts ~300 processes: in a nested guest on an emulated
    /// host that took minutes, and a timeout there said only "timed out; no ROI time".
    @Test(.timeLimit(.minutes(1)))
    func parsecmgmtTimingOutInItsStartUpSaysWhatToChange() async throws {
        try await installCanneal()
        try SuitePaths.install(SuitePaths.fakeApps + "/fake_parsecmgmt.sh", at: root + "/bin/parsecmgmt")
        let spec = WorkloadSpec(
            suite: "parsec", name: "canneal", params: ["mode": "parsecmgmt"], timeoutSeconds: 2,
            environment: ["FAKE_STARTUP_SECONDS": "60"])
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: root + "/run-slow"))
        #expect(result.status == .failed)
        let reason = try #require(result.reason)
        #expect(reason.contains("timed out after 2s"), "\(reason)")
        #expect(reason.contains("raise the workload's `timeout` or use mode direct"), "\(reason)")
        // A benchmark that itself runs past the timeout is not blamed on parsecmgmt's start-up.
        let long = WorkloadSpec(
            suite: "parsec", name: "canneal", params: ["mode": "parsecmgmt"], timeoutSeconds: 2,
            environment: ["FAKE_SLEEP_S": "60"])
        let slow = try await adapter().run(long, context: SuitePaths.context(runDirectory: root + "/run-slow2"))
        #expect(slow.status == .failed)
        #expect(
            slow.reason?.contains("start-up") != true && slow.reason?.contains("~300 processes") != true, "\(slow.reason ?? "")")
    }

    @Test func missingHooksLibraryIsExplained() throws {
        let fake = try #require(SuitePaths.fakeParsec)
        try SuitePaths.install(fake.program, at: binary("pkgs/kernels/streamcluster", "bin/streamcluster"))
        let reason = try #require(try adapter().unavailableReason(for: WorkloadSpec(suite: "parsec", name: "streamcluster")))
        #expect(reason.contains(hooksDirectory) && reason.contains("parsecmgmt -a build -p parsec.hooks -c gcc-hooks"))
        // A binary that lost its execute bit is named with the chmod that fixes it.
        chmod(binary("pkgs/kernels/streamcluster", "bin/streamcluster"), 0o644)
        let noExec = try #require(try adapter().unavailableReason(for: WorkloadSpec(suite: "parsec", name: "streamcluster")))
        #expect(noExec.contains("chmod +x"))
    }

    @Test(.timeLimit(.minutes(1)))
    func missingROILineIsAFailureNotZero() async throws {
        try installHooks()
        try SuitePaths.script(
            "#!/bin/sh\necho 'Running fft -m20 -p2:'\necho done\n", at: binary("ext/splash2x/kernels/fft", "bin/run.sh"))
        let spec = WorkloadSpec(suite: "parsec", name: "splash2x.fft", timeoutSeconds: 30)
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: root + "/run2"))
        #expect(result.status == .failed)
        #expect(result.reason?.contains("no ROI time") == true)
        #expect(!result.metrics.contains { $0.name == "roi_throughput" })
    }

    @Test(.timeLimit(.minutes(1)))
    func crashRecordsTheSignal() async throws {
        try installHooks()
        try SuitePaths.script(
            "#!/bin/sh\necho '[HOOKS] PARSEC Hooks Version 1.2'\necho '[HOOKS] Entering ROI'\nkill -SEGV $$\n",
            at: binary("pkgs/kernels/streamcluster", "bin/streamcluster"))
        let spec = WorkloadSpec(suite: "parsec", name: "streamcluster", timeoutSeconds: 30)
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: root + "/run3"))
        #expect(result.status == .failed)
        #expect(result.signal == SIGSEGV, "\(result.reason ?? "")")
        #expect(result.reason?.contains("signal 11") == true && result.reason?.contains("no ROI time") == true)
    }

    @Test(.timeLimit(.minutes(1)))
    func hangIsKilledWithItsChildren() async throws {
        try installHooks()
        try SuitePaths.script(
            "#!/bin/sh\nsleep 600 &\necho $! > child.pid\nwait\n", at: binary("pkgs/kernels/streamcluster", "bin/streamcluster"))
        let spec = WorkloadSpec(suite: "parsec", name: "streamcluster", timeoutSeconds: 1)
        let run = root + "/run4"
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: run))
        #expect(result.status == .failed)
        #expect(result.reason?.contains("timed out") == true)
        let child = try #require(
            Int32(try String(contentsOfFile: run + "/child.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
        )
        try await Task.sleep(for: .milliseconds(300))
        #expect(!SuitePaths.processExists(child))
    }

    @Test func missingPiecesAreExplained() throws {
        let a = try adapter()
        let x264 = WorkloadSpec(suite: "parsec", name: "x264", params: ["size": "simsmall"])
        let notBuilt = try #require(a.unavailableReason(for: x264))
        #expect(notBuilt.contains(binary("pkgs/apps/x264", "bin/x264")))
        #expect(notBuilt.contains("parsecmgmt -a build -p parsec.x264 -c gcc-hooks"))
        try SuitePaths.script("#!/bin/sh\n", at: binary("pkgs/apps/x264", "bin/x264"))
        try installHooks()
        let notFetched = try #require(a.unavailableReason(for: x264))
        #expect(notFetched.contains("\(root)/pkgs/apps/x264/inputs/input_simsmall.tar"))
        #expect(notFetched.contains("nestbench fetch parsec --only x264"))
        let unset = try ParsecAdapter(
            definition: SuiteDefinition.load(path: SuitePaths.suites + "/parsec.yaml"),
            locator: SuitePaths.locator(cache: root), environment: [:])
        #expect(unset.unavailableReason(for: x264)?.contains("PARSEC_ROOT") == true)
        #expect(
            a.problems(for: WorkloadSpec(suite: "parsec", name: "x264", params: ["size": "huge"])).first?.key == "params.size")
    }
}
