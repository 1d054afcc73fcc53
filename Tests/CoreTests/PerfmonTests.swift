import Foundation
import NestBenchModel
import Testing

@testable import NestBenchCollectors
@testable import NestBenchProcess

/// Whether hardware counters open on this machine (this one: ENOENT, no PMU).
let hasPMU: Bool = {
    if case .available = PMUProbe.hardware() { return true }
    return false
}()

@Suite("libpfm4 encodings", .serialized)
struct PerfmonEncodingTests {
    /// Raw codes (umask << 8 | event) from ../shared/METHOD.md, "TLB-miss events".
    static let methodCodes: [String: [String: UInt64]] = {
        let intel: [String: UInt64] = ["tlb.dtlb_load_walks": 0x0e08, "tlb.dtlb_store_walks": 0x0e49, "tlb.itlb_walks": 0x0e85]
        let zen: [String: UInt64] = ["tlb.dtlb_walks": 0xf045]
        var codes: [String: [String: UInt64]] = [:]
        for pmu in ["bdw", "bdw_ep", "skl", "skx", "clx", "icl", "icx"] { codes[pmu] = intel }
        codes["spr"] = ["tlb.dtlb_load_walks": 0x0e12, "tlb.dtlb_store_walks": 0x0e13, "tlb.itlb_walks": 0x0e11]
        for pmu in ["amd64_fam17h_zen1", "amd64_fam17h_zen2", "amd64_fam19h_zen3"] {
            // ITLB: event 0x85 with umasks IF4K|IF2M|IF1G (0x1|0x2|0x4) as libpfm 4.13's AMD tables list them.
            codes[pmu] = zen.merging(["tlb.itlb_walks": 0x0785]) { a, _ in a }
        }
        codes["amd64_fam19h_zen4"] = zen.merging(["tlb.itlb_walks": 0x0f85]) { a, _ in a }  // + COALESCED4K 0x8
        return codes
    }()

