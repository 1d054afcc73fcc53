import Foundation
import Testing

/// Nested VM stacks booted for real: on machines without hardware virtualization the L0 is an
/// emulated host (TCG), so these take minutes and check function, never speed.
enum Nested {
    static let kernel = "/vmlinuz"
    static let requirement: Comment = "needs root, /vmlinuz, qemu-system-x86 and busybox-static; skipped by make check"

    /// Root, a kernel image, QEMU and busybox — and not `make check` (NESTBENCH_SKIP_VM=1), the
    /// quick loop without VM stacks.
    static var canBoot: Bool {
        ProcessInfo.processInfo.environment["NESTBENCH_SKIP_VM"] != "1"
            && getuid() == 0 && FileManager.default.fileExists(atPath: kernel)
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")
            && FileManager.default.isExecutableFile(atPath: "/bin/busybox")
    }

    /// QEMU processes whose command line mentions `marker` (our results directory).
    static func qemuProcesses(mentioning marker: String) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { pid in
            guard Int(pid) != nil, let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
            let cmdline = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
            return cmdline.contains("qemu-system") && cmdline.contains(marker) ? "\(pid): \(cmdline.prefix(120))" : nil
        }
    }

    /// `nestbench run` of `yaml` (written to DIR/e.yaml) with JSON output: the stored runs, after
    /// checking the exit status and their number.
    static func run(_ yaml: String, in dir: String, runs count: Int) throws -> [[String: Any]] {
        CLI.write(yaml, to: dir + "/e.yaml")
        let r = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/res", "--format", "json"], state: dir + "/state")
        #expect(r.status == 0, "\(r.stderr.suffix(3000))")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let runs = try #require(json["runs"] as? [[String: Any]])
        #expect(runs.count == count)
        return runs
    }

    /// The runs of the latest experiment run of a results directory (`nestbench export`): per run,
    /// its configuration, the names of its metrics measured where the workload ran (not perf
    /// counters, not the per-layer state `L0.*`/`L1.*`), wall seconds, and its timeline samples.
    static func exported(_ dir: String) throws -> [(
        configuration: String, workload: String, names: Set<String>, wall: Double?, samples: [(t: Int, name: String)]
    )] {
        let r = try CLI.run(["export", "latest", "--results", dir + "/res"], state: dir + "/state")
        #expect(r.status == 0, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let runs = try #require(json["runs"] as? [[String: Any]])
        return runs.map { run in
            let record = run["record"] as? [String: Any] ?? [:]
            let planned = record["planned"] as? [String: Any] ?? [:]
            let metrics = record["metrics"] as? [[String: Any]] ?? []
            let names = metrics.filter { ($0["source"] as? String) != "perf" }.compactMap { $0["name"] as? String }
                .filter { !$0.hasPrefix("L0.") && !$0.hasPrefix("L1.") }
                // Per-layer names carry their layer (`align.huge.host` here, `align.huge.L1` in L1);
                // the cross-layer ones exist only where there are layers below.
                .filter { !Nested.crossLayerPrefixes.contains(where: $0.hasPrefix) }
                .map { $0.hasPrefix("align.huge.") ? "align.huge.<layer>" : $0 }
            let wall = metrics.first { $0["name"] as? String == "wall_seconds" }?["value"] as? Double
            let samples = (run["samples"] as? [[String: Any]] ?? []).compactMap { s -> (Int, String)? in
                guard let t = s["tMillis"] as? Int, let name = s["name"] as? String else { return nil }
                return (t, name)
            }
            return (
                planned["configuration"] as? String ?? "?", planned["workload"] as? String ?? "?", Set(names), wall, samples
            )
        }
    }

    /// What `nestbench doctor` detects on this machine, by check name (status, value, reason).
    static func doctor() throws -> [String: [String: String]] {
        let r = try CLI.run(["doctor", "--format", "json"], state: CLI.temporaryDirectory())
        let checks = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: String]])
        var byName: [String: [String: String]] = [:]
        for c in checks { byName[c["name"] ?? ""] = c }
        return byName
    }

    /// Alignment metrics that only a guest has (its layers below): backed, well-aligned,
    /// misaligned, page tables, KVM's whole-VM counts.
    static let crossLayerPrefixes = [
        "align.backed.", "align.well_aligned", "align.misaligned.", "align.pgtable_backed.", "align.kvm.",
    ]

    static func layer0(_ extra: String = "") -> String {
        "L0: {kernel: \(kernel), vcpus: 2, memory: 2GiB, pinning: [1, 0], modules: {kvm_amd: {nested: 1, npt: 1}}, boot_timeout: 300s\(extra)}"
    }
}

