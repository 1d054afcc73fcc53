import Foundation
import Logging
import NestBenchModel
import NestBenchProcess
import NestBenchWorkloads
import Testing

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
        p.arguments = ["cc", "-O2", "-o", out, fakeApps + "/fake_tailbench.c"]
        do { try p.run() } catch { return nil }
        p.waitUntilExit()
        return p.terminationStatus == 0 ? out : nil
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

@Suite(.serialized) struct TailbenchAdapterTests {
    let root = Fixtures.temporaryDirectory()

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
            suite: "tailbench", name: "masstree", params: ["requests": "500", "qps": "250", "seed": "9"], cpus: [0],
            timeoutSeconds: 30)
        let run = root + "/run1"
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: run))
        #expect(result.status == .ok, "\(result.reason ?? "")")
        #expect(result.invocations.first?.cpus == [0])
        let env = try #require(result.invocations.first?.environment)
        for name in TailbenchAdapter.harnessVariables { #expect(env[name] != nil, "\(name) set") }
        #expect(env["TBENCH_MAXREQS"] == "500" && env["TBENCH_QPS"] == "250" && env["TBENCH_RANDSEED"] == "9")
        #expect(env["TBENCH_WARMUPREQS"] == "14000")  // masstree's run.sh default
        #expect(result.invocations.first?.argv.suffix(3) == ["-j1", "mycsba", "masstree"])
        let stdout = try String(contentsOfFile: run + "/stdout.txt", encoding: .utf8)
        #expect(stdout.contains("TBENCH_NCLIENTS = 1"))
        // Record i has sojourn 50000 + 1001·i ns: max at i = 499.
        let maxMs = try #require(result.metrics.first { $0.name == "sojourn_max_ms" }?.value)
        #expect(abs(maxMs - Double(50_000 + 1001 * 499) / 1e6) < 1e-12)
        #expect(result.metrics.first { $0.name == "requests" }?.value == 500)
        #expect(result.metrics.first { $0.name == "offered_qps" }?.value == 250)
        #expect((result.metrics.first { $0.name == "throughput_rps" }?.value ?? 0) > 0)
        #expect(result.metrics.contains { $0.name == "sojourn_p99_ms" })
        #expect(result.metrics.contains { $0.name == "queue_p95_ms" } && result.metrics.contains { $0.name == "service_mean_ms" })
    }

    @Test(.timeLimit(.minutes(1)))
    func loopbackRunKillsTheServer() async throws {
        try installFake()
        let spec = WorkloadSpec(
            suite: "tailbench", name: "masstree", params: ["mode": "loopback", "requests": "300"], timeoutSeconds: 30)
        let run = root + "/run2"
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: run))
        #expect(result.status == .ok, "\(result.reason ?? "")")
        #expect(result.invocations.count == 2)
        let port = try #require(result.invocations.last?.environment["TBENCH_SERVER_PORT"])
        #expect(result.invocations.first?.argv.first?.hasSuffix("mttest_server_networked") == true)
        #expect(result.invocations.last?.argv.first?.hasSuffix("mttest_client_networked") == true)
        #expect(result.metrics.first { $0.name == "requests" }?.value == 300)
        // The server was stopped after the client: nothing listens on its port any more.
        #expect(!FileManager.default.fileExists(atPath: "/proc/net/tcp") || !Self.listening(Int(port)!))
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

    /// A fake canneal: needs its input unpacked in the working directory, prints the hooks lines.
    @Test(.timeLimit(.minutes(1)))
    func runsLikeParsecmgmtAndParsesROI() async throws {
        try SuitePaths.script(
            """
            #!/bin/sh
            echo "PARSEC Benchmark Suite Version 3.0-beta-20120904"
            echo "[HOOKS] PARSEC Hooks Version 1.2"
            [ -f "$4" ] || { echo "missing $4" >&2; exit 1; }
            echo "$@" > args.txt
            echo "$PARSECDIR $PARSECPLAT" > env.txt
            echo "[HOOKS] Entering ROI"
            echo "[HOOKS] Leaving ROI"
            echo "[HOOKS] Total time spent in ROI: 0.250000s"
            echo "[HOOKS] Terminating"
            """, at: binary("pkgs/kernels/canneal", "bin/canneal"))
        let inputDir = root + "/pkgs/kernels/canneal/inputs"
        try FileManager.default.createDirectory(atPath: inputDir + "/src", withIntermediateDirectories: true)
        try "netlist".write(toFile: inputDir + "/src/100000.nets", atomically: true, encoding: .utf8)
        let tar = try await ProcessRunner.run(
            ProcessSpec(
                program: "tar",
                arguments: ["-c", "-f", inputDir + "/input_simsmall.tar", "-C", inputDir + "/src", "100000.nets"],
                environment: ["PATH": "/usr/bin:/bin"], timeoutSeconds: 30))
        #expect(tar.succeeded)
        let spec = WorkloadSpec(suite: "parsec", name: "canneal", params: ["threads": "3"], cpus: [0], timeoutSeconds: 30)
        let run = root + "/run1"
        let result = try await adapter().run(spec, context: SuitePaths.context(runDirectory: run))
        #expect(result.status == .ok, "\(result.reason ?? "")")
        #expect(try String(contentsOfFile: run + "/args.txt", encoding: .utf8) == "3 10000 2000 100000.nets 32\n")
        #expect(try String(contentsOfFile: run + "/env.txt", encoding: .utf8) == "\(root) amd64-linux.gcc-hooks\n")
        #expect(result.metrics.first { $0.name == "roi_seconds" }?.value == 0.25)
        #expect(result.metrics.first { $0.name == "roi_throughput" }?.value == 4)
        #expect(result.invocations.first?.cpus == [0])
        #expect(result.exitStatus == 0)
    }

    @Test(.timeLimit(.minutes(1)))
    func missingROILineIsAFailureNotZero() async throws {
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