    @Test(arguments: TLBEventSets.supportedPMUs)
    func everyEventOfTheTableEncodesForcingThePMU(pmu: String) throws {
        let set = try #require(TLBEventSets.forPMU(pmu))
        let expected = try #require(Self.methodCodes[pmu])
        let (core, encoded) = try Perfmon.withConfiguration(forcePMU: pmu) {
            () throws(PerfError) -> (String?, [String: EncodedEvent]) in
            var result: [String: EncodedEvent] = [:]
            for event in set.events { result[event.metric] = try Perfmon.encode(set.qualified(event)) }
            // libpfm keeps PMUs of earlier initializations marked present: check that the table exists.
            return (try Perfmon.knowsPMU(pmu)?.name, result)
        }
        #expect(core == pmu)
        for (metric, code) in expected {
            let e = try #require(encoded[metric], "\(pmu) has \(metric)")
            #expect(
                e.config == code, "\(pmu) \(metric): 0x\(String(e.config, radix: 16)) vs METHOD.md 0x\(String(code, radix: 16))")
            #expect(e.type == EncodedEvent.typeRaw && e.usesCounter)
        }
        // Every set counts cycles and instructions; walks are summed into tlb_misses.
        #expect(encoded["cycles"] != nil && encoded["instructions"] != nil)
        #expect(Set(expected.keys).isSubset(of: Set(set.walkMetrics)))
        #expect(set.walkMetrics.allSatisfy { encoded[$0] != nil })
    }

    @Test func broadwellWalkDurationAndEPT() throws {
        let e = try Perfmon.withConfiguration(forcePMU: "bdw_ep") { () throws(PerfError) -> [EncodedEvent] in
            [try Perfmon.encode("bdw_ep::DTLB_LOAD_MISSES:WALK_DURATION"), try Perfmon.encode("bdw_ep::EPT:WALK_CYCLES")]
        }
        #expect(e.map(\.config) == [0x1008, 0x104f])
    }

    @Test func emeraldRapidsUsesTheSPRTableEncodedInactive() throws {
        let set = TLBEventSets.emeraldRapids
        #expect(set.pmu == "spr" && set.encodeInactive)
        let emr = CPUIdentity(vendor: "GenuineIntel", family: 6, model: 207)
        #expect(emr.needsInactiveEncoding)
        if case .success(let chosen) = TLBEventSets.select(corePMU: nil, cpu: emr) {
            #expect(chosen.pmu == "spr")
        } else {
            Issue.record("EMR must select the SPR table")
        }
        let config = try Perfmon.withConfiguration(forcePMU: nil, encodeInactive: true) { () throws(PerfError) -> UInt64 in
            try Perfmon.encode("spr::DTLB_LOAD_MISSES:WALK_COMPLETED").config
        }
        #expect(config == 0x0e12)
    }

    @Test func guestScopeIsGuestOnly() throws {
        let (host, guest) = try Perfmon.withConfiguration(forcePMU: "bdw_ep") {
            () throws(PerfError) -> (EncodedEvent, EncodedEvent) in
            (
                try Perfmon.encode("bdw_ep::DTLB_LOAD_MISSES:WALK_COMPLETED", scope: .host),
                try Perfmon.encode("bdw_ep::DTLB_LOAD_MISSES:WALK_COMPLETED", scope: .guest)
            )
        }
        #expect(host.excludeGuest && !host.excludeHost)
        #expect(guest.excludeHost && !guest.excludeGuest)
        #expect(guest.config == host.config && guest.name.hasSuffix(":mg") && guest.fullName.contains("mg=1"))
        #expect(guest.provenance.contains("type=4; config=0xe08"))
    }

    @Test func unknownEventIsATypedError() {
        #expect(throws: PerfError.self) { try Perfmon.encode("NO_SUCH_EVENT:AT_ALL") }
        do {
            _ = try Perfmon.encode("NO_SUCH_EVENT:AT_ALL")
        } catch {
            #expect(error.code == .encoding && error.description.contains("NO_SUCH_EVENT"))
        }
    }

    @Test func softwareEventsNeedNoCounter() throws {
        let faults = try Perfmon.encode("perf::PERF_COUNT_SW_PAGE_FAULTS")
        #expect(faults.type == EncodedEvent.typeSoftware && faults.config == 2 && !faults.usesCounter)
    }

    @Test func cpuinfoIdentity() {
        let id = CPUIdentity.parse(
            "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n\n")
        #expect(id.vendor == "AuthenticAMD" && id.family == 26 && id.model == 2)
        #expect(!id.needsInactiveEncoding)
        if case .failure(let f) = TLBEventSets.select(corePMU: nil, cpu: id) {
            #expect(f.reason.contains("no core PMU") && f.reason.contains("0x1a"))
        } else {
            Issue.record("no table without a core PMU")
        }
    }
}

@Suite("perf counters", .serialized)
struct PerfCounterTests {
    @Test func scalingAndNotCounted() {
        #expect(CounterReading(raw: 100, timeEnabled: 10, timeRunning: 0).scaled == nil)
        #expect(CounterReading(raw: 100, timeEnabled: 10, timeRunning: 10).scaled == 100)
        #expect(CounterReading(raw: 100, timeEnabled: 10, timeRunning: 5).scaled == 200)
        let sum = CounterReading(raw: 1, timeEnabled: 2, timeRunning: 2) + CounterReading(raw: 3, timeEnabled: 4, timeRunning: 2)
        #expect(sum.raw == 4 && sum.timeEnabled == 6 && sum.timeRunning == 4)
    }

