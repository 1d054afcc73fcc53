import Foundation
import Testing

/// The fixtures beside the project (../shared/fixtures).
enum SharedFixtures {
    static let root = CLI.packageRoot + "/../shared/fixtures"
    static var available: Bool { FileManager.default.fileExists(atPath: root) }
    static let procfsStates = ["idle", "frag16g-stride2", "frag12g-stride8", "after"]

    /// unusable_index → "node:zone" → printed values.
    static func unusableIndex(_ text: String) -> [String: [String]] {
        var result: [String: [String]] = [:]
        for line in text.split(separator: "\n") {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "," })
            guard f.count > 4, f[0] == "Node" else { continue }
            result["\(f[1]):\(f[3])"] = f[4...].map(String.init)
        }
        return result
    }
}

@Suite("nestbench fmfi, doctor, events")
struct CollectorCommandTests {
    /// Done-when: `nestbench fmfi --buddyinfo X --format json` equals the kernel's unusable_index
    /// (all zones, orders 0–10) in every shared fixture state.
    @Test(
        .timeLimit(.minutes(1)), .enabled(if: SharedFixtures.available, "needs ../shared/fixtures"),
        arguments: SharedFixtures.procfsStates)
    func fmfiJSONEqualsTheKernelsUnusableIndex(state: String) throws {
        let dir = "\(SharedFixtures.root)/procfs/\(state)"
        let r = try CLI.run(["fmfi", "--buddyinfo", dir + "/buddyinfo", "--format", "json"], state: CLI.temporaryDirectory())
        #expect(r.status == 0, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let zones = try #require(json["zones"] as? [[String: Any]])
        let kernel = SharedFixtures.unusableIndex(try String(contentsOfFile: dir + "/unusable_index", encoding: .utf8))
        #expect(zones.count == kernel.count)
        for z in zones {
            let key = "\(z["node"] as? Int ?? -1):\(z["zone"] as? String ?? "")"
            #expect(z["unusable_index"] as? [String] == kernel[key], "\(state) \(key)")
        }
        #expect(json["machine_zones"] as? [String] == ["node 0 DMA32", "node 0 Normal"])
        #expect(json["order"] as? Int == 9)
    }

    @Test(.timeLimit(.minutes(1)))
    func fmfiBadInputIsOneLine() throws {
        let dir = CLI.temporaryDirectory()
        CLI.write("Node 0, zone Normal 1 2 x\n", to: dir + "/b")
        let r = try CLI.run(["fmfi", "--buddyinfo", dir + "/b"], state: dir)
        #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1 && r.stderr.contains(dir + "/b"), "\(r.stderr)")
        let missing = try CLI.run(["fmfi", "--buddyinfo", dir + "/none"], state: dir)
        #expect(missing.status == 1 && missing.stderr.contains(dir + "/none"))
        let order = try CLI.run(["fmfi", "--order", "11"], state: dir)
        #expect(order.status == 64)
    }

    /// Done-when: doctor says no PMU, kvm_pvm, THP madvise, qemu present/absent — as this machine is.
    @Test(.timeLimit(.minutes(1)))
    func doctorDescribesThisMachine() throws {
        let r = try CLI.run(["doctor", "--format", "json"], state: CLI.temporaryDirectory())
        #expect(r.status == 0, "\(r.stderr)")
        let checks = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: String]])
        var byName: [String: [String: String]] = [:]
        for c in checks { byName[c["name"] ?? ""] = c }
        let pmu = try #require(byName["pmu"])
        let noPMU =
            !FileManager.default.fileExists(atPath: "/sys/bus/event_source/devices/cpu")
            && !FileManager.default.fileExists(atPath: "/sys/bus/event_source/devices/cpu_core")
        if noPMU {
            #expect(pmu["status"] == "unavailable" && pmu["value"]?.hasPrefix("no PMU") == true, "\(pmu)")
        }
        if FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm") {
            #expect(byName["kvm"]?["value"]?.hasPrefix("kvm_pvm") == true)
            #expect(byName["kvm"]?["reason"]?.contains("not stock kernels") == true)
        }
        let thp = (try? String(contentsOfFile: CLI.thpEnabled, encoding: .utf8)).map { _ in CLI.thp() } ?? "?"
        #expect(byName["thp"]?["value"]?.hasPrefix("enabled=\(thp) ") == true)
        let qemu = FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")
        #expect(byName["qemu"]?["status"] == (qemu ? "ok" : "unavailable"))
        let table = try CLI.run(["doctor"], state: CLI.temporaryDirectory())
        #expect(table.stdout.split(separator: "\n").count == checks.count, "one line each")
    }

    @Test(.timeLimit(.minutes(1)))
    func eventsShowsTheSetOrWhyNot() throws {
        let r = try CLI.run(["events"], state: CLI.temporaryDirectory())
        #expect(r.status == 0, "\(r.stderr)")
        // Page faults are page faults: listed, never as a stand-in for TLB misses.
        #expect(r.stdout.contains("perf.page_faults: "), "\(r.stdout)")
        #expect(!r.stdout.contains("perf.page_faults [proxy for"), "\(r.stdout)")
        if case let noPMU = !FileManager.default.fileExists(atPath: "/sys/bus/event_source/devices/cpu"), noPMU {
            #expect(r.stdout.contains("tlb_misses: unavailable: no PMU"), "\(r.stdout)")
        }
        let forced = try CLI.run(["events", "--pmu", "bdw_ep", "--format", "json"], state: CLI.temporaryDirectory())
        let json = try #require(try JSONSerialization.jsonObject(with: Data(forced.stdout.utf8)) as? [String: Any])
        let events = try #require(json["events"] as? [[String: Any]])
        #expect(events.contains { $0["metric"] as? String == "tlb.dtlb_load_walks" && $0["config"] as? String == "0xe08" })
    }
}

