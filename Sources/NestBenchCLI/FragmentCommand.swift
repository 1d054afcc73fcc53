import ArgumentParser
import Foundation
import NestBenchCollectors
import NestBenchFragmentation
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess

struct FragmentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fragment",
        abstract: "Fragment this machine's free memory to a target FMFI, outside experiments.",
        discussion: """
            Populates free memory with 4 KiB pages, then releases all but one page per physical block \
            of 2^order pages until FMFI(order) over the movable zones reaches the target, then hands \
            whole blocks back while holding it. Progress goes to stderr; the result to stdout. With \
            --hold it keeps the fragmentation until Ctrl-C (or --hold-seconds); memory is always \
            given back when nestbench exits. Unless --allow-compaction, vm.compaction_proactiveness \
            and vm.compact_unevictable_allowed are 0 while it runs (proactive compaction migrates \
            the kept pages and undoes the holes); they are journaled and restored on exit, Ctrl-C, \
            or by the next nestbench after a kill -9. It holds this machine's lock while it runs, as \
            `run` does: one of them changes the machine at a time.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "Target FMFI, 0…1.")
    var target: Double

    @Option(help: "Buddy order the index is computed at (9 = 2 MiB pages on x86-64).")
    var order: Int = 9

    @Option(help: "anon-holes (anonymous memory) or page-cache (cached file pages).")
    var method: FragmentationSpec.Method = .anonHoles

    @Option(help: "Memory never taken while populating (OOM margin), e.g. 1GiB.")
    var slack: String = "1GiB"

    @Option(help: "Memory to leave free (the rest stays held), e.g. 6GiB; default: all that is not needed.")
    var free: String?

    @Flag(help: "Keep the fragmentation until Ctrl-C (or --hold-seconds).")
    var hold = false

    @Option(help: "With --hold: release after this many seconds.")
    var holdSeconds: Double?

    @Flag(inversion: .prefixedNo, help: "mlock the pages that keep the holes (compaction cannot migrate them).")
    var mlock = true

    @Flag(help: "Leave the compaction sysctls as they are (by default both are 0 while fragmenting and holding).")
    var allowCompaction = false

    @Option(help: "Give up when the target is not reached within this many seconds.")
    var timeout: Double = 300

    @Option(help: "Result format: table or json.")
    var format: TableOrJSON = .table

    @Flag(help: "Wait for this machine's lock instead of exiting 1 when another nestbench holds it.")
    var wait = false

    func validate() throws {
        guard (0...1).contains(target) else { throw ValidationError("--target must be in 0…1, got \(target)") }
        guard (1...10).contains(order) else { throw ValidationError("--order must be in 1…10, got \(order)") }
        guard Units.bytes(slack) != nil else { throw ValidationError("--slack: \"\(slack)\" is not a size such as 1GiB") }
        if let free, Units.bytes(free) == nil { throw ValidationError("--free: \"\(free)\" is not a size such as 6GiB") }
        if holdSeconds != nil && !hold { throw ValidationError("--hold-seconds needs --hold") }
    }

    func run() async throws {
        let logger = global.makeLogger()
        // One nestbench changes this machine at a time: the machine's lock before any knob or memory.
        let locks = try await CommandLocks.take([CommandLocks.machine], wait: wait, refusal: "; pass --wait to wait for it")
        defer { for lock in locks { lock.release() } }
        let journal = KnobJournal()
        do {
            OrphanedExperiments.mark(journal)
            for entry in try journal.recover() {
                Console.error("nestbench: restored \(entry.path) to \"\(entry.original)\" (left by a killed nestbench)")
            }
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
        let spec = FragmentationSpec(
            method: method, targetFMFI: target, order: order,
            slackBytes: Units.bytes(slack)!, freeBytes: free.flatMap(Units.bytes), hold: hold, mlock: mlock,
            sysctl: allowCompaction ? [:] : FragmentationSpec.pinnedCompaction, timeoutSeconds: timeout)
        // The pinned sysctls go through the platform (journaled first), as a condition's do in `run`.
        let platform = LocalPlatform(journal: journal, logger: logger)
        let restore = CleanupRegistry.shared.register { try? platform.restoreAll() }
        defer {
            CleanupRegistry.shared.unregister(restore)
            do { try platform.restoreAll() } catch { Console.error("nestbench: \(error)") }
        }
        do {
            for (path, value) in try platform.apply(spec.knobs, owner: "nestbench fragment") {
                Console.error("nestbench: \(path) = \(value) while fragmenting (restored on exit)")
            }
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
        let before = try Buddyinfo.live()
        Console.error(
            "nestbench: FMFI(\(order)) now \(String(format: "%.3f", before.machineFMFI(order: order))) over "
                + "\(before.machineZonesDescription); target \(target)")
        let directory = NSTemporaryDirectory() + "nestbench-fragment-\(getpid())"
        let signals = SignalTrap.install()
        defer { signals.cancel() }
        let session: FragmentationSession
        do {
            session = try await Fragmenter(journal: journal, logger: logger).start(spec, directory: directory) { event in
                switch event.kind {
                case "progress", "hold", "yield", "keepers", "topup":
                    let fields = event.fields.sorted { $0.key < $1.key }.map { key, value -> String in
                        if ["held", "free", "available", "released", "huge"].contains(key), let b = Double(value) {
                            return "\(key)=\(Units.formatBytes(b))"
                        }
                        return "\(key)=\(value)"
                    }
                    Console.error("  \(event.kind) " + fields.joined(separator: " "))
                default: break
                }
            }
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: error.description)
        }
        let reached = session.fmfiAtReady
        if hold {
            Console.error("nestbench: holding FMFI \(String(format: "%.3f", reached)); Ctrl-C releases")
            let deadline = holdSeconds.map { ContinuousClock.now + .seconds($0) }
            while deadline.map({ ContinuousClock.now < $0 }) ?? true {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        let (metrics, _, _) = await session.finish()
        try? FileManager.default.removeItem(atPath: directory)
        func value(_ name: String) -> Double? { metrics.first { $0.name == name }?.value }
        let result: [String: Double?] = [
            "target": target, "order": Double(order), "fmfi_reached": reached, "fmfi_min": value("fmfi_min"),
            "fmfi_max": value("fmfi_max"), "fmfi_released": value("fmfi_released"), "seconds": value("fragment_seconds"),
            "held_bytes": value("fragmenter_held_bytes"), "in_band": value("fmfi_in_band"),
        ]
        if format == .json {
            let data = try JSONSerialization.data(
                withJSONObject: result.mapValues { v -> Any in v.map { $0 as Any } ?? NSNull() },
                options: [.sortedKeys, .prettyPrinted])
            Console.out(String(decoding: data, as: UTF8.self) + "\n")
        } else {
            for key in result.keys.sorted() {
                Console.out("\(key)\t\(result[key]!.map { String(format: "%.4g", $0) } ?? "unavailable")\n")
            }
        }
        if reached < target - spec.tolerance {
            throw CommandFailure(
                code: ExitCodes.error,
                message: "reached FMFI \(String(format: "%.3f", reached)) only (target \(target)); free memory may be "
                    + "too small against the slack, or compaction undid the holes")
        }
    }
}