extension MachineSuite {
    @Suite("nested VM stacks")
    struct NestedStackTests {
        /// A 2-layer stack (L0 + L1) runs the micro in L1: exit code and metrics in the store,
        /// vCPU pinning read back, L1's THP knob applied. A second configuration whose L0 hangs
        /// at boot is killed at its timeout, its console log kept, its runs failed — and the
        /// experiment carries on. No QEMU is left.
        @Test(.timeLimit(.minutes(12)), .enabled(if: Nested.canBoot, Nested.requirement))
        func twoLayerStackRunsTheMicroAndAHungGuestFailsItsRuns() throws {
            let dir = CLI.temporaryDirectory()
            let yaml = """
                name: e2e-nested
                baseline: guest
                seed: 5
                collectors: {monitor: {interval: off}}
                configurations:
                  here: {platform: local}
                  guest:
                    platform: qemu
                    layers:
                      \(Nested.layer0())
                      L1: {kernel: \(Nested.kernel), vcpus: 1, memory: 768MiB, pinning: [1], thp: {enabled: never, defrag: never}, boot_timeout: 480s}
                  hung:
                    platform: qemu
                    layers:
                      \(Nested.layer0(", cmdline: nb.hang=1, boot_retries: 0").replacingOccurrences(of: "boot_timeout: 300s", with: "boot_timeout: 40s"))
                      L1: {kernel: \(Nested.kernel), vcpus: 1, memory: 768MiB}
                workloads:
                  - {name: random-access, suite: micro, label: micro, params: {size: 32MiB, ops: 100000}, cpus: [0], timeout: 120s}
                repetitions: {min: 2, max: 2}
                """
            CLI.write(yaml, to: dir + "/e.yaml")
            let r = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/res", "--format", "json"], state: dir + "/state")
            #expect(r.status == 3, "some runs failed → exit 3; stderr: \(r.stderr.suffix(2000))")
            // What this machine offers, as doctor detects it (the test holds on a VT-x/PMU testbed too).
            let doctor = try Nested.doctor()
            let emulated = doctor["kvm"]?["status"] == "unavailable" || doctor["kvm"]?["value"]?.hasPrefix("kvm_pvm") == true
            let noPMU = doctor["pmu"]?["status"] == "unavailable"
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let runs = try #require(json["runs"] as? [[String: Any]])
            #expect(runs.count == 6, "the experiment continued past the hung guest")
            let notes = json["notes"] as? [String] ?? []
            #expect(notes.contains { $0.hasPrefix("functional only: emulated host") } == emulated, "\(notes)")
            for run in runs {
                let provenance = run["provenance"] as? [String: String] ?? [:]
                let metrics = run["metrics"] as? [String: Any] ?? [:]
                if run["configuration"] as? String == "here" {
                    #expect(run["status"] as? String == "ok", "\(run["reason"] ?? "")")
                } else if run["configuration"] as? String == "guest" {
                    #expect(run["status"] as? String == "ok", "\(run["reason"] ?? "")")
                    #expect((metrics["ops_per_sec"] as? Double ?? 0) > 0)
                    #expect(metrics["wall_seconds"] is Double && metrics["minor_faults"] is Double)
                    #expect(metrics["anon_huge_bytes"] as? Double == 0, "THP never in L1")
                    #expect(metrics["L1.qemu_anon_huge_bytes"] is Double, "AnonHugePages of L1's QEMU (in L0)")
                    #expect(metrics["L0.fmfi"] is Double && metrics["L1.fmfi"] is Double)
                    // Counted from this machine on L0's vCPU threads (guest-only events), named as
                    // for local runs; without a PMU (doctor), no value.
                    #expect(metrics.keys.contains("tlb_misses") && metrics.keys.contains("cycles"))
                    if noPMU { #expect(metrics["tlb_misses"] is NSNull && metrics["cycles"] is NSNull) }
                    // Pinning read back from each vCPU thread's affinity.
                    #expect(provenance["L0.vcpu0.cpus"] == "1" && provenance["L0.vcpu1.cpus"] == "0", "\(provenance)")
                    #expect(provenance["L1.vcpu0.cpus"] == "1", "\(provenance)")
                    #expect(provenance["L1.knob:/sys/kernel/mm/transparent_hugepage/enabled"] == "never")
                    #expect(provenance["L1.thp_enabled"] == "never", "THP state read after the run")
                    let console = try #require(provenance["L1.console"])
                    #expect(FileManager.default.fileExists(atPath: console))
                    let invocations = run["invocations"] as? [[String]] ?? []
                    if emulated {
                        #expect(invocations.contains { $0.first == "qemu-system-x86_64" && $0.contains("tcg,thread=multi") })
                    }
                    #expect(invocations.contains { $0.first == "qemu-system-x86_64" && $0.contains("kvm") })
                    #expect(invocations.contains { $0.first?.hasSuffix("nb-micro") == true })
                } else {
                    #expect(run["status"] as? String == "failed")
                    let reason = run["reason"] as? String ?? ""
                    #expect(reason.contains("L0: did not come up within the boot timeout of 40s"), "\(reason)")
                    let console = try #require(reason.split(separator: "console log: ").last.map { String($0.dropLast()) })
                    let log = (try? String(contentsOfFile: console, encoding: .utf8)) ?? ""
                    #expect(log.contains("simulating a hung guest"), "console log kept: \(console)")
                }
            }
            // The reboot policy (default 2 boots): rep 1 in the first boot, rep 2 in a fresh one,
            // each run naming its boot; each layer's console log and this machine's kernel log scanned.
            let guestRuns = runs.filter { $0["configuration"] as? String == "guest" }
            let boots = guestRuns.compactMap { ($0["provenance"] as? [String: String])?["vm_boot"] }
            #expect(boots.count == 2 && Set(boots).count == 2, "two boots: \(boots)")
            for run in guestRuns {
                let p = run["provenance"] as? [String: String] ?? [:]
                #expect(p["vm_boot.index"] == String(run["repetition"] as? Int ?? 0), "\(p)")
                #expect(p["kernel_log.L1"]?.hasPrefix("scanned") == true && p["kernel_log.host"] != nil, "\(p)")
                #expect(p["L0.knob:paging"] == "npt on", "L0 (hosting L1) runs it with nested paging: \(p)")
            }
            #expect(
                (json["notes"] as? [String] ?? []).contains { $0.contains("guest L0: npt on") }, "the report says the paging mode"
            )
            // monitor.interval: off is off everywhere: no timeline on this machine or in L1, and
            // the same metric names in both places.
            let exported = try Nested.exported(dir).filter { $0.configuration != "hung" }
            let here = exported.filter { $0.configuration == "here" }.map(\.names)
            let guest = exported.filter { $0.configuration == "guest" }.map(\.names)
            #expect(here.count == 2 && guest.count == 2)
            #expect(
                here.first == guest.first,
                "here only: \(here.first?.subtracting(guest.first ?? []) ?? []), L1 only: \(guest.first?.subtracting(here.first ?? []) ?? [])"
            )
            for run in exported { #expect(run.samples.isEmpty, "\(run.configuration): \(run.samples.prefix(5))") }
            #expect(Nested.qemuProcesses(mentioning: dir).isEmpty, "no QEMU left")
        }

