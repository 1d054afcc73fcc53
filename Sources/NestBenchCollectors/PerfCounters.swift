import CPerfmon
import Foundation

/// What perf counters are attached to.
public enum PerfTarget: Sendable, Hashable, CustomStringConvertible {
    /// A process and, through `inherit`, every thread and child it creates after the counters open.
    case process(Int32)
    /// Existing threads (e.g. a VM's vCPU threads); values are summed over them.
    case threads([Int32])
    /// Everything on one CPU (needs root or perf_event_paranoid ≤ 0).
    case cpu(Int)

    public var description: String {
        switch self {
        case .process(let pid): return "pid \(pid)"
        case .threads(let tids): return "threads \(tids.map(String.init).joined(separator: ","))"
        case .cpu(let cpu): return "cpu \(cpu)"
        }
    }
}

/// A counter to open: the metric it produces and its encoded event.
public struct CounterRequest: Sendable, Hashable {
    public var metric: String
    public var event: EncodedEvent
    public var scope: PerfScope

    public init(metric: String, event: EncodedEvent, scope: PerfScope) {
        self.metric = metric
        self.event = event
        self.scope = scope
    }
}

/// One read of a counter (PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING).
public struct CounterReading: Sendable, Hashable {
    public var raw: UInt64
    public var timeEnabled: UInt64
    public var timeRunning: UInt64

    public init(raw: UInt64, timeEnabled: UInt64, timeRunning: UInt64) {
        self.raw = raw
        self.timeEnabled = timeEnabled
        self.timeRunning = timeRunning
    }

    /// The count scaled for multiplexing (raw × enabled / running), or nil when the counter never
    /// ran ("not counted" — never 0).
    public var scaled: Double? {
        guard timeRunning > 0 else { return nil }
        if timeRunning >= timeEnabled { return Double(raw) }
        return Double(raw) * Double(timeEnabled) / Double(timeRunning)
    }

    /// Fraction of the enabled time the counter was on a PMU counter.
    public var runningFraction: Double? { timeEnabled > 0 ? Double(timeRunning) / Double(timeEnabled) : nil }

    /// Sums per-thread readings of one event.
    public static func + (a: CounterReading, b: CounterReading) -> CounterReading {
        CounterReading(raw: a.raw + b.raw, timeEnabled: a.timeEnabled + b.timeEnabled, timeRunning: a.timeRunning + b.timeRunning)
    }
}

/// Whether this machine's PMU can be opened at all (libpfm's "present" comes from CPUID only).
public enum PMUProbe {
    public enum Status: Sendable, Hashable {
        case available
        /// The reason, e.g. "unavailable: no PMU (perf_event_open of a hardware event: ENOENT)".
        case unavailable(String)
    }

    /// Opens a disabled hardware cycles counter on this process and closes it.
    public static func hardware() -> Status {
        var attr = perf_event_attr()
        attr.size = UInt32(MemoryLayout<perf_event_attr>.size)
        attr.type = EncodedEvent.typeHardware
        attr.config = 0
        attr.disabled = 1
        attr.exclude_kernel = 1
        let fd = PerfSyscall.open(&attr, pid: 0, cpu: -1, group: -1)
        if fd >= 0 {
            close(fd)
            return .available
        }
        return .unavailable(PerfSyscall.openError(errno, event: "PERF_COUNT_HW_CPU_CYCLES", target: "this process").reasonText)
    }
}

/// perf_event_open with EINTR retry and typed errors.
enum PerfSyscall {
    static func open(_ attr: inout perf_event_attr, pid: Int32, cpu: Int32, group: Int32) -> Int32 {
        while true {
            let fd = nb_perf_event_open(&attr, pid, cpu, group, UInt(PERF_FLAG_FD_CLOEXEC))
            if fd >= 0 || errno != EINTR { return fd }
        }
    }

    static func openError(_ e: Int32, event: String, target: String) -> PerfError {
        switch e {
        case ENOENT, ENODEV, EOPNOTSUPP:
            return PerfError(.noPMU, "perf_event_open(\(event)) on \(target)", errno: e)
        case EACCES, EPERM:
            let paranoid =
                KernelFile.read("/proc/sys/kernel/perf_event_paranoid")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            return PerfError(
                .permission, "perf_event_open(\(event)) on \(target) was refused (perf_event_paranoid=\(paranoid))", errno: e,
                hint: "set kernel.perf_event_paranoid <= 1 or run as root")
        default:
            return PerfError(.system, "perf_event_open(\(event)) on \(target)", errno: e)
        }
    }
}

