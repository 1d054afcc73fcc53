import Foundation
import Synchronization

/// A request to stop, set by a signal handler and honoured by the code that owns the work: the
/// run loop stops at its next safe point, kills the workload and restores the machine itself (on
/// its own thread, once). Children started after the request are killed at once.
public final class Cancellation: Sendable {
    public static let shared = Cancellation()

    private let requested = Atomic<Int32>(0)

    public init() {}

    /// Records the first signal; later ones do not replace it. Kills every child process group so
    /// that a waiting run returns promptly.
    public func request(signal: Int32) {
        _ = requested.compareExchange(expected: 0, desired: signal, ordering: .sequentiallyConsistent)
        ChildRegistry.shared.killAll()
    }

    public var isRequested: Bool { requested.load(ordering: .sequentiallyConsistent) != 0 }

    /// The signal that asked to stop, nil when none did.
    public var signal: Int32? {
        let s = requested.load(ordering: .sequentiallyConsistent)
        return s == 0 ? nil : s
    }

    /// For tests and for a process that handles several experiments: forget the request.
    public func reset() { requested.store(0, ordering: .sequentiallyConsistent) }
}

/// Thrown by a run loop that stopped because of a signal; the caller exits 128 + signal.
public struct Interrupted: Error, Sendable, CustomStringConvertible {
    public var signal: Int32
    public init(signal: Int32) { self.signal = signal }
    public var description: String { "interrupted by signal \(signal)" }
}
