/// What the collectors of an experiment measure (the `collectors:` section of an experiment file).
public struct CollectorSettings: Codable, Sendable, Hashable {
    /// Hardware counters (libpfm4 + perf_event_open).
    public var perf: PerfSettings
    /// The background memory monitor.
    public var monitor: MonitorSettings
    /// The alignment probe's opt-in timeline (nil: the probe runs once, at the end of the measured phase).
    public var alignment: AlignmentSettings?

    public init(
        perf: PerfSettings = PerfSettings(), monitor: MonitorSettings = MonitorSettings(),
        alignment: AlignmentSettings? = nil
    ) {
        self.perf = perf
        self.monitor = monitor
        self.alignment = alignment
    }
}

/// `collectors.alignment`: the alignment probe's timeline, opt-in.
public struct AlignmentSettings: Codable, Sendable, Hashable {
    /// Probe the measured process every this many ms while it runs; nil: off (the default).
    public var intervalMillis: Int?
    /// The shortest interval a file may ask for: one probe pass over a 4 GiB buffer takes tens of
    /// ms and holds the process's memory-map lock while it reads.
    public static let minimumIntervalMillis = 100

    public init(intervalMillis: Int? = nil) {
        self.intervalMillis = intervalMillis
    }
}

/// `collectors.perf`: which counters a run opens on the workload.
public struct PerfSettings: Codable, Sendable, Hashable {
    /// Use this machine's TLB event set (per microarchitecture); false = only `events`.
    public var defaultEvents: Bool
    /// Extra events, metric name → libpfm event string; a name of the default set overrides it.
    public var events: [String: String]
    /// `host` (default) or `guest` (`:mg`, guest-only: for a VM's vCPU threads).
    public var scope: String
    /// Collect the software-event and tracepoint proxies (page-faults, minor-faults, task-clock, tlb:tlb_flush).
    public var proxies: Bool

    public static let scopes = ["host", "guest"]

    public init(defaultEvents: Bool = true, events: [String: String] = [:], scope: String = "host", proxies: Bool = true) {
        self.defaultEvents = defaultEvents
        self.events = events
        self.scope = scope
        self.proxies = proxies
    }
}

/// `collectors.monitor`: the background sampler of FMFI, vmstat, MemFree and AnonHugePages.
public struct MonitorSettings: Codable, Sendable, Hashable {
    /// Sampling period; nil turns the monitor off.
    public var intervalMillis: Int?
    /// FMFI order (9 = 2 MiB pages on x86-64).
    public var order: Int

    public init(intervalMillis: Int? = 250, order: Int = 9) {
        self.intervalMillis = intervalMillis
        self.order = order
    }
}