extension PerfError {
    /// The text stored as a metric's `unavailable` reason.
    public var reasonText: String {
        switch code {
        case .noPMU: return "unavailable: no PMU (\(description))"
        default: return "unavailable: \(description)"
        }
    }
}

/// Open counters on one target. Counter events are opened in groups no larger than the PMU's
/// counters (scheduled together); software events and tracepoints each alone. Every fd is read on
/// its own with TOTAL_TIME_ENABLED/RUNNING, as perf stat does (inherit forbids group reads).
public final class CounterSet: @unchecked Sendable {
    public let target: PerfTarget
    public let requests: [CounterRequest]
    /// fds[i][t]: request i on target thread t; nil where it failed to open.
    private var fds: [[Int32]]
    /// Why request i could not be opened.
    public private(set) var failures: [String: PerfError]
    private let lock = NSLock()

    /// Opens every request on `target`. With `enableOnExec` the counters start when the target
    /// (gated before exec) calls exec; otherwise call `enable()`.
    public init(requests: [CounterRequest], target: PerfTarget, groupSize: Int, enableOnExec: Bool) {
        self.target = target
        self.requests = requests
        self.fds = Array(repeating: [], count: requests.count)
        self.failures = [:]
        let places: [(pid: Int32, cpu: Int32)]
        switch target {
        case .process(let pid): places = [(pid, -1)]
        case .threads(let tids): places = tids.map { ($0, -1) }
        case .cpu(let cpu): places = [(-1, Int32(cpu))]
        }
        // Chunks of counter events share a group leader; software events go alone.
        var chunks: [[Int]] = []
        var current: [Int] = []
        for (i, r) in requests.enumerated() {
            if !r.event.usesCounter {
                chunks.append([i])
                continue
            }
            current.append(i)
            if current.count == max(1, groupSize) {
                chunks.append(current)
                current = []
            }
        }
        if !current.isEmpty { chunks.append(current) }

        for place in places {
            for chunk in chunks {
                var leader: Int32 = -1
                for i in chunk {
                    var attr = requests[i].event.attribute()
                    attr.read_format = UInt64(PERF_FORMAT_TOTAL_TIME_ENABLED.rawValue | PERF_FORMAT_TOTAL_TIME_RUNNING.rawValue)
                    attr.inherit = 1
                    if leader < 0 {
                        attr.disabled = 1
                        attr.enable_on_exec = enableOnExec ? 1 : 0
                    }
                    let fd = PerfSyscall.open(&attr, pid: place.pid, cpu: place.cpu, group: leader)
                    if fd < 0 {
                        let error = PerfSyscall.openError(errno, event: requests[i].event.fullName, target: target.description)
                        if failures[requests[i].metric] == nil { failures[requests[i].metric] = error }
                        continue
                    }
                    if leader < 0 { leader = fd }
                    fds[i].append(fd)
                }
            }
        }
    }

    deinit { closeAll() }

    /// Starts counting (for targets that are not gated before exec).
    public func enable() {
        lock.lock()
        defer { lock.unlock() }
        for list in fds { for fd in list { _ = nb_perf_enable(fd) } }
    }

    public func disable() {
        lock.lock()
        defer { lock.unlock() }
        for list in fds { for fd in list { _ = nb_perf_disable(fd) } }
    }

    /// Reads every counter: per request, the reading summed over the target's threads, nil where
    /// it could not be opened or read.
    public func read() -> [CounterReading?] {
        lock.lock()
        defer { lock.unlock() }
        return fds.map { list -> CounterReading? in
            guard !list.isEmpty else { return nil }
            var total: CounterReading?
            for fd in list {
                var buffer = (UInt64(0), UInt64(0), UInt64(0))
                let n = withUnsafeMutableBytes(of: &buffer) { raw -> Int in
                    while true {
                        let r = Glibc.read(fd, raw.baseAddress, raw.count)
                        if r >= 0 || errno != EINTR { return r }
                    }
                }
                guard n == MemoryLayout<(UInt64, UInt64, UInt64)>.size else { return nil }
                let reading = CounterReading(raw: buffer.0, timeEnabled: buffer.1, timeRunning: buffer.2)
                total = total.map { $0 + reading } ?? reading
            }
            return total
        }
    }

    public func closeAll() {
        lock.lock()
        defer { lock.unlock() }
        for list in fds { for fd in list { close(fd) } }
        fds = Array(repeating: [], count: requests.count)
    }
}
