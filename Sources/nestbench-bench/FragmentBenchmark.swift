import Foundation
import Logging
import NestBenchCollectors
import NestBenchFragmentation
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess
import NestBenchWorkloads

/// Time to reach each FMFI target and the CPU the fragmenter spends holding it.
///
/// References measured in the same run: the time to populate the same amount of memory with
/// 4 KiB pages (nb-micro sequential, MADV_NOHUGEPAGE — the floor any 4 KiB fragmenter pays), and
/// the holding wall time (CPU while holding is reported as a fraction of it).
enum FragmentBenchmark {
    static func cpuSeconds(of pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let f = stat[stat.index(after: close)...].split(separator: " ")
        guard f.count > 13, let u = Double(f[11]), let s = Double(f[12]) else { return nil }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func run() async throws {
        guard getuid() == 0 else {
            print("fragment: unavailable: needs root (reads PFNs from /proc/self/pagemap, mlocks)")
            return
        }
        let logger = Logger(label: "bench")
        let harness = HarnessLocator()
        let state = NSTemporaryDirectory() + "nestbench-bench-\(getpid())"
        let journal = KnobJournal(path: state + "/journal.json")
        let holdSeconds = 60.0  // the issue: FMFI stays within ±0.05 for a 60 s workload
        // Compaction pinned off as a fragmented condition (and `nestbench fragment`) pins it:
        // proactive compaction otherwise migrates the kept pages and pulls the index down.
        let platform = LocalPlatform(journal: journal, logger: logger)
        defer { try? platform.restoreAll() }
        for target in [0.5, 0.9] {
            let spec = FragmentationSpec(targetFMFI: target)
            try platform.apply(spec.knobs, owner: "fragment benchmark")
            let start = ContinuousClock.now
            let session = try await Fragmenter(harness: harness, journal: journal, logger: logger)
                .start(spec, directory: state + "/\(target)")
            let reach = (ContinuousClock.now - start).seconds
            let populated = session.events.filter { $0.kind == "progress" }.compactMap { $0.double("held") }.max() ?? 0
            let cpu0 = cpuSeconds(of: session.pid) ?? .nan
            try await Task.sleep(for: .seconds(holdSeconds))
            let cpu1 = cpuSeconds(of: session.pid) ?? .nan
            let (metrics, _, _) = await session.finish()
            let lo = metrics.first { $0.name == "fmfi_min" }?.value ?? .nan
            let hi = metrics.first { $0.name == "fmfi_max" }?.value ?? .nan
            let held = lo >= target - 0.05 && hi <= target + 0.05 ? "yes" : "no"
            print(
                String(
                    format:
                        "target %.2f: reached FMFI %.3f in %.1f s (populated %@); holding %.0f s cost %.3f CPU s (%.2f%% of one CPU); FMFI while held %.3f…%.3f, within ±0.05: %@",
                    target, session.fmfiAtReady, reach, Units.formatBytes(populated), holdSeconds, cpu1 - cpu0,
                    (cpu1 - cpu0) / holdSeconds * 100, lo, hi, held))
            if populated > 0 {
                let micro = try await harness.program("micro/nb-micro.c", name: "nb-micro")
                let t0 = ContinuousClock.now
                _ = try await ProcessRunner.run(
                    ProcessSpec(
                        program: micro,
                        arguments: [
                            "sequential", "--size", String(UInt64(populated)), "--ops", "1",
                            "--thp", "nohuge",
                        ]))
                let floor = (ContinuousClock.now - t0).seconds
                print(
                    String(
                        format: "  reference: populating %@ with 4 KiB pages took %.1f s; ratio %.2fx",
                        Units.formatBytes(populated), floor, reach / floor))
            } else {
                print("  reference: not needed (the target was already reached without populating)")
            }
        }
        try? FileManager.default.removeItem(atPath: state)
    }
}