extension MachineSuite {
    @Suite("collectors on this machine")
    struct CollectorMachineTests {
        static var isRoot: Bool { getuid() == 0 }

        /// Done-when: the live FMFI equals the live kernel file read at the same moment; debugfs is
        /// unmounted again if it was not mounted.
        @Test(.timeLimit(.minutes(1)), .enabled(if: isRoot, "mounting debugfs needs root"))
        func liveFMFIEqualsUnusableIndex() throws {
            let mountedBefore = try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8).contains(
                " /sys/kernel/debug debugfs ")
            let r = try CLI.run(["fmfi", "--check-kernel", "--format", "json"], state: CLI.temporaryDirectory())
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stderr.contains("matches /sys/kernel/debug/extfrag/unusable_index"), "\(r.stderr)")
            let mountedAfter = try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8).contains(
                " /sys/kernel/debug debugfs ")
            #expect(mountedAfter == mountedBefore, "debugfs left as it was")
        }

        /// Done-when: a run of the micro records page faults and THP vmstat deltas; the report shows
        /// TLB-miss metrics as unavailable with the reason (when there is no PMU), never a number.
        @Test(.timeLimit(.minutes(3)), .enabled(if: CLI.canChangeTHP, "writes THP knobs: needs root"))
        func microRunRecordsProxiesAndTLBUnavailable() throws {
            let dir = CLI.temporaryDirectory()
            CLI.write(
                """
                name: collectors
                baseline: madvise
                seed: 3
                configurations:
                  madvise: {host: {thp: {enabled: madvise}}}
                  always: {host: {thp: {enabled: always}}}
                workloads:
                  - {name: random-access, suite: micro, label: micro, params: {size: 64MiB, ops: 500000, thp: huge}, cpus: [0], timeout: 60s}
                repetitions: {min: 2, max: 2}
                collectors: {monitor: {interval: 50ms}}
                """, to: dir + "/e.yaml")
            let r = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/res", "--format", "json"], state: dir + "/state")
            #expect(r.status == 0, "\(r.stderr)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let runs = try #require(json["runs"] as? [[String: Any]])
            #expect(runs.count == 4)
            for run in runs {
                let metrics = try #require(run["metrics"] as? [String: Any])
                #expect(
                    (metrics["perf.page_faults"] as? Double ?? 0) >= 32,
                    "page faults counted: \(metrics["perf.page_faults"] ?? "none")")
                #expect((metrics["vmstat.thp_fault_alloc"] as? Double ?? -1) >= 20, "64 MiB with MADV_HUGEPAGE faults THPs in")
                #expect(metrics["monitor.fmfi9.before"] is Double)
                #expect(metrics.keys.contains("tlb_misses"))
            }
            let proxies = try #require(json["proxies"] as? [String: String])
            #expect(proxies["perf.page_faults"] == nil, "page faults are not labeled a proxy for TLB misses")
            #expect(proxies["perf.task_clock"] == "cycles", "task-clock stands in for cycles")
            let noPMU = !FileManager.default.fileExists(atPath: "/sys/bus/event_source/devices/cpu")
            guard noPMU else { return }
            for run in runs {
                let metrics = try #require(run["metrics"] as? [String: Any])
                #expect(metrics["tlb_misses"] is NSNull, "no value without a PMU")
            }
            let unavailable = try #require(json["unavailable"] as? [[String: Any]])
            #expect(
                unavailable.contains {
                    $0["metric"] as? String == "tlb_misses" && ($0["reason"] as? String)?.hasPrefix("unavailable: no PMU") == true
                })
            // The walk events depend on the µarch (Intel: tlb.dtlb_load_walks, AMD Zen: tlb.dtlb_walks);
            // whichever table this machine's CPU selects, each of its metrics is listed as unavailable.
            let walkMetrics = unavailable.compactMap { $0["metric"] as? String }.filter { $0.hasPrefix("tlb.") }
            #expect(!walkMetrics.isEmpty, "the µarch's walk events are listed: \(unavailable)")
            for format in ["table", "markdown"] {
                let report = try CLI.run(["report", "--results", dir + "/res", "--format", format], state: dir + "/state")
                #expect(report.stdout.contains("tlb_misses: unavailable: no PMU"), "\(format): \(report.stdout)")
                for metric in walkMetrics {
                    #expect(report.stdout.contains("\(metric): unavailable: no PMU"), "\(format): \(metric)")
                }
            }
        }
    }
}
