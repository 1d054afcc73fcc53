import ArgumentParser
import Foundation
import NestBenchCollectors
import NestBenchModel

struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "What this machine can and cannot measure or run, one line each with the reason.")

    @OptionGroup var global: GlobalOptions

    @Option(help: "table or json.")
    var format: TableOrJSON = .table

    func run() async throws {
        _ = global.makeLogger()
        let checks = Doctor.checks()
        if format == .json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            Console.out(String(decoding: try encoder.encode(checks), as: UTF8.self) + "\n")
            return
        }
        let width = checks.map(\.name.count).max() ?? 0
        for c in checks {
            let name = c.name.padding(toLength: width, withPad: " ", startingAt: 0)
            let status = c.status.rawValue.padding(toLength: 11, withPad: " ", startingAt: 0)
            Console.out("\(name)  \(status) \(c.value) — \(c.reason)\n")
        }
    }
}

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "The TLB event set this machine would use and each event's encoding, or why not.")

    @OptionGroup var global: GlobalOptions

    @Option(help: "Show another microarchitecture's table by forcing libpfm's PMU (e.g. bdw_ep, skx, spr, amd64_fam19h_zen4).")
    var pmu: String?

    @Option(help: "host, or guest (guest-only :mg events, for VM vCPU threads).")
    var scope: PerfScope = .host

    @Option(help: "table or json.")
    var format: TableOrJSON = .table

    func validate() throws {
        if let pmu, TLBEventSets.forPMU(pmu) == nil {
            throw ValidationError("--pmu \(pmu) has no TLB table; known: \(TLBEventSets.supportedPMUs.joined(separator: ", "))")
        }
    }

    struct Line: Codable {
        var metric: String
        var event: String
        var encoding: String?
        var type: UInt32?
        var config: String?
        var unavailable: String?
        var proxyFor: String?

        enum CodingKeys: String, CodingKey {
            case metric, event, encoding, type, config, unavailable
            case proxyFor = "proxy_for"
        }
    }

    struct Output: Codable {
        var microarchitecture: String?
        var pmu: String?
        var hardware: String
        var scope: String
        var events: [Line]
        var note: String?
    }

    func run() async throws {
        _ = global.makeLogger()
        let output: Output
        if let pmu {
            let set = TLBEventSets.forPMU(pmu)!
            output = try Perfmon.withConfiguration(forcePMU: pmu) { () throws(PerfError) -> Output in
                Output(
                    microarchitecture: set.microarchitecture, pmu: pmu,
                    hardware: "forced (LIBPFM_FORCE_PMU=\(pmu)): encodings only",
                    scope: scope.rawValue, events: set.events.map { line($0.metric, set.qualified($0), scope) }, note: nil)
            }
        } else {
            let hardware: String
            switch PMUProbe.hardware() {
            case .available: hardware = "available"
            case .unavailable(let reason): hardware = reason
            }
            let plan = PerfPlanner.plan(PerfSettings(scope: scope.rawValue))
            var lines = plan.entries.map { e in
                Line(
                    metric: e.request.metric, event: e.request.event.name, encoding: e.request.event.fullName,
                    type: e.request.event.type, config: "0x" + String(e.request.event.config, radix: 16), unavailable: nil,
                    proxyFor: e.proxyFor)
            }
            lines += plan.unavailable.map {
                Line(metric: $0.name, event: "—", unavailable: $0.unavailable, proxyFor: $0.proxyFor)
            }
            output = Output(
                microarchitecture: plan.eventSet?.microarchitecture, pmu: plan.eventSet?.pmu, hardware: hardware,
                scope: scope.rawValue, events: lines,
                note: plan.eventSet == nil
                    ? "no TLB event set for this machine: TLB-miss metrics are recorded as unavailable" : nil)
        }
        if format == .json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            Console.out(String(decoding: try encoder.encode(output), as: UTF8.self) + "\n")
            return
        }
        var out = "TLB event set: \(output.microarchitecture.map { "\($0) (libpfm \(output.pmu ?? "?"))" } ?? "none")\n"
        out += "hardware counters: \(output.hardware)\nscope: \(output.scope)\n"
        if let note = output.note { out += "note: \(note)\n" }
        for l in output.events {
            let proxy = l.proxyFor.map { " [proxy for \($0)]" } ?? ""
            if let reason = l.unavailable {
                out += "\(l.metric)\(proxy): \(reason)\n"
            } else {
                out += "\(l.metric)\(proxy): \(l.encoding ?? l.event) — type \(l.type ?? 0), config \(l.config ?? "?")\n"
            }
        }
        Console.out(out)
    }

    func line(_ metric: String, _ event: String, _ scope: PerfScope) -> Line {
        do {
            let e = try Perfmon.encode(event, scope: scope)
            return Line(
                metric: metric, event: event, encoding: e.fullName, type: e.type, config: "0x" + String(e.config, radix: 16))
        } catch {
            return Line(metric: metric, event: event, unavailable: error.reasonText)
        }
    }
}
