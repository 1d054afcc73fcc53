import CProcess
import Foundation

/// CPU affinity of threads and processes (sched_setaffinity / sched_getaffinity).
public enum Affinity {
    /// The CPUs `tid` (0: the calling thread) may run on; nil when it cannot be read.
    public static func of(_ tid: Int32) -> [Int]? {
        var out = [Int32](repeating: 0, count: 4096)
        let n = nb_get_affinity(tid, &out, Int32(out.count))
        return n > 0 ? out[0..<Int(n)].map(Int.init) : nil
    }

    /// Restricts `tid` (0: the calling thread) to `cpus`; false when the kernel refused.
    @discardableResult
    public static func set(_ tid: Int32, to cpus: [Int]) -> Bool {
        guard !cpus.isEmpty else { return false }
        let list = cpus.map(Int32.init)
        return nb_set_affinity(tid, list, Int32(list.count)) == 0
    }

    /// Moves the calling thread off the CPUs `pid` runs on, when this thread may use others: a
    /// sampler then does not take time from the workload it watches. Returns the CPUs it moved to.
    @discardableResult
    public static func avoid(cpusOf pid: Int32) -> [Int]? {
        guard let theirs = of(pid), let mine = of(0) else { return nil }
        let others = mine.filter { !theirs.contains($0) }
        return !others.isEmpty && others.count < mine.count && set(0, to: others) ? others : nil
    }
}
