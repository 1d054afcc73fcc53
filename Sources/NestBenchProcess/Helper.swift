import Foundation

/// How a helper process ended.
public struct HelperEnd: Sendable, Hashable {
    /// The exit status; nil after a signal or when it is not known.
    public var exitStatus: Int32?
    /// "exit status 0", "killed by signal 9 (Killed)", "gone with its VM: …".
    public var description: String

    public init(exitStatus: Int32?, description: String) {
        self.exitStatus = exitStatus
        self.description = description
    }
}

/// A process started next to the measured one (a server, the fragmenter), not measured, in its
/// own process group, wherever it runs (this machine, or a guest through its agent).
public protocol HelperProcess: Sendable {
    /// Its pid in its place (also its process group id).
    var pid: Int32 { get }
    /// Whether it has ended (or its place is gone).
    var hasExited: Bool { get }
    /// Sends `signal` to its process group.
    func signal(_ signal: Int32) async
    /// Waits for its end.
    func ended() async -> HelperEnd
}

extension HelperProcess {
    /// SIGKILL to its process group (when it still runs), then waits for its end.
    @discardableResult
    public func stop() async -> HelperEnd {
        if !hasExited { await signal(SIGKILL) }
        return await ended()
    }
}

extension RunningProcess: HelperProcess {
    public func signal(_ signal: Int32) async { kill(signal: signal) }

    public func ended() async -> HelperEnd {
        let outcome = await wait()
        return HelperEnd(exitStatus: outcome.exitStatus, description: outcome.describe(timeout: spec.timeoutSeconds))
    }
}
