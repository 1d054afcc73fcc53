import Foundation

/// The kernel's cpulist format (`0-3,6`), as in /sys/devices/system/cpu/online and taskset -c.
public enum CPUList {
    /// The highest CPU number a cpulist may name: Linux's NR_CPUS is at most 8192.
    public static let maxCPU = 8191

    /// The CPUs of a cpulist, or nil when it is malformed or names a CPU above `maxCPU` (a range
    /// is never expanded beyond what a machine can have).
    public static func parse(_ text: String, maxCPU: Int = CPUList.maxCPU) -> [Int]? {
        var cpus: [Int] = []
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty { return [] }
        for part in trimmed.split(separator: ",") {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            switch bounds.count {
            case 1:
                guard let v = Int(bounds[0].trimmingCharacters(in: .whitespaces)), v >= 0, v <= maxCPU else { return nil }
                cpus.append(v)
            case 2:
                guard let lo = Int(bounds[0].trimmingCharacters(in: .whitespaces)),
                    let hi = Int(bounds[1].trimmingCharacters(in: .whitespaces)), lo >= 0, lo <= hi, hi <= maxCPU
                else { return nil }
                cpus.append(contentsOf: lo...hi)
            default:
                return nil
            }
        }
        return cpus
    }

    public static func format(_ cpus: [Int]) -> String {
        cpus.sorted().map(String.init).joined(separator: ",")
    }
}
