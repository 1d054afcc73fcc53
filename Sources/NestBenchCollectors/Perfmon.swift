import CPerfmon
import Foundation

/// Errors from libpfm4 and perf_event_open; each names the event and what to fix.
public struct PerfError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// perf_event_open gave ENOENT/ENODEV/EOPNOTSUPP for a hardware event: no PMU here.
        case noPMU
        /// EACCES/EPERM: perf_event_paranoid or capabilities.
        case permission
        /// libpfm does not know the event (or its umask) on the active PMU.
        case encoding
        /// libpfm itself could not initialize.
        case library
        /// Any other perf_event_open/read failure.
        case system
    }

    public var code: Code
    public var message: String
    public var errno: Int32?
    public var hint: String?

    public init(_ code: Code, _ message: String, errno: Int32? = nil, hint: String? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
        self.hint = hint
    }

    public var description: String {
        var text = message
        if let errno { text += " (\(String(cString: strerror(errno))))" }
        if let hint { text += "; \(hint)" }
        return text
    }
}

/// Whose execution an event counts, from the host's point of view.
public enum PerfScope: String, Codable, Sendable, Hashable, CaseIterable {
    /// The host side only (libpfm's default `mh`: exclude_guest=1) — a native workload, or the
    /// host's own work for a VM.
    case host
    /// Guest mode only (`:mg`, exclude_host=1): a VM's vCPU threads counted from the host.
    case guest
}

/// An event as libpfm encoded it for perf_event_open (PFM_OS_PERF_EVENT_EXT).
public struct EncodedEvent: Sendable, Hashable, Codable {
    /// The event string that was encoded, e.g. `bdw_ep::DTLB_LOAD_MISSES:WALK_COMPLETED:mg`.
    public var name: String
    /// libpfm's fully qualified form, with every modifier.
    public var fullName: String
    public var type: UInt32
    public var config: UInt64
    public var config1: UInt64
    public var excludeUser: Bool
    public var excludeKernel: Bool
    public var excludeHost: Bool
    public var excludeGuest: Bool

    public init(
        name: String, fullName: String, type: UInt32, config: UInt64, config1: UInt64 = 0, excludeUser: Bool = false,
        excludeKernel: Bool = false, excludeHost: Bool = false, excludeGuest: Bool = false
    ) {
        self.name = name
        self.fullName = fullName
        self.type = type
        self.config = config
        self.config1 = config1
        self.excludeUser = excludeUser
        self.excludeKernel = excludeKernel
        self.excludeHost = excludeHost
        self.excludeGuest = excludeGuest
    }

    public static let typeHardware: UInt32 = 0
    public static let typeSoftware: UInt32 = 1
    public static let typeTracepoint: UInt32 = 2
    public static let typeRaw: UInt32 = 4

    /// Counted by a PMU counter (not a kernel software event or tracepoint).
    public var usesCounter: Bool { type != Self.typeSoftware && type != Self.typeTracepoint }

    /// `name=…; type=4; config=0xe08` — what a stored value records about its event.
    public var provenance: String {
        var text = "event=\(fullName); type=\(type); config=0x\(String(config, radix: 16))"
        if config1 != 0 { text += "; config1=0x\(String(config1, radix: 16))" }
        return text
    }

    /// A perf_event_attr for this event (size, type, config, privilege and scope bits).
    func attribute() -> perf_event_attr {
        var attr = perf_event_attr()
        attr.size = UInt32(MemoryLayout<perf_event_attr>.size)
        attr.type = type
        attr.config = config
        attr.config1 = config1
        attr.exclude_user = excludeUser ? 1 : 0
        attr.exclude_kernel = excludeKernel ? 1 : 0
        attr.exclude_host = excludeHost ? 1 : 0
        attr.exclude_guest = excludeGuest ? 1 : 0
        return attr
    }
}

/// A PMU libpfm detected (from CPUID: "present" does not prove a counter exists).
public struct PMUDescription: Sendable, Hashable, Codable {
    public var name: String
    public var description: String
    /// Generic (programmable) counters per logical CPU.
    public var counters: Int
    public var fixedCounters: Int
}

