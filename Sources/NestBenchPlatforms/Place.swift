import Foundation
import NestBenchCollectors
import NestBenchModel
import NestBenchProcess

/// What a place could not do. Callers branch on the case, never on the message.
public enum PlaceError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The place is gone or does not answer (a guest whose VM died, an agent that timed out):
    /// whatever holds it (a stack) must be started afresh.
    case unreachable(place: String, reason: String)
    /// The place has no such file or knob.
    case missing(place: String, path: String)
    /// The place cannot do this at all (e.g. an operation its provider does not offer).
    case unsupported(place: String, what: String)
    /// It tried and failed (permission, a rejected value, a non-zero exit).
    case failed(place: String, message: String)

    public var description: String {
        switch self {
        case .unreachable(let place, let reason): "\(place): \(reason)"
        case .missing(let place, let path): "\(place) has no \(path)"
        case .unsupported(let place, let what): "\(place) cannot \(what)"
        case .failed(let place, let message): "\(place): \(message)"
        }
    }

    public var isUnreachable: Bool {
        if case .unreachable = self { return true }
        return false
    }
}

/// A measured process's end with what the run's collectors measured around it, where it ran.
public struct MeasuredRun: Sendable {
    public var outcome: ProcessOutcome
    public var metrics: [Metric]
    public var samples: [TimelineSample]

    public init(outcome: ProcessOutcome, metrics: [Metric], samples: [TimelineSample]) {
        self.outcome = outcome
        self.metrics = metrics
        self.samples = samples
    }
}

/// Where work happens: this machine, or a guest layer reached through its agent. Conditions,
/// collectors and workload adapters run against a place; what it cannot do is a `PlaceError`
/// (or a `ProcessError` naming the program for processes).
///
/// Paths are this machine's: a place whose files live elsewhere (a guest's share) translates them.
public protocol Place: Sendable {
    /// "this machine", "L1", "L2.0": in messages and in each metric's detail (where it was measured).
    var name: String { get }
    /// A file of the place's kernel (/proc, /sys), read now.
    func read(_ path: String) async throws(PlaceError) -> String
    /// Writes knobs, in order; returns each one's value as read back. On this machine the
    /// originals are journaled (restored at the end, also after a crash); in a guest they are
    /// remembered and put back by `restoreKnobs()`.
    func apply(_ knobs: [Knob], owner: String) async throws(PlaceError) -> [String: String]
    /// Puts back the knobs `apply` changed that the place itself restores after a run; returns
    /// the failures. This machine's journaled knobs go back with the next configuration or at the end.
    func restoreKnobs() async -> [String]
    /// sync, drop the page cache and compact all memory.
    func dropCachesAndCompact() async throws(PlaceError)
    /// Runs the measured process with the run's collectors attached at the gate and waits for it.
    func launchMeasured(_ spec: ProcessSpec) async throws(ProcessError) -> MeasuredRun
    /// Starts a helper process (a server, the fragmenter) in its own process group; the caller stops it.
    func startHelper(_ spec: ProcessSpec) async throws(ProcessError) -> any HelperProcess
    /// A directory of this machine (visible in the place) for the files of one run.
    func runDirectory(_ tag: String) -> String
}

/// A place whose memory can be taken by a balloon (a guest with a virtio-balloon device whose
/// QEMU NestBench controls).
public protocol BalloonPlace: Place {
    /// Sets the guest's memory to `bytes` (nil: back to all of it) and waits until the balloon
    /// gets there; returns the guest's memory as the balloon reports it.
    func balloon(to bytes: UInt64?) async throws(PlaceError) -> UInt64
}

/// What saving and restoring a guest took. Host times are seconds on this machine's monotonic
/// clock, from the moment the guest was stopped; guest clocks are its CLOCK_MONOTONIC as its
/// agent read it (the guest's clock stands still while its VM is stopped, saved and restored).
public struct SaveRestoreTimes: Sendable, Hashable {
    /// The guest's clock when its agent detached from its share, just before the stop.
    public var guestDetached: Double
    /// The guest's clock when its agent heard the doorbell, just after the guest ran again.
    public var guestResumed: Double
    /// Eager: from the stop until the image was written and the saved QEMU was gone (nil for a
    /// lazy restore: nothing is saved).
    public var saveSeconds: Double?
    /// From the stop until the restore began (0 for a lazy restore: its QEMU already waits).
    public var restoreStart: Double
    /// From the restore's start until the guest ran again (eager: the image loaded; lazy: the
    /// device state moved), `cont` done.
    public var restoreSeconds: Double
    /// Eager: the size of the saved image.
    public var imageBytes: UInt64?
    /// Lazy: from the stop until every page had come over (the postcopy migration completed).
    public var postcopySeconds: Double?
    /// Lazy: the bytes of memory the migration sent.
    public var transferredBytes: UInt64?

