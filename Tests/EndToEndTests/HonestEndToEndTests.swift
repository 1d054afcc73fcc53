import Foundation
import Testing

extension MachineSuite {
    @Suite("honest numbers end to end")
    struct HonestEndToEndTests {
        static func computeExperiment(extra: String = "") -> String {
            """
            name: e2e-kmsg
            baseline: a
            seed: 5
            configurations:
              a: {host: {sysctl: {vm.compaction_proactiveness: 0}}}
              b: {host: {sysctl: {vm.compaction_proactiveness: 0}}}
            workloads:
              - {name: compute, suite: micro, label: compute, params: {ops: 60000000}, cpus: [0], timeout: 60s}
            repetitions: {min: 2, max: 2}
            \(extra)
            """
        }

        /// Writes a kernel-log line every 100 ms until stopped (as root through /dev/kmsg).
        final class Injector: @unchecked Sendable {
            let tag = "nestbench-e2e-\(UUID().uuidString.prefix(8))"
            private let stop = NSLock()
            private var stopped = false
            func start() {
                let tag = self.tag
                Thread.detachNewThread {
                    while !self.isStopped {
                        if let h = FileHandle(forWritingAtPath: "/dev/kmsg") {
                            h.write(Data("WARNING: \(tag) injected by a test\n".utf8))
                            try? h.close()
                        }
                        Thread.sleep(forTimeInterval: 0.1)
                    }
                }
            }
            var isStopped: Bool { stop.withLock { stopped } }
            func finish() { stop.withLock { stopped = true } }
        }

        @Test(
            .timeLimit(.minutes(4)),
            .enabled(if: getuid() == 0 && FileManager.default.isWritableFile(atPath: "/dev/kmsg"), "writes /dev/kmsg: root"))
        func aKernelLogLineDuringARunMarksItOrFailsIt() throws {
            for fail in [false, true] {
                let dir = CLI.temporaryDirectory()
                CLI.write(Self.computeExperiment(extra: fail ? "environment: {kernel_log: fail}" : ""), to: dir + "/e.yaml")
                let injector = Injector()
                injector.start()
                let r = try CLI.run(
                    ["run", dir + "/e.yaml", "--results", dir + "/res", "--format", "json"], state: dir + "/state")
                injector.finish()
                let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
                let runs = try #require(json["runs"] as? [[String: Any]])
                let marked = runs.filter {
                    (($0["provenance"] as? [String: String])?["kernel_log"] ?? "").contains(injector.tag)
                }
                #expect(!marked.isEmpty, "no run marked: \(runs.map { $0["provenance"] ?? [:] })")
                let notes = (json["notes"] as? [String]) ?? []
                #expect(notes.contains { $0.contains("kernel log reported") && $0.contains(injector.tag) })
                for run in runs {
                    let p = try #require(run["provenance"] as? [String: String])
                    #expect(p["kernel_log.host"] == "scanned")
                    #expect(p["env.aslr"] != nil && p["env.ksm"] != nil && p["env.governor"] != nil, "\(p)")
                }
                if fail {
                    #expect(r.status == 3, "a failed run exits 3: \(r.stderr)")
                    #expect(marked.allSatisfy { $0["status"] as? String == "failed" })
                    #expect(marked.allSatisfy { ($0["reason"] as? String)?.contains("kernel_log: fail") == true })
                } else {
                    #expect(r.status == 0, "\(r.stderr)")
                    #expect(marked.allSatisfy { $0["status"] as? String == "ok" }, "marked, not failed")
                }
            }
        }

        @Test(.timeLimit(.minutes(3)), .enabled(if: getuid() == 0, "applies knobs: root"))
        func dryRunPrintsTheSeedAndTheOrderTheRunUses() throws {
            let dir = CLI.temporaryDirectory()
            CLI.write(Self.computeExperiment().replacingOccurrences(of: "seed: 5\n", with: ""), to: dir + "/e.yaml")
            let dry = try CLI.run(["run", dir + "/e.yaml", "--dry-run"], state: dir + "/state")
            #expect(dry.status == 0, "\(dry.stderr)")
            let first = dry.stdout.split(separator: "\n").first.map(String.init) ?? ""
            #expect(first.hasPrefix("seed ") && first.contains("drawn now"), "\(first)")
            let seed = try #require(first.split(separator: " ").dropFirst().first.map(String.init))
            let order = dry.stdout.split(separator: "\n").filter { $0.contains("\trep ") }.map { line in
                line.split(separator: "\t").prefix(2).joined(separator: " ")
            }
            #expect(order.count == 4)
            let again = try CLI.run(["run", dir + "/e.yaml", "--dry-run", "--seed", seed], state: dir + "/state")
            #expect(again.stdout.contains("(--seed)"))
            #expect(again.stdout.split(separator: "\n").filter { $0.contains("\trep ") }.count == 4)
            let real = try CLI.run(
                ["run", dir + "/e.yaml", "--seed", seed, "--results", dir + "/res", "--format", "json", "--fixed-repetitions"],
                state: dir + "/state")
            #expect(real.status == 0, "\(real.stderr)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(real.stdout.utf8)) as? [String: Any])
            #expect(json["seed"] as? String == seed)
            let runs = try #require(json["runs"] as? [[String: Any]]).sorted {
                ($0["sequence"] as? Int ?? 0) < ($1["sequence"] as? Int ?? 0)
            }
            let ran = runs.map { "\($0["sequence"] as? Int ?? -1) \($0["configuration"] as? String ?? "")" }
            #expect(ran == order, "the real run's order is the dry run's")
        }

        @Test(.timeLimit(.minutes(1)))
        func doctorListsTheNoiseSources() throws {
            let r = try CLI.run(["doctor", "--format", "json"], state: CLI.temporaryDirectory())
            #expect(r.status == 0)
            let checks = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
            let names = Set(checks.compactMap { $0["name"] as? String })
            for name in ["aslr", "numa_balancing", "ksm", "governor", "boost", "irqbalance", "kernel_log", "paging"] {
                #expect(names.contains(name), "doctor lists \(name)")
            }
            let aslr = try #require(checks.first { $0["name"] as? String == "aslr" })
            if (try? String(contentsOfFile: "/proc/sys/kernel/randomize_va_space", encoding: .utf8))?.hasPrefix("0") == false {
                #expect((aslr["reason"] as? String)?.contains("randomize_va_space=0") == true, "the fixing line")
            }
            if !FileManager.default.fileExists(atPath: "/sys/devices/system/cpu/cpu0/cpufreq") {
                let governor = try #require(checks.first { $0["name"] as? String == "governor" })
                #expect((governor["value"] as? String)?.hasPrefix("no cpufreq") == true, "doctor says there is no cpufreq")
            }
        }
    }
}
