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

    @Test func layerCountersAreDeltasAndStates() {
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
        let m = Dictionary(
            uniqueKeysWithValues: LayerCounters.metrics(layer: "L0", before: before, after: after).map { ($0.name, $0.value) })
        #expect(m["L0.vmstat.thp_split_page"] == 15)
        #expect(m["L0.vmstat.pswpout"] == 0)
        #expect(m["L0.ksm.full_scans"] == 4)
        #expect(m["L0.ksm.pages_sharing"] == 1234 && m["L0.ksm.pages_shared"] == 99 && m["L0.ksm.run"] == 1)
        #expect(m["L0.ksm.pages_volatile"] == nil, "a file the layer lacks gives no metric, never 0")
        #expect(m["L0.vmstat.pswpin"] == nil, "a counter read only once gives no delta")
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
                layer: "L0", before: before, after: after, children: [(name: "L1", pid: 4242)]
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
