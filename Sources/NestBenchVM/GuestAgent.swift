import Foundation
import NestBenchCollectors
import NestBenchModel

/// A request to the guest agent (Harness/guest/nb-agent.c): see that file for the protocol.
public struct AgentRequest: Sendable {
    public enum Verb: String, Sendable { case run, spawn, write, pin, kill, probe, qmp, detach }
    public var verb: Verb
    public var argv: [String] = []
    public var environment: [String: String] = [:]
    public var workingDirectory: String?
    public var stdoutPath: String?
    public var stderrPath: String?
    public var cpus: [Int] = []
    public var timeoutSeconds: Double?
    public var path: String?
    public var value: String?
    public var qmpSocket: String?
    /// pin: vCPU i → CPU vcpuCPUs[i].
    public var vcpuCPUs: [Int] = []
    public var pid: Int32?
    public var signal: Int32?
    /// run: the memory monitor's period in ms (nil: off) and the file its readings go to.
    public var monitorMillis: Int?
    public var samplesPath: String?
    /// run: the file the agent writes when the process stops itself (the alignment probe's hook).
    public var stopFile: String?
    /// Run: where the agent writes "started PID" once the process runs.
    public var startFile: String?
    /// probe: virtual ranges (start, length) to read; none: the process's anonymous mappings.
    public var ranges: [(start: UInt64, length: UInt64)] = []
    /// probe: also list the page-table frames / KVM's per-VM page counts.
    public var pageTables = false
    public var kvm = false

    public init(verb: Verb) { self.verb = verb }

    public static func run(_ argv: [String], environment: [String: String] = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"])
        -> AgentRequest
    {
        var r = AgentRequest(verb: .run)
        r.argv = argv
        r.environment = environment
        return r
    }

    /// The request file's text. Values cannot contain newlines (the protocol is line based).
    public func encoded() throws(VMError) -> String {
        var lines = ["verb \(verb.rawValue)"]
        lines += argv.map { "arg \($0)" }
        lines += environment.sorted { $0.key < $1.key }.map { "env \($0.key)=\($0.value)" }
        if let workingDirectory { lines.append("cwd \(workingDirectory)") }
        if let stdoutPath { lines.append("stdout \(stdoutPath)") }
        if let stderrPath { lines.append("stderr \(stderrPath)") }
        if !cpus.isEmpty { lines.append("cpus \(CPUList.format(cpus))") }
        if let timeoutSeconds { lines.append("timeout \(timeoutSeconds)") }
        if let path { lines.append("path \(path)") }
        if let value { lines.append("value \(value)") }
        if let qmpSocket { lines.append("qmp \(qmpSocket)") }
        lines += vcpuCPUs.map { "vcpu \($0)" }
        if let pid { lines.append("pid \(pid)") }
        if let signal { lines.append("signal \(signal)") }
        if let monitorMillis { lines.append("monitor \(monitorMillis)") }
        if let samplesPath { lines.append("samples \(samplesPath)") }
        if let stopFile { lines.append("stopfile \(stopFile)") }
        if let startFile { lines.append("startfile \(startFile)") }
        lines += ranges.map { "range 0x\(String($0.start, radix: 16)) \($0.length)" }
        if pageTables { lines.append("pgtable 1") }
        if kvm { lines.append("kvm 1") }
        if let bad = lines.first(where: { $0.contains("\n") || $0.contains("\0") }) {
            throw VMError("cannot pass a value with a newline to the guest agent: \(bad.prefix(80))")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// The agent's answer.
public struct AgentResponse: Sendable, Hashable {
    public var error: String?
    public var fields: [String: String]
    public var metrics: [Metric]
    /// pin: (vCPU index, thread id, CPUs it may run on, as read back).
    public var vcpus: [(index: Int, thread: Int32, cpus: [Int])]

    public static func == (a: AgentResponse, b: AgentResponse) -> Bool {
        a.error == b.error && a.fields == b.fields && a.metrics == b.metrics
            && a.vcpus.map { "\($0.index)/\($0.thread)/\($0.cpus)" } == b.vcpus.map { "\($0.index)/\($0.thread)/\($0.cpus)" }
    }

    public func hash(into h: inout Hasher) {
        h.combine(error)
        h.combine(fields)
    }

    public static func parse(_ text: String) -> AgentResponse {
        var r = AgentResponse(error: nil, fields: [:], metrics: [], vcpus: [])
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0])
            let value = parts.count > 1 ? String(parts[1]) : ""
            switch key {
            case "error": r.error = r.error.map { $0 + "; " + value } ?? value
            case "metric":
                let f = value.split(separator: " ")
                if f.count == 4, let v = Double(f[1]) {
                    r.metrics.append(
                        Metric(
                            name: String(f[0]), value: v, unit: String(f[2]),
                            polarity: Polarity(rawValue: String(f[3])) ?? .neutral,
                            source: "guest-agent"))
                }
            case "vcpu":
                let f = value.split(separator: " ")
                if f.count == 5, let i = Int(f[0]), let t = Int32(f[2]) {
                    r.vcpus.append((i, t, CPUList.parse(String(f[4])) ?? []))
                }
            default: r.fields[key] = value
            }
        }
        return r
    }

    public func int(_ key: String) -> Int? { fields[key].flatMap { Int($0) } }
    public func double(_ key: String) -> Double? { fields[key].flatMap { Double($0) } }
}

/// Talks to the agent of one guest through its share, as seen from this machine.
public final class GuestAgent: Sendable {
    /// This machine's path of the guest's /nb.
    public let spool: String
    public let name: String
    /// Where the guest mounts the share (`/nb`; the spool itself for an agent run on this machine).
    public let mount: String
    private let counter = Counter()

