import Foundation

/// One machine-state test at a time across the test targets: every test that writes this
/// machine's knobs (THP, khugepaged, sysctls), holds its memory or boots VMs runs under this lock,
/// whichever target it lives in (the `changes machine state` suite takes it for each of its tests,
/// CoreTests' knob tests take it themselves). It is a `flock` on a file, polled without blocking a
/// thread, so waiting tests do not starve the cooperative pool; test processes of two checkouts on
/// one machine also take turns.
public enum MachineStateLock {
    public static let path = "/tmp/nestbench-tests-machine-state.lock"

    /// Runs `body` while holding the lock (waits for it, polling every 100 ms).
    public static func withLock<T>(_ body: () async throws -> T) async throws -> T {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o666)
        guard fd >= 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        defer { close(fd) }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            try await Task.sleep(for: .milliseconds(100))
        }
        defer { flock(fd, LOCK_UN) }
        return try await body()
    }
}
