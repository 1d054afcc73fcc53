import Foundation
import Synchronization

/// Work to do if nestbench is interrupted (Ctrl-C, SIGTERM) or fails: reap children, restore
/// knobs, release memory. Actions run newest first, each once.
public final class CleanupRegistry: Sendable {
    public static let shared = CleanupRegistry()

    private let actions = Mutex<[(id: Int, action: @Sendable () -> Void)]>([])
    private let nextID = Atomic<Int>(0)

    /// Registers an action; returns a token to unregister it once the normal path has done the work.
    public func register(_ action: @escaping @Sendable () -> Void) -> Int {
        let id = nextID.add(1, ordering: .relaxed).newValue
        actions.withLock { $0.append((id, action)) }
        return id
    }

    public func unregister(_ id: Int) {
        actions.withLock { $0.removeAll { $0.id == id } }
    }

    /// Kills every child process group, then runs the registered actions newest first.
    public func runAll() {
        ChildRegistry.shared.killAll()
        let pending = actions.withLock { list -> [(id: Int, action: @Sendable () -> Void)] in
            let copy = list
            list.removeAll()
            return copy
        }
        for entry in pending.reversed() { entry.action() }
    }
}