    public init(spool: String, name: String, mount: String = "/nb") {
        self.spool = spool
        self.name = name
        self.mount = mount
    }

    /// This machine's path → the guest's path (only files under the share cross over; the rest
    /// of this machine's root is visible read-only at the same paths).
    public func guestPath(_ hostPath: String) -> String {
        if hostPath == spool { return mount }
        if hostPath.hasPrefix(spool + "/") { return mount + hostPath.dropFirst(spool.count) }
        return hostPath
    }

    /// The agent's ready file, once it is up.
    public var ready: [String: String]? {
        guard let text = try? String(contentsOfFile: spool + "/ready", encoding: .utf8) else { return nil }
        return AgentResponse.parse(text).fields
    }

    /// Sends a request and waits for the answer; `failure` reports a dead VM early.
    public func send(_ request: AgentRequest, timeout: Double, failure: @Sendable () -> String? = { nil })
        async throws(VMError) -> AgentResponse
    {
        let id = "\(getpid())-\(counter.next())"
        let text = try request.encoded()
        let tmp = "\(spool)/.\(id).req.tmp"
        let final = "\(spool)/req/\(id).req"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8)), rename(tmp, final) == 0 else {
            throw VMError("\(name): cannot write the request \(final) (\(String(cString: strerror(errno))))")
        }
        let response = "\(spool)/resp/\(id).resp"
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        // The answer is looked for once more after the deadline: on a loaded machine this task
        // may wake long after its sleep, and an answer already there is not a silent agent.
        var last = false
        while !last {
            last = ContinuousClock.now >= deadline
            if let data = FileManager.default.contents(atPath: response) {
                try? FileManager.default.removeItem(atPath: response)
                let parsed = AgentResponse.parse(String(decoding: data, as: UTF8.self))
                if let e = parsed.error, parsed.fields["ok"] == nil {
                    throw VMError("\(name): \(request.verb.rawValue) \(request.argv.first ?? request.path ?? ""): \(e)")
                }
                return parsed
            }
            if let reason = failure() { throw VMError("\(name): \(reason)", unreachable: true) }
            if !last { try? await Task.sleep(for: .milliseconds(100)) }
        }
        // Said apart: an agent that never took the request (withdrawn here, so that it cannot run
        // late, e.g. start a QEMU nobody waits for) and one that took it and did not finish.
        let withdrawn = rename(final, "\(spool)/.\(id).req.withdrawn") == 0
        let state = withdrawn ? "never took the request (withdrawn)" : "took the request but did not answer"
        throw VMError(
            "\(name): the guest agent \(state) \(request.verb.rawValue) \(request.argv.first ?? "") within \(Int(timeout))s",
            unreachable: true)
    }

    /// Writes `value` to the kernel file `path` in the guest; returns what the file reads back
    /// (the selected value of a `[bracketed]` choice).
    public func write(_ value: String, to path: String, failure: @Sendable () -> String? = { nil })
        async throws(VMError) -> String
    {
        var w = AgentRequest(verb: .write)
        w.path = path
        w.value = value
        let r = try await send(w, timeout: 60, failure: failure)
        return KernelFile.selectedValue(r.fields["value"] ?? "")
    }

    /// Runs a command in the guest and returns its exit status and stdout.
    public func output(_ argv: [String], timeout: Double = 60, failure: @Sendable () -> String? = { nil })
        async throws(VMError) -> (status: Int?, stdout: String)
    {
        let file = "\(spool)/.out-\(getpid())-\(counter.next())"
        var r = AgentRequest.run(argv)
        r.stdoutPath = guestPath(file)
        r.timeoutSeconds = timeout
        let response = try await send(r, timeout: timeout + 30, failure: failure)
        defer { try? FileManager.default.removeItem(atPath: file) }
        // The agent creates the file before the command runs: one that cannot be read is an error
        // of the share, never an empty output.
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw VMError(
                "the guest ran \(argv.first ?? "")\(response.int("exit").map { " (exit \($0))" } ?? ""), but its output \(file) cannot be read"
            )
        }
        return (response.int("exit"), text)
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}