    /// Software events count a gated child from exec, as perf stat does.
    @Test(.timeLimit(.minutes(1)))
    func softwareEventsCountAGatedChild() async throws {
        let requests = try [
            ("faults", "perf::PERF_COUNT_SW_PAGE_FAULTS"), ("clock", "perf::PERF_COUNT_SW_TASK_CLOCK"),
        ].map { CounterRequest(metric: $0.0, event: try Perfmon.encode($0.1), scope: .host) }
        let child = try ProcessRunner.start(
            ProcessSpec(
                program: "/bin/sh", arguments: ["-c", "head -c 4000000 /dev/zero | wc -c"], environment: ["PATH": "/usr/bin:/bin"]
            ))
        let counters = CounterSet(requests: requests, target: .process(child.pid), groupSize: 4, enableOnExec: true)
        #expect(counters.failures.isEmpty, "\(counters.failures)")
        let gated = counters.read()
        #expect(gated.allSatisfy { $0?.raw == 0 }, "nothing counts before exec")
        try child.release()
        let outcome = await child.wait()
        #expect(outcome.exitStatus == 0)
        let readings = counters.read()
        let faults = try #require(readings[0]?.scaled)
        let clock = try #require(readings[1]?.scaled)
        // inherit: the shell's children (head, wc) are counted too.
        #expect(faults > 50, "page faults of sh + head + wc: \(faults)")
        #expect(clock > 100_000, "task-clock ns: \(clock)")
        counters.closeAll()
    }

    @Test func plannerWithoutPMURecordsTheReasonAndKeepsProxies() throws {
        let plan = PerfPlanner.plan(
            PerfSettings(events: ["my_walks": "DTLB_LOAD_MISSES:WALK_COMPLETED_2M_4M"]),
            hardware: .unavailable("unavailable: no PMU (test)"), cpu: CPUIdentity(vendor: "AuthenticAMD", family: 26, model: 2),
            tracepoint: { _ in throw PerfError(.permission, "no tracefs in this test") })
        let reasons = Dictionary(plan.unavailable.map { ($0.name, $0.unavailable ?? "") }, uniquingKeysWith: { a, _ in a })
        for name in TLBEventSets.headlineMetrics {
            #expect(reasons[name]?.hasPrefix("unavailable: no PMU (test)") == true, "\(name): \(reasons[name] ?? "measured?")")
        }
        #expect(reasons["my_walks"] != nil, "a user event that cannot be encoded or counted is unavailable, not dropped")
        #expect(plan.entries.allSatisfy { !$0.request.event.usesCounter })
        let proxies = plan.entries.filter { $0.proxyFor != nil }.map(\.request.metric)
        #expect(proxies.contains("perf.task_clock"))
        // Page faults are counted, as what they are: not a stand-in for TLB misses.
        let faults = try #require(plan.entries.first { $0.request.metric == "perf.page_faults" })
        #expect(faults.proxyFor == nil)
        #expect(plan.unavailable.allSatisfy { $0.value == nil })
        let flush = try #require(plan.unavailable.first { $0.name == "perf.tlb_flush" })
        #expect(flush.proxyFor == "tlb_misses" && flush.unavailable == "unavailable: no tracefs in this test")
    }

    @Test(.enabled(if: !hasPMU, "this machine has a PMU: the no-PMU path is covered by the injected test"))
    func thisMachineHasNoPMU() {
        guard case .unavailable(let reason) = PMUProbe.hardware() else { return }
        #expect(reason.hasPrefix("unavailable: no PMU"), "\(reason)")
    }

    @Test(.timeLimit(.minutes(1)), .enabled(if: hasPMU, "needs a hardware PMU (perf_event_open of cycles gives ENOENT here)"))
    func cyclesCountAGatedChild() async throws {
        let plan = PerfPlanner.plan(PerfSettings(proxies: false))
        let child = try ProcessRunner.start(ProcessSpec(program: "/bin/true"))
        let counters = CounterSet(
            requests: plan.requests, target: .process(child.pid), groupSize: plan.groupSize, enableOnExec: true)
        try child.release()
        _ = await child.wait()
        let metrics = PerfPlanner.metrics(plan, counters: counters)
        let cycles = try #require(metrics.first { $0.name == "cycles" })
        #expect((cycles.value ?? 0) > 0 && cycles.detail?.contains("scope=host") == true)
    }
}
