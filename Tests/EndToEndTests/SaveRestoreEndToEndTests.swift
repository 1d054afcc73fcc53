import Foundation
import Testing

extension MachineSuite {
    @Suite("save/restore of a running guest")
    struct SaveRestoreEndToEndTests {
        /// One stack (L0 this machine, a detachable L1 under TCG): the micro runs in L1 and is
        /// saved and restored under it — the run reports save_seconds, restore_seconds and TTR (never
        /// shorter than the restore) or why TTR is unavailable; restored lazily (postcopy) on the
        /// same stack, it reports the postcopy time and bytes moved instead of a save; a condition
        /// whose save would come after the micro ends saves nothing and says so. Afterwards no QEMU, no saved image
        /// and no QMP/doorbell socket directory is left.
        @Test(.timeLimit(.minutes(10)), .enabled(if: Nested.canBoot, Nested.requirement))
        func savedAndRestoredWhileTheMicroRunsAndNothingLeft() throws {
            let dir = CLI.temporaryDirectory()
            // The save at 8 s: after the micro's start-up and first progress intervals in a TCG
            // guest on a loaded machine (a save before them leaves no rate to recover to), and
            // well before its 450M operations end (15 s at the fastest rate seen here).
            let yaml = """
                name: e2e-restore
                baseline: eager
                seed: 3
                configurations:
                  eager:
                    platform: qemu
                    layers:
                      L0: {this_machine: true}
                      L1: {kernel: \(Nested.kernel), vcpus: 1, memory: 384MiB, pinning: [1], detachable: true, boot_timeout: 300s}
                workloads:
                  - {name: random-access, suite: micro, label: micro, params: {size: 32MiB, ops: 450000000, progress: 0.5}, timeout: 600s}
                conditions:
                  restored: {save_restore: {layer: L1, at: 8s}}
                  lazy: {save_restore: {layer: L1, at: 8s, mode: lazy}}
                  late: {save_restore: {layer: L1, at: 400s}}
                repetitions: {min: 2, max: 2, boots: 1}
                """
            CLI.write(yaml, to: dir + "/e.yaml")
            let r = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/res", "--format", "json"], state: dir + "/state")
            let json = try #require(
                try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.stderr.suffix(2000))")
            let runs = try #require(json["runs"] as? [[String: Any]])
            #expect(runs.count == 6)
            #expect(runs.filter { $0["condition"] as? String == "restored" }.count == 2)
            #expect(runs.filter { $0["condition"] as? String == "lazy" }.count == 2)
            #expect(runs.filter { $0["condition"] as? String == "late" }.count == 2)
            for restored in runs where restored["condition"] as? String == "restored" {
                #expect(restored["status"] as? String == "ok", "\(restored["reason"] ?? "")")
                let metrics = try #require(restored["metrics"] as? [String: Any])
                let restore = try #require(metrics["restore_seconds"] as? Double, "\(metrics.keys.sorted())")
                #expect(restore > 0 && (metrics["save_seconds"] as? Double ?? 0) > 0)
                #expect((metrics["restore.image_bytes"] as? Double ?? 0) > Double(32 << 20), "the image holds the micro's buffer")
                if let ttr = metrics["ttr_seconds"] as? Double {
                    #expect(ttr >= restore, "TTR \(ttr) s is never shorter than the restore (\(restore) s)")
                    #expect((metrics["degraded_ops"] as? Double ?? -1) >= 0)
                } else {
                    // On this shared, emulated machine the rate may not settle before the micro ends:
                    // then TTR is unavailable with the reason, never a number.
                    let export = try CLI.run(["export", "latest", "--results", dir + "/res"], state: dir + "/state")
                    #expect(export.stdout.contains("had not come back"), "ttr_seconds missing without its reason")
                }
            }
            // Lazy (postcopy to a new QEMU on this machine), on the same stack between eager ones:
            // running again at once, every page over later, nothing saved.
            for lazy in runs where lazy["condition"] as? String == "lazy" {
                #expect(lazy["status"] as? String == "ok", "\(lazy["reason"] ?? "")")
                let metrics = try #require(lazy["metrics"] as? [String: Any])
                let restore = try #require(metrics["restore_seconds"] as? Double, "\(metrics.keys.sorted())")
                let postcopy = try #require(metrics["restore.postcopy_seconds"] as? Double)
                #expect(restore > 0 && postcopy >= restore, "running again after \(restore) s, every page over at \(postcopy) s")
                #expect((metrics["restore.transferred_bytes"] as? Double ?? 0) > Double(32 << 20), "the micro's buffer moved")
                #expect(metrics["save_seconds"] is NSNull && metrics["restore.image_bytes"] is NSNull, "nothing saved")
                if let ttr = metrics["ttr_seconds"] as? Double {
                    #expect(ttr >= restore, "TTR \(ttr) s is never shorter than the restore (\(restore) s)")
                }
            }
            for late in runs where late["condition"] as? String == "late" {
                #expect(late["status"] as? String == "failed")
                #expect((late["reason"] as? String ?? "").contains("ended before the save"), "\(late["reason"] ?? "")")
            }

            // Nothing left: QEMUs, the image, the sockets' directory (from the QEMU command lines).
            #expect(Nested.qemuProcesses(mentioning: dir).isEmpty, "no QEMU left")
            let files = FileManager.default.enumerator(atPath: dir)?.allObjects as? [String] ?? []
            #expect(!files.contains { $0.hasSuffix(".save.img") }, "the saved image is removed")
            let export = try CLI.run(["export", "latest", "--results", dir + "/res"], state: dir + "/state")
            let sockets = export.stdout.matches(of: /unix:(\/[^,"]+)\/qmp/).map { String($0.1) }
            #expect(!sockets.isEmpty, "the QMP socket is in the recorded command line")
            for socketDirectory in Set(sockets) {
                #expect(!FileManager.default.fileExists(atPath: socketDirectory), "\(socketDirectory) removed")
            }
        }
    }
}
