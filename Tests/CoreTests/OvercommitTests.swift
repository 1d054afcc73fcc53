import Foundation
import NestBenchModel
import NestBenchStats
import NestBenchWorkloads
import Testing

@testable import NestBenchVM

/// The pieces of the memory-overcommit scenarios that need no VM: nb-micro's progress lines, the
/// per-layer counters across a run.
@Suite("Overcommit scenarios: progress and layer counters")
struct OvercommitTests {
    @Test func progressLinesAreIntervals() {
        let output = """
            progress 0.200602 9633792 0.200602
            progress 0.404768 9502720 0.204166
            metric ops_per_sec 4.8e+07 ops/s higher
            progress garbage 1 2
            progress 0.5 10 0
            """
        let intervals = MicroAdapter.progress(output)
        #expect(intervals.count == 2, "malformed and zero-length lines are not intervals")
        #expect(intervals[0] == Responsiveness.Interval(end: 0.200602, seconds: 0.200602, operations: 9_633_792))
        #expect(abs(intervals[1].rate - 9_502_720 / 0.204166) < 1e-6)
    }

    @Test func progressIsPassedOnlyWhenAsked() {
        let off = MicroAdapter.arguments(for: WorkloadSpec(suite: "micro", name: "random-access"))
        #expect(!off.contains("--progress"), "nb-micro's loop is unchanged by default")
        let on = MicroAdapter.arguments(
            for: WorkloadSpec(suite: "micro", name: "random-access", params: ["progress": "0.5"]))
        #expect(on.contains("--progress") && on[on.firstIndex(of: "--progress")! + 1] == "0.5")
    }