/// libpfm4, serialized: it is not safe to call concurrently. One lock guards every call and the
/// one-time `pfm_initialize()`.
public enum Perfmon {
    // Recursive: `withConfiguration` bodies call `encode`.
    private static let lock = NSRecursiveLock()
    nonisolated(unsafe) private static var initResult: Int32?

    /// Runs `body` holding the library lock, initializing libpfm first if needed.
    static func locked<R>(_ body: () throws(PerfError) -> R) throws(PerfError) -> R {
        lock.lock()
        defer { lock.unlock() }
        try initializeLocked()
        return try body()
    }

    private static func initializeLocked() throws(PerfError) {
        if initResult == nil {
            if ProcessInfo.processInfo.environment["LIBPFM_ENCODE_INACTIVE"] == nil, CPUIdentity.local().needsInactiveEncoding {
                // Emerald Rapids is unknown to libpfm 4.13: its table is Sapphire Rapids', encoded inactive.
                setenv("LIBPFM_ENCODE_INACTIVE", "1", 1)
            }
            initResult = pfm_initialize()
        }
        if let rc = initResult, rc != PFM_SUCCESS {
            throw PerfError(.library, "libpfm4 failed to initialize: \(String(cString: pfm_strerror(rc)))")
        }
    }

    /// Runs `body` with libpfm re-initialized under `LIBPFM_FORCE_PMU` / `LIBPFM_ENCODE_INACTIVE`
    /// (for encoding tests and `nestbench events --pmu`), then restores the default initialization.
    public static func withConfiguration<R>(
        forcePMU: String?, encodeInactive: Bool = false, _ body: () throws(PerfError) -> R
    ) throws(PerfError) -> R {
        lock.lock()
        defer { lock.unlock() }
        let saved: [(String, String?)] = ["LIBPFM_FORCE_PMU", "LIBPFM_ENCODE_INACTIVE"].map { name in
            (name, getenv(name).map { String(cString: $0) })
        }
        func restore() {
            pfm_terminate()
            for (name, value) in saved {
                if let value { setenv(name, value, 1) } else { unsetenv(name) }
            }
            initResult = nil
        }
        if initResult != nil { pfm_terminate() }
        if let forcePMU { setenv("LIBPFM_FORCE_PMU", forcePMU, 1) } else { unsetenv("LIBPFM_FORCE_PMU") }
        if encodeInactive { setenv("LIBPFM_ENCODE_INACTIVE", "1", 1) } else { unsetenv("LIBPFM_ENCODE_INACTIVE") }
        initResult = pfm_initialize()
        defer { restore() }
        try initializeLocked()
        return try body()
    }

    /// Encodes `name` for perf_event_open, counting user and kernel (as perf stat does); in guest
    /// scope counter events get `:mg` (guest-only).
    public static func encode(_ name: String, scope: PerfScope = .host) throws(PerfError) -> EncodedEvent {
        try locked { () throws(PerfError) -> EncodedEvent in
            let plain = try encodeLocked(name)
            guard scope == .guest, plain.usesCounter else { return plain }
            return try encodeLocked(name + ":mg")
        }
    }

    private static func encodeLocked(_ name: String) throws(PerfError) -> EncodedEvent {
        var attr = perf_event_attr()
        var fstr: UnsafeMutablePointer<CChar>? = nil
        let rc: Int32 = withUnsafeMutablePointer(to: &attr) { attrPointer in
            withUnsafeMutablePointer(to: &fstr) { fstrPointer in
                var arg = pfm_perf_encode_arg_t()
                arg.size = MemoryLayout<pfm_perf_encode_arg_t>.size
                arg.attr = attrPointer
                arg.fstr = fstrPointer
                return pfm_get_os_event_encoding(name, PFM_PLM0 | PFM_PLM3, PFM_OS_PERF_EVENT_EXT, &arg)
            }
        }
        defer { free(fstr) }
        guard rc == PFM_SUCCESS else {
            throw PerfError(
                .encoding, "libpfm cannot encode \"\(name)\": \(String(cString: pfm_strerror(rc)))",
                hint: "`nestbench events` lists the events this machine uses")
        }
        return EncodedEvent(
            name: name, fullName: fstr.map { String(cString: $0) } ?? name, type: attr.type, config: attr.config,
            config1: attr.config1, excludeUser: attr.exclude_user != 0, excludeKernel: attr.exclude_kernel != 0,
            excludeHost: attr.exclude_host != 0, excludeGuest: attr.exclude_guest != 0)
    }