        /// The same experiment file measures alike on this machine and in a 2-layer stack: with
        /// `monitor.interval: 1s` the same metric names, and about one timeline sample per second
        /// (±1 per 10 s) in both — the monitor runs where the workload runs (in L1, its agent).
        /// Loopback Tailbench (the fake app) runs in L1 too: its server a helper started through
        /// L1's agent, found listening in L1's /proc/net/tcp, stopped after the client.
        @Test(.timeLimit(.minutes(12)), .enabled(if: Nested.canBoot, Nested.requirement))
        func monitorEverySecondHereAndInL1() throws {
            let dir = CLI.temporaryDirectory()
            let tailbench = dir + "/tailbench"
            try FileManager.default.createDirectory(atPath: tailbench + "/masstree", withIntermediateDirectories: true)
            let cc = Process()
            cc.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            cc.arguments = ["cc", "-O2", "-o", tailbench + "/fake", CLI.packageRoot + "/Tests/FakeApps/fake_tailbench.c", "-lm"]
            try cc.run()
            cc.waitUntilExit()
            #expect(cc.terminationStatus == 0)
            for name in ["mttest_integrated", "mttest_server_networked", "mttest_client_networked"] {
                try FileManager.default.copyItem(atPath: tailbench + "/fake", toPath: tailbench + "/masstree/" + name)
            }
            let yaml = """
                name: e2e-monitor
                baseline: here
                seed: 13
                collectors: {monitor: {interval: 1s}}
                configurations:
                  here: {platform: local}
                  guest:
                    platform: qemu
                    layers:
                      \(Nested.layer0())
                      L1: {kernel: \(Nested.kernel), vcpus: 1, memory: 768MiB, pinning: [1], boot_timeout: 480s}
                workloads:
                  - {name: random-access, suite: micro, label: micro, params: {size: 16MiB, ops: 30000000}, cpus: [0], timeout: 300s}
                  - {name: masstree, suite: tailbench, label: tb, params: {mode: loopback, requests: 300, root: \(tailbench)}, timeout: 300s}
                repetitions: {min: 2, max: 2, boots: 1}
                """
            for run in try Nested.run(yaml, in: dir, runs: 8) {
                #expect(run["status"] as? String == "ok", "\(run["configuration"] ?? ""): \(run["reason"] ?? "")")
                if run["workload"] as? String == "tb" {
                    let metrics = run["metrics"] as? [String: Any] ?? [:]
                    #expect(metrics["requests"] as? Double == 300, "\(metrics.keys.sorted())")
                }
            }
            let exported = try Nested.exported(dir)
            let micro = exported.filter { $0.workload == "micro" }
            let here = try #require(micro.first { $0.configuration == "here" })
            let guest = try #require(micro.first { $0.configuration == "guest" })
            #expect(
                here.names == guest.names,
                "here only: \(here.names.subtracting(guest.names)), L1 only: \(guest.names.subtracting(here.names))")
            #expect(here.names.contains("monitor.mem_free.max") && here.names.contains("anon_huge_bytes_max"))
            for run in micro {
                let wall = try #require(run.wall)
                let n = run.samples.filter { $0.name == "mem_free_bytes" }.count
                // Before the start, one per second while it runs, after its end.
                let expected = Int(wall) + 2
                #expect(abs(n - expected) <= 1 + Int(wall / 10), "\(run.configuration): \(n) samples in \(wall) s")
            }
            #expect(Nested.qemuProcesses(mentioning: dir).isEmpty, "no QEMU left")
            // The stack's runs are tagged without any --tag: every layer's kernel release and
            // command line (as the guest read them), QEMU's version, the configuration's kernel.
            let history = try CLI.run(
                ["history", "e2e-monitor", "--results", dir + "/res", "--metric", "ops_per_sec", "--format", "json"],
                state: dir + "/state")
            #expect(history.status == 0, "\(history.stderr)")
            let series = try #require(
                try? JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]], "\(history.stderr)")
            let tags = try #require((series.first?["points"] as? [[String: Any]])?.last?["tags"] as? [String: String])
            let l1 = try #require(tags["L1.kernel"], "\(tags)")
            #expect(tags["L0.kernel"] != nil && tags["L1.cmdline"]?.contains("console=ttyS0") == true, "\(tags)")
            #expect(tags["qemu"]?.split(separator: ".").count == 3, "\(tags)")
            #expect(tags["kernel"] == (tags["L0.kernel"] == l1 ? l1 : "L0 \(tags["L0.kernel"]!), L1 \(l1)"), "\(tags)")
            let byKernel = try CLI.run(
                ["compare", "--by", "L1.kernel", "e2e-monitor", "--results", dir + "/res"], state: dir + "/state")
            #expect(byKernel.status == 5 && byKernel.stderr.contains(l1), "one L1 kernel: nothing to compare")
        }

        /// A fragmented condition in a guest layer: nb-fragment runs in L1 through its agent (the
        /// same binary, seen through the shared root), reaches the target there, holds it while the
        /// micro runs in L1, then releases; the condition's sysctls are set in L1, not here.
        @Test(.timeLimit(.minutes(12)), .enabled(if: Nested.canBoot, Nested.requirement))
        func fragmentationInAGuestLayer() throws {
            let dir = CLI.temporaryDirectory()
            let proactivenessHere = try String(contentsOfFile: "/proc/sys/vm/compaction_proactiveness", encoding: .utf8)
            let yaml = """
                name: e2e-nested-frag
                baseline: guest
                seed: 9
                configurations:
                  guest:
                    platform: qemu
                    layers:
                      \(Nested.layer0())
                      L1: {kernel: \(Nested.kernel), vcpus: 1, memory: 1GiB, pinning: [1], thp: {enabled: never}, boot_timeout: 480s}
                workloads:
                  - {name: random-access, suite: micro, label: micro, params: {size: 16MiB, ops: 100000}, cpus: [0], timeout: 120s}
                conditions:
                  fragmented: {fragmentation: {target_fmfi: 0.5, layer: L1, slack: 64MiB, timeout: 300s}}
                repetitions: {min: 2, max: 2, boots: 1}
                """
            for run in try Nested.run(yaml, in: dir, runs: 2) {
                let metrics = run["metrics"] as? [String: Any] ?? [:]
                let provenance = run["provenance"] as? [String: String] ?? [:]
                #expect(run["status"] as? String == "ok", "\(run["reason"] ?? "")")
                #expect(provenance["condition.layer"] == "L1" && provenance["fragmentation.place"] == "L1", "\(provenance)")
                let before = try #require(metrics["fmfi_before"] as? Double, "\(metrics.keys.sorted())")
                #expect(abs(before - 0.5) <= 0.05, "L1's FMFI(9) when the workload started: \(before)")
                #expect(metrics["fmfi_in_band"] as? Double == 1, "\(before)")
                #expect(metrics["fragmenter_exit"] as? Double == 0, "released cleanly in L1")
                #expect(metrics["fmfi_after_compaction"] is Double, "compacted in L1 first")
                #expect(provenance["L1.knob:/proc/sys/vm/compaction_proactiveness"] == "0", "\(provenance)")
                #expect(provenance["L1.thp_enabled"] == "never", "THP back to the configuration's never after the fill")
                #expect((metrics["ops_per_sec"] as? Double ?? 0) > 0)
            }
            let here = try String(contentsOfFile: "/proc/sys/vm/compaction_proactiveness", encoding: .utf8)
            #expect(here == proactivenessHere, "this machine's sysctl untouched by a guest condition")
            #expect(Nested.qemuProcesses(mentioning: dir).isEmpty, "no QEMU left")
        }

        /// The memory-overcommit pieces in a 2-layer stack, set up and torn down: L0's balloon
        /// inflated to a MemAvailable target and deflated to all of L0's memory after each run; nb-hold
        /// holding in L1; swap disks enabled in both layers; L1's QEMU capped by cgroup v2 in L0;
        /// KSM on in L0 — and nothing left afterwards (no QEMU, no swap image).
        @Test(.timeLimit(.minutes(12)), .enabled(if: Nested.canBoot, Nested.requirement))
        func overcommitConditionsInAStack() throws {
            let dir = CLI.temporaryDirectory()
            let l0Memory = 2 << 30
            let yaml = """
                name: e2e-overcommit
                baseline: guest
                seed: 13
                configurations:
                  guest:
                    platform: qemu
                    layers:
                      \(Nested.layer0(", swap: 256MiB, balloon: true, ksm: {run: 1, sleep_millisecs: 50}"))
                      L1: {kernel: \(Nested.kernel), vcpus: 1, memory: 384MiB, pinning: [1], swap: 128MiB, qemu_memory_max: 320MiB, boot_timeout: 480s}
                workloads:
                  - {name: random-access, suite: micro, label: micro, params: {size: 16MiB, ops: 100000, progress: 1}, timeout: 300s}
                conditions:
                  ballooned: {memory_pressure: {layer: L0, method: balloon, available: 768MiB, timeout: 200s}}
                  held: {memory_pressure: {layer: L1, available: 128MiB, step: 16MiB, timeout: 200s}}
                repetitions: {min: 2, max: 2, boots: 1}
                """
            for run in try Nested.run(yaml, in: dir, runs: 4) {
                let metrics = run["metrics"] as? [String: Any] ?? [:]
                let provenance = run["provenance"] as? [String: String] ?? [:]
                let condition = run["condition"] as? String ?? "?"
                #expect(run["status"] as? String == "ok", "\(condition): \(run["reason"] ?? "")")
                let held = try #require(metrics["pressure.held_bytes"] as? Double, "\(condition): \(metrics.keys.sorted())")
                let available = try #require(metrics["pressure.available_bytes"] as? Double)
                #expect(held > 0, "\(condition): memory taken")
                if condition == "ballooned" {
                    #expect(provenance["pressure.place"] == "L0" && provenance["pressure.method"] == "balloon")
                    #expect(available <= Double(768 << 20) + Double(128 << 20), "L0's MemAvailable \(available) after inflating")
                    #expect(
                        metrics["pressure.balloon_released_bytes"] as? Double == Double(l0Memory),
                        "the balloon gives L0 all its memory back: \(metrics["pressure.balloon_released_bytes"] ?? "none")")
                } else {
                    #expect(provenance["pressure.place"] == "L1" && provenance["pressure.method"] == "hold")
                    #expect(available <= Double(128 << 20), "L1's MemAvailable \(available) as the workload started")
                }
                #expect(metrics["L0.ksm.run"] as? Double == 1, "KSM on in L0")
                #expect(metrics["L1.ksm.run"] as? Double == 0, "and only there")
                #expect(metrics["L1.qemu_major_faults"] is Double, "L1's QEMU's major faults counted in L0")
                #expect(metrics["L0.swap.io_ms"] is Double && metrics["L1.swap.io_ms"] is Double, "both swap disks read")
                #expect(provenance["L0.knob:swap"]?.hasPrefix("/dev/vda") == true, "\(provenance["L0.knob:swap"] ?? "none")")
                #expect(provenance["L1.knob:swap"]?.hasPrefix("/dev/vda") == true, "\(provenance["L1.knob:swap"] ?? "none")")
                #expect(provenance["L1.knob:qemu_memory_max"] != nil, "the cap is recorded")
            }
            #expect(Nested.qemuProcesses(mentioning: dir).isEmpty, "no QEMU left")
            let images = FileManager.default.enumerator(atPath: dir)?.compactMap { $0 as? String }.filter {
                $0.hasSuffix(".swap.img")
            }
            #expect(images == [], "swap images removed with their stack")
        }

        /// A colocated pair runs in two innermost guests started together, which share the single
        /// guest's memory and pinning; each member's metrics come back under its label. A
        /// fragmented condition fragments each of the two guests, its metrics under the member's label.
        @Test(.timeLimit(.minutes(12)), .enabled(if: Nested.canBoot, Nested.requirement))
        func colocatedPairRunsInTwoGuests() throws {
            let dir = CLI.temporaryDirectory()
            let micro = "{name: random-access, suite: micro, params: {size: 16MiB, ops: 100000}, timeout: 120s}"
            let yaml = """
                name: e2e-colocated
                baseline: guest
                seed: 11
                configurations:
                  guest:
                    platform: qemu
                    layers:
                      \(Nested.layer0())
                      L1: {kernel: \(Nested.kernel), vcpus: 1, memory: 1GiB, pinning: [1], boot_timeout: 480s}
                workloads:
                  - {label: pair, colocate: [\(micro), \(micro)]}
                conditions:
                  clean: {compact: false}
                  fragmented: {fragmentation: {target_fmfi: 0.5, slack: 48MiB, timeout: 300s}}
                repetitions: {min: 2, max: 2, boots: 1}
                """
            for run in try Nested.run(yaml, in: dir, runs: 4) {
                let metrics = run["metrics"] as? [String: Any] ?? [:]
                let provenance = run["provenance"] as? [String: String] ?? [:]
                #expect(run["status"] as? String == "ok", "\(run["reason"] ?? "")")
                if run["condition"] as? String == "fragmented" {
                    for (member, guest) in [("random-access-1", "L1.0"), ("random-access-2", "L1.1")] {
                        #expect(provenance["\(member).condition.layer"] == guest, "\(provenance)")
                        #expect(metrics["\(member).fmfi_before"] is Double, "\(metrics.keys.sorted())")
                        #expect(metrics["\(member).fragmenter_exit"] as? Double == 0)
                    }
                }
                for member in ["random-access-1", "random-access-2"] {
                    #expect((metrics["\(member).ops_per_sec"] as? Double ?? 0) > 0, "\(metrics.keys.sorted())")
                }
                #expect(metrics["ops_per_sec"] == nil, "no unlabeled member metrics")
                #expect(provenance["colocation"] == "2 guests: random-access-1, random-access-2")
                #expect(provenance["L1.0.vcpu0.cpus"] == "1" && provenance["L1.1.vcpu0.cpus"] == "1", "\(provenance)")
                let invocations = run["invocations"] as? [[String]] ?? []
                let guests = invocations.filter { $0.first == "qemu-system-x86_64" && $0.contains("kvm") }
                #expect(guests.count == 2 && guests.allSatisfy { $0.contains("512M") }, "two guests of half the memory")
            }
            #expect(Nested.qemuProcesses(mentioning: dir).isEmpty, "no QEMU left")
        }

        /// The alignment probe against ground truth by construction, in a 2-layer stack: the
        /// micro's buffer huge in L1 (MADV_HUGEPAGE, THP madvise), L1's memory hugetlb-2m in L0 →
        /// every huge region backed in L0 (1.0); L0's memory anonymous on this machine with THP
        /// never → none backed here (0.0), so none well-aligned. Cross-checked against the QEMU
        /// processes' own counts: L0's hugetlb pool in use, AnonHugePages of L0's QEMU here.
        @Test(.timeLimit(.minutes(12)), .enabled(if: Nested.canBoot, Nested.requirement))
        func alignmentProbeFollowsHugePagesDownTheStack() throws {
            let dir = CLI.temporaryDirectory()
            let yaml = """
                name: e2e-align
                baseline: hugetlb-below
                seed: 3
                collectors: {monitor: {interval: off}, alignment: {interval: 500ms}}
                configurations:
                  hugetlb-below:
                    platform: qemu
                    host: {thp: {enabled: never, defrag: never}}
                    layers:
                      \(Nested.layer0(", backing: anonymous, sysctl: {vm.nr_hugepages: 400}"))
                      L1: {kernel: \(Nested.kernel), vcpus: 1, memory: 768MiB, backing: hugetlb-2m, pinning: [1], thp: {enabled: madvise, defrag: madvise}, boot_timeout: 480s}
                workloads:
                  - {name: random-access, suite: micro, label: micro, params: {size: 32MiB, ops: 3000000, thp: huge}, cpus: [0], timeout: 240s}
                repetitions: {min: 2, max: 2, boots: 1}
                """
            CLI.write(yaml, to: dir + "/e.yaml")
            let r = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/res", "--format", "json"], state: dir + "/state")
            #expect(r.status == 0, "\(r.stderr.suffix(3000))")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let runs = json["runs"] as? [[String: Any]] ?? []
            #expect(runs.count == 2)
            // The second run of the boot: the probe's first run left nothing behind that changes it.
            let run = try #require(runs.last)
            #expect(run["status"] as? String == "ok", "\(run["reason"] ?? "")")
            let metrics = run["metrics"] as? [String: Any] ?? [:]
            var unavailable: [String: String] = [:]
            for u in json["unavailable"] as? [[String: Any]] ?? [] {
                if let m = u["metric"] as? String { unavailable[m] = u["reason"] as? String }
            }
            func value(_ name: String) -> Double? { metrics[name] as? Double }
            let regions = try #require(value("align.regions"), "\(unavailable["align.regions"] ?? "")")
            #expect(regions >= 16, "the 32 MiB buffer's regions")
            let huge = try #require(value("align.huge.L1"), "\(unavailable["align.huge.L1"] ?? "")")
            #expect(huge >= 0.8, "MADV_HUGEPAGE with THP madvise in L1: \(huge)")
            #expect(value("align.backed.L0") == 1.0, "hugetlb-2m under L1: \(unavailable["align.backed.L0"] ?? "")")
            #expect(value("align.backed.host") == 0.0, "anonymous with THP never here: \(unavailable["align.backed.host"] ?? "")")
            #expect(value("align.well_aligned") == 0.0)
            #expect(value("align.misaligned.guest_huge") == huge)
            // The page-table pages of all of L1 lie in hugetlb memory in L0 (whole-guest figure).
            #expect(value("align.pgtable_backed.L0") == 1.0, "\(unavailable["align.pgtable_backed.L0"] ?? "")")
            // The QEMU processes' own counts agree: L1's memory is L0's hugetlb pool; L0's QEMU
            // here has no AnonHugePages.
            #expect((value("L0.hugetlb_used_pages") ?? 0) >= 384, "768 MiB of L1 in 2 MiB hugetlb pages in L0")
            #expect(value("L0.qemu_anon_huge_bytes") == 0, "THP never here")
            // KVM's whole-VM counts: L0's KVM runs L1 (debugfs mounted in guests); this machine
            // runs L0 under TCG when emulated, which KVM does not count.
            #expect(metrics.keys.contains("align.kvm.L1.pages_2m"))
            #expect(value("align.kvm.L1.pages_4k") != nil, "\(unavailable["align.kvm.L1.pages_4k"] ?? "")")
            // The timeline (alignment.interval): every layer probed while the micro ran, each
            // fraction a point in [0, 1]; how often and how long is in the run's metrics.
            let probes = try #require(value("align.timeline_probes"), "\(metrics.keys.filter { $0.hasPrefix("align.t") })")
            #expect(probes >= 1, "the micro ran for more than one interval")
            #expect((value("align.timeline_probe_seconds") ?? 0) > 0)
            let export = try CLI.run(["export", "latest", "--results", dir + "/res"], state: dir + "/state")
            let exported = try #require(try JSONSerialization.jsonObject(with: Data(export.stdout.utf8)) as? [String: Any])
            let samples = ((exported["runs"] as? [[String: Any]])?.last?["samples"] as? [[String: Any]]) ?? []
            let points = samples.filter { ["align.huge.L1", "align.backed.L0"].contains($0["name"] as? String) }
                .compactMap { $0["value"] as? Double }
            // (A probe before the buffer is touched has no present region: no point, said in the detail.)
            #expect(points.count >= 1 && points.count <= 2 * Int(probes), "\(points)")
            #expect(points.allSatisfy { (0...1).contains($0) }, "\(points)")
            let probeTimes = samples.filter { $0["name"] as? String == "align.timeline.probe_ms" }
            #expect(probeTimes.count == Int(probes), "one probe time per probe")
            #expect(Nested.qemuProcesses(mentioning: dir).isEmpty, "no QEMU left")
        }

        /// Gemini configurations on stock Debian kernels stop at preflight, naming the missing
        /// path, before any VM of the experiment is booted and before anything is stored.
        @Test(.timeLimit(.minutes(5)), .enabled(if: Nested.canBoot, Nested.requirement))
        func geminiOnAStockKernelFailsAtPreflight() throws {
            let dir = CLI.temporaryDirectory()
            let suites = CLI.packageRoot + "/Suites"
            let yaml = """
                name: gemini-preflight
                baseline: dual-gemini
                configurations:
                  dual-gemini: {include: \(suites)/configurations/dual-gemini.yaml}
                  xgemini: {include: \(suites)/configurations/xgemini.yaml}
                workloads:
                  - {name: random-access, suite: micro}
                """
            CLI.write(yaml, to: dir + "/g.yaml")
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CLI.binary)
            p.arguments = ["run", dir + "/g.yaml", "--results", dir + "/res"]
            var env = ProcessInfo.processInfo.environment
            env["NESTBENCH_STATE_DIR"] = dir + "/state"
            env["NESTBENCH_MACHINE_LOCK"] = CLI.machineLock(state: dir + "/state")
            for name in ["GEMINI_KERNEL", "XGEMINI_HOST_KERNEL", "XGEMINI_GUEST_KERNEL"] { env[name] = Nested.kernel }
            p.environment = env
            p.currentDirectoryURL = URL(fileURLWithPath: CLI.packageRoot)
            let err = Pipe()
            p.standardError = err
            p.standardOutput = Pipe()
            try p.run()
            let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 1, "\(stderr)")
            #expect(
                stderr.contains("configurations.dual-gemini.layers.L0: kernel /vmlinuz has no /sys/kernel/mm/gemini/enabled"),
                "\(stderr)")
            #expect(
                stderr.contains("configurations.xgemini.layers.L2: kernel /vmlinuz has no /sys/kernel/mm/xgemini/guest_enabled"))
            let artifacts = (try? FileManager.default.subpathsOfDirectory(atPath: dir + "/res/artifacts")) ?? []
            #expect(!artifacts.contains { $0.contains("/vm/") }, "no VM of the experiment was booted")
            let list = try CLI.run(["report", "latest", "--results", dir + "/res"], state: dir + "/state")
            #expect(list.status == 5, "no experiment run stored: \(list.stdout)")
            #expect(Nested.qemuProcesses(mentioning: dir).isEmpty)
        }
    }
}
