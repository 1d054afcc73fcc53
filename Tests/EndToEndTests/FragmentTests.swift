import Foundation
import Testing

/// nb-fragment processes alive right now (by /proc/PID/comm).
func fragmenterPIDs() -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { Int32($0) }.filter { pid in
        (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.hasPrefix("nb-fragment") == true
    }
}

func machineFMFI() -> Double {
    // Normal (+Movable) zones pooled, as nestbench does.
    let text = (try? String(contentsOfFile: "/proc/buddyinfo", encoding: .utf8)) ?? ""
    var free = 0.0
    var big = 0.0
    for line in text.split(separator: "\n") where line.contains("Normal") || line.contains("Movable") {
        let counts = line.split(separator: " ").dropFirst(4).compactMap { Double($0) }
        for (order, k) in counts.enumerated() {
            free += k * Double(1 << order)
            if order >= 9 { big += k * Double(1 << order) }
        }
    }
    return free > 0 ? (free - big) / free : 1
}

extension MachineSuite {
    @Suite("fragmentation end to end")
    struct FragmentTests {
        /// FMFI(9) reaches 0.9 − 0.05 over the Normal zone, is held, then released with nothing left
        /// behind. How long it takes, and whether it stays in band while other processes churn memory,
        /// is measured by `make bench` (benchmark `fragment`), not asserted here.
        @Test(.timeLimit(.minutes(4)), .enabled(if: getuid() == 0, "reads PFNs and mlocks: needs root"))
        func reachesHoldsAndReleases() throws {
            let dir = CLI.temporaryDirectory()
            let r = try CLI.run(
                ["fragment", "--target", "0.9", "--hold", "--hold-seconds", "5", "--timeout", "170", "--format", "json"],
                state: dir + "/state")
            #expect(r.status == 0, "\(r.stderr.suffix(2000))")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let reached = try #require(json["fmfi_reached"] as? Double)
            #expect(reached >= 0.85, "FMFI reached \(reached)")
            let held = try #require(json["fmfi_min"] as? Double)
            #expect(held >= 0.8, "FMFI fell to \(held) while held")
            #expect(fragmenterPIDs().isEmpty, "no fragmenter left")
            #expect(r.stderr.contains("keepers mode=pagemap"))
        }

        /// After a kill -9 no fragmenter survives, and the compaction sysctls `fragment` pinned are
        /// put back by the next invocation (`restore`) from the journal.
        @Test(.timeLimit(.minutes(1)), .enabled(if: getuid() == 0, "pins compaction sysctls: needs root"))
        func killNineLeavesNoFragmenter() async throws {
            let dir = CLI.temporaryDirectory()
            let sysctls = ["/proc/sys/vm/compaction_proactiveness", "/proc/sys/vm/compact_unevictable_allowed"]
            func read() -> [String] { sysctls.map { (try? String(contentsOfFile: $0, encoding: .utf8)) ?? "?" } }
            let before = read()
            // Target 0 is reached at once: the fragmenter goes straight to holding.
            let (p, _, _) = try CLI.start(["fragment", "--target", "0", "--hold"], state: dir + "/state")
            let deadline = ContinuousClock.now + .seconds(30)
            while fragmenterPIDs().isEmpty && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            let pids = fragmenterPIDs()
            #expect(!pids.isEmpty, "the fragmenter started")
            try await Task.sleep(for: .milliseconds(500))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let gone = ContinuousClock.now + .seconds(5)
            while !fragmenterPIDs().isEmpty && ContinuousClock.now < gone {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(fragmenterPIDs().isEmpty, "fragmenter survived kill -9 of nestbench: \(fragmenterPIDs())")
            let restore = try CLI.run(["restore"], state: dir + "/state")
            #expect(restore.status == 0, "\(restore.stderr)")
            #expect(read() == before, "the pinned sysctls are restored from the journal")
        }

        @Test(.timeLimit(.minutes(1)))
        func badArgumentsAreUsageErrors() throws {
            let dir = CLI.temporaryDirectory()
            let r = try CLI.run(["fragment", "--target", "1.5"], state: dir + "/state")
            #expect(r.status == 64)
            #expect(r.stderr.contains("--target must be in 0…1"))
        }
    }
}
