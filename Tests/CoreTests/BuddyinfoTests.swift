import Foundation
import Testing

@testable import NestBenchCollectors

@Suite("FMFI from buddyinfo")
struct BuddyinfoTests {
    /// Every zone, every order: our FMFI, printed as the kernel prints it, equals the kernel's
    /// own unusable_index taken at the same moment (../shared/fixtures/procfs/*).
    @Test(.enabled(if: Fixtures.available, "needs ../shared/fixtures"), arguments: Fixtures.procfsStates)
    func matchesKernelUnusableIndex(state: String) throws {
        let buddy = try Buddyinfo.parse(try Fixtures.text("procfs/\(state)/buddyinfo"))
        let kernel = UnusableIndex.parse(try Fixtures.text("procfs/\(state)/unusable_index"))
        #expect(kernel.count == buddy.zones.count)
        for zone in buddy.zones {
            let expected = try #require(kernel["\(zone.node):\(zone.zone)"], "zone \(zone.zone) in unusable_index")
            #expect(expected.count == zone.counts.count)
            for order in 0..<zone.counts.count {
                #expect(zone.fmfiMilli(order: order) == expected[order], "\(state) \(zone.zone) order \(order)")
            }
        }
    }

    @Test(.enabled(if: Fixtures.available, "needs ../shared/fixtures"))
    func fragmentedStateIsHigh() throws {
        let idle = try Buddyinfo.parse(try Fixtures.text("procfs/idle/buddyinfo"))
        let frag = try Buddyinfo.parse(try Fixtures.text("procfs/frag16g-stride2/buddyinfo"))
        #expect(frag.machineFMFI(order: 9) > idle.machineFMFI(order: 9))
        #expect(frag.machineZonesDescription == "node 0 DMA32, node 0 Normal")
    }

    @Test func emptyZoneIsFullyUnusable() {
        // mm/vmstat.c: "No free memory is interpreted as all free memory is unusable".
        let zone = BuddyZone(node: 0, zone: "Normal", counts: Array(repeating: 0, count: 11))
        #expect(zone.fmfiMilli(order: 9) == 1000)
        #expect(zone.fmfi(order: 9) == 1)
    }

    @Test func malformedLineIsNamed() {
        #expect(throws: ProcfsError.self) { try Buddyinfo.parse("Node 0, zone Normal 1 2 x\n", path: "b.txt") }
        do {
            _ = try Buddyinfo.parse("garbage\n", path: "b.txt")
        } catch {
            #expect(error.description == "b.txt: line 1 is not a buddyinfo line: \"garbage\"")
        }
    }

    @Test func liveBuddyinfoParses() throws {
        let live = try Buddyinfo.live()
        #expect(!live.zones.isEmpty)
        let f = live.machineFMFI(order: 9)
        #expect(f >= 0 && f <= 1)
    }
}

@Suite("procfs parsers")
struct ProcfsTests {
    @Test func selectedValue() {
        #expect(KernelFile.selectedValue("always [madvise] never\n") == "madvise")
        #expect(KernelFile.selectedValue("4096\n") == "4096")
    }

    @Test func meminfoInBytes() {
        let m = KeyValueFile.meminfo("MemTotal:       24589776 kB\nHugePages_Total:       0\nAnonHugePages:  2048 kB\n")
        #expect(m["MemTotal"] == Int64(24_589_776) * 1024)
        #expect(m["HugePages_Total"] == 0)
        #expect(m["AnonHugePages"] == Int64(2048) * 1024)
    }

    @Test(.enabled(if: Fixtures.available, "needs ../shared/fixtures"))
    func vmstatDelta() throws {
        let before = THPCounters.pick(KeyValueFile.vmstat(try Fixtures.text("procfs/idle/vmstat")))
        let after = THPCounters.pick(KeyValueFile.vmstat(try Fixtures.text("procfs/frag16g-stride2/vmstat")))
        #expect(before["thp_fault_alloc"] != nil)
        let d = THPCounters.delta(before: before, after: after)
        #expect(d["pgfault"]! > 0)
    }
}