    public init(
        guestDetached: Double, guestResumed: Double, saveSeconds: Double?, restoreStart: Double, restoreSeconds: Double,
        imageBytes: UInt64?, postcopySeconds: Double? = nil, transferredBytes: UInt64? = nil
    ) {
        self.guestDetached = guestDetached
        self.guestResumed = guestResumed
        self.saveSeconds = saveSeconds
        self.restoreStart = restoreStart
        self.restoreSeconds = restoreSeconds
        self.imageBytes = imageBytes
        self.postcopySeconds = postcopySeconds
        self.transferredBytes = transferredBytes
    }
}

/// A guest NestBench can save and restore while its workload runs (`save_restore:`): a
/// `detachable` guest whose QEMU runs on this machine.
public protocol SaveRestorePlace: Place {
    /// Eager: saves the running guest to an image file (its agent detached from the share first,
    /// the VM stopped, the QEMU gone), restores it in a new QEMU, and lets it run on; the image is
    /// removed whatever happens. Lazy: moves it to a new QEMU by postcopy migration (running at
    /// once, its pages following). A failure leaves the place unusable.
    func saveAndRestore(_ mode: SaveRestoreSpec.Mode) async throws(PlaceError) -> SaveRestoreTimes
}

extension Place {
    /// FMFI(order) over the movable zones of the place's kernel, read now; nil when unreadable.
    public func fmfi(order: Int) async -> Double? {
        guard let text = try? await read("/proc/buddyinfo") else { return nil }
        return (try? Buddyinfo.parse(text, path: "\(name):/proc/buddyinfo"))?.machineFMFI(order: order)
    }

    /// Which zones that FMFI covers.
    public func zones() async -> String {
        guard let text = try? await read("/proc/buddyinfo"), let info = try? Buddyinfo.parse(text) else {
            return "\(name)'s movable zones"
        }
        return "\(name) " + info.machineZonesDescription
    }
}

/// A configuration put in place by a provider for the runs that use it: where workloads run and
/// where a condition's `layer` is.
public protocol Placement: Sendable {
    /// The places the workload runs in: one, or one per guest of a split innermost layer.
    var workloadPlaces: [any Place] { get }
    /// The places a layer name means (`host`; a guest layer; `L2` for each of `L2.0`, `L2.1`);
    /// nil when the placement has no such layer.
    func places(forLayer name: String) -> [any Place]?
    /// What the run records about the placement (consoles, kernels, pinning, knobs read back).
    var provenance: [String: String] { get }
    /// The processes that make the placement (QEMU command lines), recorded with each run.
    var invocations: [Invocation] { get }
    /// Starts the observations that span a run (e.g. counters on vCPU threads from this machine).
    func beginRun() async -> any PlacementRun
    /// Each layer's state after a run (named with the layer) and what to record about it.
    func state() async -> (metrics: [Metric], provenance: [String: String])
    /// Why the placement can no longer be used (its VM died), or nil.
    var lostReason: String? { get }
}

/// Observations spanning one run of a placement.
public protocol PlacementRun: Sendable {
    /// Stops them: their metrics.
    func finish() async -> [Metric]
}

/// A platform (`local`, `qemu`): puts configurations in place and gives their places.
public protocol PlaceProvider: AnyObject, Sendable {
    var kind: PlatformKind { get }
    /// This machine's part of a configuration (its `host:` settings, and L0's when L0 is this machine).
    func thisMachine(_ configuration: Configuration) -> Configuration
    /// Notes about the platform for the experiment's machine description (`extra`).
    func describe(into extra: inout [String: String])
    /// Checks, changing nothing that stays, that the configurations can be put in place.
    func preflight(_ configurations: [Configuration], artifacts: String) async -> [String]
    /// Puts a configuration in place (booting a stack, or reusing it). `host` is this machine,
    /// already in the configuration's state; `collectors` say what runs measure in its places.
    /// A placement that cannot be made (a stack that does not boot) is `.unreachable`.
    func open(_ configuration: Configuration, host: any Place, collectors: CollectorSettings, artifacts: String)
        async throws(PlaceError) -> any Placement
    /// Drops a placement that failed (a dead or confused stack): the next `open` starts it afresh.
    func discard(_ configuration: Configuration)
    /// Undoes everything (no VM survives).
    func teardownAll()
}

/// This machine as a placement: the workload and every condition run here.
public struct LocalPlacement: Placement {
    public let host: any Place
    public var provenance: [String: String]