    @Test func layerCountersAreDeltasAndStates() throws {
        let before = LayerCounters.parse(
            """
            /proc/vmstat:thp_split_page 10
            /proc/vmstat:pswpout 5
            /proc/vmstat:nr_free_pages 100
            /sys/kernel/mm/ksm/full_scans:3
            /sys/kernel/mm/ksm/pages_sharing:0
            """)
        let after = LayerCounters.parse(
            """
            /proc/vmstat:thp_split_page 25
            /proc/vmstat:pswpout 5
            /sys/kernel/mm/ksm/run:1
            /sys/kernel/mm/ksm/full_scans:7
            /sys/kernel/mm/ksm/pages_sharing:1234
            /sys/kernel/mm/ksm/pages_shared:99
            grep: /sys/kernel/mm/ksm/pages_volatile: No such file or directory
            """)
        let metrics = LayerCounters.metrics(layer: "L0", before: before, after: after)
        let m = Dictionary(uniqueKeysWithValues: metrics.map { ($0.name, $0) })
        #expect(m["L0.vmstat.thp_split_page"]?.value == 15)
        #expect(m["L0.vmstat.pswpout"]?.value == 0)
        #expect(m["L0.ksm.full_scans"]?.value == 4)
        #expect(
            m["L0.ksm.pages_sharing"]?.value == 1234 && m["L0.ksm.pages_shared"]?.value == 99 && m["L0.ksm.run"]?.value == 1)
        // Every counter and KSM file is there: measured, or unavailable with the reason, never 0.
        #expect(
            Set(metrics.map(\.name))
                == Set(
                    LayerCounters.vmstatCounters.map { "L0.vmstat.\($0)" } + LayerCounters.ksmFiles.map { "L0.ksm.\($0)" }))
        let volatile = try #require(m["L0.ksm.pages_volatile"])
        #expect(volatile.value == nil && volatile.unavailable == "unavailable: L0 has no /sys/kernel/mm/ksm/pages_volatile")
        let pswpin = try #require(m["L0.vmstat.pswpin"])
        #expect(pswpin.value == nil && pswpin.unavailable == "unavailable: L0 has no pswpin in /proc/vmstat")
        let splitPMD = try #require(
            LayerCounters.metrics(layer: "L0", before: before, after: LayerCounters.parse("/proc/vmstat:nr_free_pages 1"))
                .first { $0.name == "L0.vmstat.thp_split_page" })
        #expect(
            splitPMD.value == nil
                && splitPMD.unavailable == "unavailable: L0's thp_split_page in /proc/vmstat was not read after the run",
            "a counter read only once gives no delta")
        // A counter lower after the run (a reset, a restarted process) gives no negative delta.
        let reset = LayerCounters.metrics(
            layer: "L0", before: LayerCounters.parse("/proc/vmstat:pswpout 500\n/proc/vmstat:pswpin 7"),
            after: LayerCounters.parse("/proc/vmstat:pswpout 20\n/proc/vmstat:pswpin 9"))
        let out = try #require(reset.first { $0.name == "L0.vmstat.pswpout" })
        #expect(
            out.value == nil
                && out.unavailable
                    == "unavailable: L0's pswpout in /proc/vmstat went down during the run (500 → 20: reset, or restarted meanwhile)"
        )
        #expect(reset.first { $0.name == "L0.vmstat.pswpin" }?.value == 2)
    }

    @Test func anEmptyReadingIsAFailureNotALayerWithoutCounters() throws {
        guard case .failure(let failure) = LayerCounters.reading(of: "L1", status: nil, text: "") else {
            Issue.record("an empty reading was taken as one")
            return
        }
        #expect(failure.reason == "reading L1's /proc/vmstat gave nothing (grep exit unknown)")
        let read = try LayerCounters.reading(of: "L1", status: 2, text: "/proc/vmstat:pswpin 3\n").get()
        #expect(read == ["vmstat.pswpin": 3], "grep's exit 2 (a missing KSM file) keeps what it read")
    }

    @Test func aLayerNotReadIsUnavailableWithTheReason() {
        let ok: Result<LayerCounters.Reading, LayerCounters.ReadFailure> = .success(
            LayerCounters.parse("/proc/vmstat:pswpout 5\n/proc/4242/stat:4242 (q) S 1 1 1 0 -1 0 0 0 7 0"))
        let metrics = LayerCounters.metrics(
            layers: [("L1", [])], host: [(name: "L1", pid: 4242)],
            before: ["L1": ok, "host": ok],
            after: ["L1": .failure(LayerCounters.ReadFailure(reason: "L1's agent did not answer: timeout")), "host": ok])
        let l1 = metrics.filter { $0.name.hasPrefix("L1.vmstat.") || $0.name.hasPrefix("L1.ksm.") }
        #expect(l1.count == LayerCounters.vmstatCounters.count + LayerCounters.ksmFiles.count)
        #expect(
            l1.allSatisfy {
                $0.value == nil && $0.unavailable == "unavailable: after the run, L1's agent did not answer: timeout"
            })
        // This machine's reading holds only its QEMU processes: no vmstat or KSM metrics of its own.
        #expect(metrics.filter { $0.name.hasPrefix("host.") }.isEmpty)
        #expect(metrics.first { $0.name == "L1.qemu_major_faults" }?.value == 0)
    }

    @Test func qemuMajorFaultsAndSwapDiskAreDeltas() {
        let before = LayerCounters.parse(
            """
            /sys/block/vda/stat:     100        0     800       50      200        0     1600      70        0      120      130        0        0        0        0
            /proc/4242/stat:4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 5000 0 17 0 300 100 0 0 20 0 3 0 100 1 1
            """)
        let after = LayerCounters.parse(
            """
            /sys/block/vda/stat:     150        0     800       50      900        0     1600      70        0      620      130        0        0        0        0
            /proc/4242/stat:4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 5000 0 117 0 300 100 0 0 20 0 3 0 100 1 1
            """)
        let m = Dictionary(
            uniqueKeysWithValues: LayerCounters.metrics(
                layer: "L0", before: before, after: after, children: [(name: "L1", pid: 4242)], layerFiles: false
            ).map { ($0.name, $0.value) })
        #expect(m["L1.qemu_major_faults"] == 100)
        #expect(m["L0.swap.io_ms"] == 500 && m["L0.swap.reads"] == 50 && m["L0.swap.writes"] == 700)
    }

    @Test func swapImagesAreVirtioDisks() {
        var machine = QemuMachine(
            name: "L1", accelerator: .kvm, vcpus: 1, memoryBytes: 512 << 20, kernel: "/k", initrd: nil, kernelArguments: [],
            share: "/nb/L1", consoleLog: "/nb/c", qmpSocket: "/run/q")
        #expect(!QemuCommandLine.arguments(for: machine).contains("-drive"))
        machine.disks = ["/nb/L1,x.swap.img"]
        let args = QemuCommandLine.arguments(for: machine)
        let drive = args.firstIndex(of: "-drive").map { args[$0 + 1] }
        #expect(drive == "file=/nb/L1,,x.swap.img,if=virtio,format=raw,id=disk0")
        #expect(!args.contains("virtio-balloon-pci,id=balloon0"))
        machine.balloon = true
        #expect(QemuCommandLine.arguments(for: machine).contains("virtio-balloon-pci,id=balloon0"))
    }
}
