import Foundation
import NestBenchModel

/// One-shot memory actions (nothing to restore afterwards).
public enum MemoryActions {
    /// sync, drop the page cache, dentries and inodes (`vm.drop_caches=3`), then compact every zone
    /// (`vm.compact_memory=1`): the "unfragmented" starting state of METHOD.md. Needs root.
    public static func dropCachesAndCompact() throws(PlatformError) {
        sync()
        for (path, value) in [("/proc/sys/vm/drop_caches", "3"), ("/proc/sys/vm/compact_memory", "1")] {
            if let err = KnobWriter.write(value, to: path) {
                throw PlatformError(
                    err == EACCES || err == EPERM ? .needsRoot : .rejectedValue,
                    "\(path): cannot write \(value) (\(String(cString: strerror(err))))",
                    hint: "run nestbench as root, or set compact: false on the condition")
            }
        }
    }
}
