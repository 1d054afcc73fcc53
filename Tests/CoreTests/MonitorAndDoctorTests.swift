import Foundation
import NestBenchModel
import Testing

@testable import NestBenchCollectors
@testable import NestBenchProcess

@Suite("memory monitor", .serialized)
struct MemoryMonitorTests {
    @Test(.timeLimit(.minutes(1)))
    func samplesATimelineAndSummarizes() async throws {
        let monitor = MemoryMonitor(intervalMillis: 20)
        // The workload runs until the monitor has taken 5 samples of it (the test's gate file):
        // no timing window on a loaded machine.
        let gate = NSTemporaryDirectory() + "nestbench-monitor-gate-\(UUID().uuidString)"
        let child = try ProcessRunner.start(
            ProcessSpec(
                program: "/bin/sh", arguments: ["-c", "while [ ! -e \"$1\" ]; do sleep 0.01; done", "sh", gate],
                environment: ["PATH": "/usr/bin:/bin"]))
        let session = monitor.attach(pid: child.pid)
        try child.release()
        session.started()
        let watched = try #require(session as? MemoryMonitor.Session)
        while watched.timeline.withLock({ $0.samples.filter { $0.name == "anon_huge_bytes" }.count }) < 5 {
            try await Task.sleep(for: .milliseconds(10))
        }
        FileManager.default.createFile(atPath: gate, contents: Data())
        defer { try? FileManager.default.removeItem(atPath: gate) }
        let outcome = await child.wait()
        let (metrics, samples) = session.finish(outcome)
        let fmfi = samples.filter { $0.name == "fmfi.order9" }
        #expect(fmfi.count >= 7, "before, 5 while it ran, after: \(fmfi.count)")
        #expect(fmfi.first?.tMillis == 0, "a sample before the workload")
        #expect(samples.contains { $0.name == "vmstat.thp_fault_alloc" } && samples.contains { $0.name == "mem_free_bytes" })
        #expect(samples.contains { $0.name == "anon_huge_bytes" }, "the workload's smaps_rollup")
        func value(_ name: String) throws -> Double { try #require(metrics.first { $0.name == name }?.value, "\(name)") }
        let (before, after, lo, hi) = (
            try value("monitor.fmfi9.before"), try value("monitor.fmfi9.after"), try value("monitor.fmfi9.min"),
            try value("monitor.fmfi9.max")
        )
        #expect(lo <= before && before <= hi && lo <= after && after <= hi && hi <= 1 && lo >= 0)
        #expect(try value("monitor.mem_free.min") > 0)
        #expect(metrics.first { $0.name == "monitor.fmfi9.before" }?.detail?.contains("node 0") == true)
    }

    @Test(.enabled(if: Fixtures.available, "needs ../shared/fixtures"))
    func readsTheConfiguredFiles() throws {
        let sources = MonitorSources(
            buddyinfo: Fixtures.path("procfs/frag16g-stride2/buddyinfo"), vmstat: Fixtures.path("procfs/frag16g-stride2/vmstat"))
        let r = sources.read(pid: nil, order: 9)
        let expected = try Buddyinfo.parse(try Fixtures.text("procfs/frag16g-stride2/buddyinfo")).machineFMFI(order: 9)
        #expect(r.fmfi == expected)
        #expect(r.vmstat["thp_fault_alloc"] != nil && r.anonHugeBytes == nil)
    }

    @Test(.enabled(if: Fixtures.available, "needs ../shared/fixtures"), arguments: Fixtures.procfsStates)
    func reportPrintsTheKernelsForm(state: String) throws {
        let report = FMFIReport(try Buddyinfo.parse(try Fixtures.text("procfs/\(state)/buddyinfo")), order: 9, source: "x")
        let kernel = try Fixtures.text("procfs/\(state)/unusable_index").split(separator: "\n").map {
            $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst(4).map(String.init)
        }
        #expect(report.zones.map(\.unusableIndex) == kernel)
        #expect(FMFIReport.kernelForm(1000) == "1.000" && FMFIReport.kernelForm(7) == "0.007")
    }
}

@Suite("doctor")
struct DoctorTests {
    func environment(_ build: (String) throws -> Void) rethrows -> DoctorEnvironment {
        let root = Fixtures.temporaryDirectory()
        try build(root)
        var env = DoctorEnvironment()
        env.sysModule = root + "/module"
        env.devKVM = root + "/kvm"
        env.cpuinfo = root + "/cpuinfo"
        env.procSys = root + "/sys"
        return env
    }

    func write(_ text: String, _ path: String) throws {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test func kvmPVM() throws {
        let env = try environment { root in
            try write("N\n", root + "/module/kvm_pvm/parameters/force")
            try write("", root + "/kvm")
            try write("flags\t: fpu hypervisor\n", root + "/cpuinfo")
        }
        let kvm = Doctor.kvm(env)
        #expect(kvm.value.hasPrefix("kvm_pvm") && kvm.status == .limited)
        #expect(kvm.reason.contains("cannot") || kvm.reason.contains("not stock kernels"))
    }

    @Test func kvmIntelNested() throws {
        let on = try environment { root in
            try write("Y\n", root + "/module/kvm_intel/parameters/nested")
            try write("", root + "/kvm")
        }
        #expect(Doctor.kvm(on).value == "kvm_intel, nested on" && Doctor.kvm(on).status == .ok)
        let off = try environment { root in
            try write("0\n", root + "/module/kvm_amd/parameters/nested")
            try write("", root + "/kvm")
        }
        #expect(Doctor.kvm(off).value == "kvm_amd, nested off" && Doctor.kvm(off).reason.contains("nested=1"))
        let none = environment { _ in }
        #expect(Doctor.kvm(none).status == .unavailable)
    }

    @Test func paranoidLevels() throws {
        var env = try environment { root in try write("2\n", root + "/sys/kernel/perf_event_paranoid") }
        env.isRoot = false
        let check = Doctor.paranoid(env)
        #expect(check.value == "2" && check.status == .limited && check.reason.contains("perf_event_paranoid <= 1"))
        env.isRoot = true
        #expect(Doctor.paranoid(env).status == .ok)
    }

    @Test func everyCheckHasAReason() {
        let checks = Doctor.checks()
        #expect(
            checks.map(\.name) == [
                "pmu", "perf_event_paranoid", "kvm", "thp", "khugepaged", "hugetlb", "debugfs", "qemu", "root",
            ])
        #expect(checks.allSatisfy { !$0.reason.isEmpty && !$0.value.isEmpty })
    }
}
