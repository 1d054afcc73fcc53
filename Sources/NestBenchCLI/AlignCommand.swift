import ArgumentParser
import Foundation
import NestBenchAlignment

struct AlignCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "align",
        abstract: "Which of a process's 2 MiB regions are mapped by one huge page, per layer.",
        discussion: """
            Reads /proc/PID/maps, /proc/PID/pagemap and /proc/kpageflags (root: pagemap shows page \
            frame numbers only with CAP_SYS_ADMIN). Every whole 2 MiB region of the process's private \
            anonymous, heap and anonymous-hugetlb mappings is one huge page (a THP head at a 512-aligned \
            frame with the whole range one compound page, or hugetlb), base pages, or not present. \
            Only this machine's layer for now: a process inside a guest is probed by the run collector.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The process id.")
    var pid: Int32

    @Option(help: "table or json.")
    var format: String = "table"

    @Flag(help: "List every region (virtual start, verdict, physical start of a huge page).")
    var regions = false

    func validate() throws {
        guard ["table", "json"].contains(format) else { throw ValidationError("--format must be one of: table, json") }
        guard pid > 0 else { throw ValidationError("PID must be a positive process id, found \(pid)") }
    }

    func run() async throws {
        _ = global.makeLogger()
        let result: Result<ProcessAlignment, AlignmentUnavailable>
        do {
            result = .success(try AlignmentProbe().probe(pid: pid))
        } catch {
            result = .failure(error)
        }
        let report = LayerAlignmentReport(layer: "host", pid: pid, result: result, includeRegions: regions)
        if format == "json" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            Console.out(String(decoding: try encoder.encode(["layers": [report]]), as: UTF8.self) + "\n")
        } else {
            Console.out(Self.table([report]))
        }
        if let reason = report.unavailable {
            throw CommandFailure(code: ExitCodes.error, message: "pid \(pid): \(reason)")
        }
    }

    static func table(_ layers: [LayerAlignmentReport]) -> String {
        var out = "layer  pid      mappings  present  huge  (thp  hugetlb)  base  not-present  huge-fraction  probe\n"
        for l in layers {
            let head =
                l.layer.padding(toLength: 6, withPad: " ", startingAt: 0) + " "
                + String(l.pid).padding(toLength: 8, withPad: " ", startingAt: 0)
            guard let c = l.counts, let mappings = l.mappings else {
                out += "\(head) \(l.unavailable ?? "unavailable")\n"
                continue
            }
            let fraction = l.hugeFraction.map { String(format: "%.4f", $0) } ?? "unavailable: no present region"
            out += head
            out += String(
                format: " %8d  %7d  %4d  (%4d  %7d)  %4d  %11d  ", mappings, c.present, c.huge, c.hugeTHP, c.hugeHugetlb, c.base,
                c.notPresent)
            out += fraction.padding(toLength: 13, withPad: " ", startingAt: 0)
            out += String(format: "  %.3f s\n", l.probeSeconds ?? 0)
            if let regions = l.regions {
                for r in regions {
                    out += "  \(r.virtualStart)  \(r.kind.rawValue)"
                    if let k = r.hugeKind { out += " \(k.rawValue)" }
                    if let p = r.physicalStart { out += "  phys \(p)" }
                    out += "  \(r.presentPages)/512 present\n"
                }
            }
        }
        return out
    }
}