    public init(host: any Place, provenance: [String: String] = [:]) {
        self.host = host
        self.provenance = provenance
    }

    public var workloadPlaces: [any Place] { [host] }
    public func places(forLayer name: String) -> [any Place]? { name == "host" ? [host] : nil }
    public var invocations: [Invocation] { [] }
    public var lostReason: String? { nil }
    public func beginRun() -> any PlacementRun { NoPlacementRun() }
    public func state() async -> (metrics: [Metric], provenance: [String: String]) { ([], [:]) }
}

struct NoPlacementRun: PlacementRun {
    func finish() -> [Metric] { [] }
}

/// This machine: knobs journaled through the local platform, the measured process forked at the
/// gate with the run's collectors attached, helpers in their own process group (journaled, so a
/// later nestbench kills them after a kill -9).
public struct LocalPlace: Place {
    public let platform: LocalPlatform
    public let collectors: [any RunCollector]
    public let runsDirectory: String
    public var name: String { "this machine" }

    public init(platform: LocalPlatform, collectors: [any RunCollector], runsDirectory: String) {
        self.platform = platform
        self.collectors = collectors
        self.runsDirectory = runsDirectory
    }

    public func read(_ path: String) async throws(PlaceError) -> String {
        guard let text = KernelFile.read(path) else { throw .missing(place: name, path: path) }
        return text
    }

    public func apply(_ knobs: [Knob], owner: String) async throws(PlaceError) -> [String: String] {
        do {
            return try platform.apply(knobs, owner: owner)
        } catch {
            throw .failed(place: name, message: error.description)
        }
    }

    public func restoreKnobs() async -> [String] { [] }

    public func dropCachesAndCompact() async throws(PlaceError) {
        do {
            try MemoryActions.dropCachesAndCompact()
        } catch {
            throw .failed(place: name, message: error.description)
        }
    }

    public func launchMeasured(_ spec: ProcessSpec) async throws(ProcessError) -> MeasuredRun {
        // The collectors' hooks in the workload (e.g. the alignment probe's NB_PHASE_STOP).
        var spec = spec
        spec.environment.merge(collectors.environment) { $1 }
        let child = try ProcessRunner.start(spec)
        let sessions = collectors.map { $0.attach(pid: child.pid) }
        do throws(ProcessError) {
            try child.release()
        } catch {
            _ = child.waitBlocking()
            throw error
        }
        sessions.forEach { $0.started() }
        let outcome = await child.wait()
        var metrics: [Metric] = []
        var samples: [TimelineSample] = []
        for session in sessions {
            let (m, s) = session.finish(outcome)
            metrics += m
            samples += s
        }
        return MeasuredRun(outcome: outcome, metrics: metrics, samples: samples)
    }

    public func startHelper(_ spec: ProcessSpec) async throws(ProcessError) -> any HelperProcess {
        let child = try ProcessRunner.start(spec)
        do {
            try platform.journal.recordProcessGroup(child.pid)
        } catch {
            child.abort()
            _ = child.waitBlocking()
            throw ProcessError(
                program: spec.program, message: "cannot record its process group in \(platform.journal.path): \(error)",
                errno: nil)
        }
        do throws(ProcessError) {
            try child.release()
        } catch {
            try? platform.journal.forgetProcessGroup(child.pid)
            throw error
        }
        return LocalHelper(child: child, journal: platform.journal)
    }

    public func runDirectory(_ tag: String) -> String { "\(runsDirectory)/\(tag)" }
}

/// A helper on this machine; forgotten in the journal once it has ended.
final class LocalHelper: HelperProcess {
    let child: RunningProcess
    let journal: KnobJournal
    init(child: RunningProcess, journal: KnobJournal) {
        self.child = child
        self.journal = journal
    }
    var pid: Int32 { child.pid }
    var hasExited: Bool { child.hasExited }
    func signal(_ signal: Int32) async { child.kill(signal: signal) }
    func ended() async -> HelperEnd {
        let end = await child.ended()
        try? journal.forgetProcessGroup(child.pid)
        return end
    }
}

extension LocalPlatform: PlaceProvider {
    public var kind: PlatformKind { .local }
    public func thisMachine(_ configuration: Configuration) -> Configuration { configuration }
    public func describe(into extra: inout [String: String]) {}
    public func preflight(_ configurations: [Configuration], artifacts: String) async -> [String] { [] }
    public func open(_ configuration: Configuration, host: any Place, collectors: CollectorSettings, artifacts: String)
        async throws(PlaceError) -> any Placement
    {
        LocalPlacement(host: host)
    }
    public func discard(_ configuration: Configuration) {}
    public func teardownAll() {}
}
