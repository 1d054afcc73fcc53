import ArgumentParser
import Foundation
import NestBenchCollectors
import NestBenchModel

struct FMFICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fmfi",
        abstract: "Free memory fragmentation index per node/zone and for the whole machine.",
        discussion: """
            FMFI(j) = (F − Σ_{i≥j} k_i·2^i) / F from /proc/buddyinfo (or FILE), as the kernel's \
            /sys/kernel/debug/extfrag/unusable_index. The machine value pools the zones that hold \
            movable memory and names them. --check-kernel compares with the live unusable_index read \
            at the same moment (mounting debugfs for the duration if needed).
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "A buddyinfo file (default: /proc/buddyinfo).")
    var buddyinfo: String = "/proc/buddyinfo"

    @Option(help: "Order j (9 = 2 MiB pages on x86-64), 0...10.")
    var order: Int = 9

    @Option(help: "table or json.")
    var format: TableOrJSON = .table

    @Flag(help: "Compare with the live kernel's extfrag/unusable_index (root); exit 1 on a difference.")
    var checkKernel = false

    func validate() throws {
        guard (0...10).contains(order) else { throw ValidationError("--order must be in 0...10, found \(order)") }
        if checkKernel && buddyinfo != "/proc/buddyinfo" {
            throw ValidationError("--check-kernel compares the live /proc/buddyinfo: do not pass --buddyinfo with it")
        }
    }

    func run() async throws {
        _ = global.makeLogger()
        let buddy: Buddyinfo
        var check: LiveFMFICheck.Result?
        do {
            if checkKernel {
                check = try LiveFMFICheck.run()
                buddy = check!.buddyinfo
            } else {
                let text: String
                do {
                    text = try InputFile.text(buddyinfo, limit: 64 << 20)
                } catch {
                    throw CommandFailure(code: ExitCodes.error, message: "\(error.description) (the buddyinfo file)")
                }
                buddy = try Buddyinfo.parse(text, path: buddyinfo)
            }
        } catch let failure as CommandFailure {
            throw failure
        } catch {
            throw CommandFailure(code: ExitCodes.error, message: "\(error)")
        }
        let report = FMFIReport(buddy, order: order, source: buddyinfo)
        if format == .json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            Console.out(String(decoding: try encoder.encode(report), as: UTF8.self) + "\n")
        } else {
            var out = "FMFI at order \(order) from \(buddyinfo)\n"
            for z in report.zones {
                out += "node \(z.node) \(z.zone.padding(toLength: 8, withPad: " ", startingAt: 0)) "
                out +=
                    String(format: "%.4f", z.fmfi)
                    + "  free \(z.freePages) pages  unusable_index \(z.unusableIndex.joined(separator: " "))\n"
            }
            out +=
                String(format: "machine %.4f", report.machineFMFI)
                + " (zones holding movable memory: \(report.machineZones.joined(separator: ", ")))\n"
            Console.out(out)
        }
        if let check {
            if check.mismatches.isEmpty {
                Console.error(
                    "matches /sys/kernel/debug/extfrag/unusable_index at every zone and order (read \(check.attempts)×)")
            } else {
                for m in check.mismatches { Console.error("mismatch: \(m)") }
                throw CommandFailure(code: ExitCodes.error, message: "FMFI differs from the kernel's unusable_index")
            }
        }
    }
}