    /// The core PMU libpfm detected (from CPUID), if any.
    public static func corePMU() throws(PerfError) -> PMUDescription? {
        try locked { () throws(PerfError) -> PMUDescription? in
            for raw in PFM_PMU_NONE.rawValue..<PFM_PMU_MAX.rawValue {
                var info = pfm_pmu_info_t()
                info.size = MemoryLayout<pfm_pmu_info_t>.size
                guard pfm_get_pmu_info(pfm_pmu_t(rawValue: raw), &info) == PFM_SUCCESS, info.is_present != 0,
                    info.type == PFM_PMU_TYPE_CORE
                else { continue }
                return PMUDescription(
                    name: String(cString: info.name), description: String(cString: info.desc),
                    counters: Int(info.num_cntrs), fixedCounters: Int(info.num_fixed_cntrs))
            }
            return nil
        }
    }

    /// Whether a PMU table named `name` exists in this libpfm (present or not).
    public static func knowsPMU(_ name: String) throws(PerfError) -> PMUDescription? {
        try locked { () throws(PerfError) -> PMUDescription? in
            for raw in PFM_PMU_NONE.rawValue..<PFM_PMU_MAX.rawValue {
                var info = pfm_pmu_info_t()
                info.size = MemoryLayout<pfm_pmu_info_t>.size
                guard pfm_get_pmu_info(pfm_pmu_t(rawValue: raw), &info) == PFM_SUCCESS, String(cString: info.name) == name
                else { continue }
                return PMUDescription(
                    name: name, description: String(cString: info.desc), counters: Int(info.num_cntrs),
                    fixedCounters: Int(info.num_fixed_cntrs))
            }
            return nil
        }
    }

    /// libpfm's API version (pfm_get_version) as "major.minor" — 4.0 for every 4.x release.
    public static var libraryVersion: String {
        let v = (try? locked { () throws(PerfError) -> Int32 in pfm_get_version() }) ?? 0
        return "\(v >> 16).\(v & 0xffff)"
    }
}

/// Vendor, family and model from /proc/cpuinfo.
public struct CPUIdentity: Sendable, Hashable, Codable {
    public var vendor: String
    public var family: Int
    public var model: Int
    public var modelName: String

    public init(vendor: String, family: Int, model: Int, modelName: String = "") {
        self.vendor = vendor
        self.family = family
        self.model = model
        self.modelName = modelName
    }

    public static func parse(_ cpuinfo: String) -> CPUIdentity {
        var fields: [String: String] = [:]
        for line in cpuinfo.split(separator: "\n") {
            if line.trimmingCharacters(in: .whitespaces).isEmpty, !fields.isEmpty { break }
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmingCharacters(in: .whitespaces)
            if fields[key] == nil { fields[key] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return CPUIdentity(
            vendor: fields["vendor_id"] ?? "unknown", family: Int(fields["cpu family"] ?? "") ?? -1,
            model: Int(fields["model"] ?? "") ?? -1, modelName: fields["model name"] ?? "unknown")
    }

    public static func local() -> CPUIdentity { parse(KernelFile.read("/proc/cpuinfo") ?? "") }

    /// Intel family 6 model 207 (Emerald Rapids): unknown to libpfm 4.13, uses the SPR table.
    public var needsInactiveEncoding: Bool { vendor == "GenuineIntel" && family == 6 && model == 207 }

    /// "AuthenticAMD family 0x1a model 0x2".
    public var summary: String {
        "\(vendor) family 0x\(String(family, radix: 16)) model 0x\(String(model, radix: 16)) (\(modelName))"
    }
}
