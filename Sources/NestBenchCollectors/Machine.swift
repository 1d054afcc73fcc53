import Foundation
import NestBenchModel

/// Describes the machine a run happens on, from procfs/sysfs.
public enum MachineProbe {
    public static let thpRoot = "/sys/kernel/mm/transparent_hugepage"

    /// THP and khugepaged settings as the kernel reports them (selected values only).
    public static func thpSettings(root: String = thpRoot) -> [String: String] {
        var result: [String: String] = [:]
        for name in ["enabled", "defrag", "shmem_enabled"] {
            if let text = KernelFile.read("\(root)/\(name)") { result[name] = KernelFile.selectedValue(text) }
        }
        for name in KhugepagedSettings.names {
            if let text = KernelFile.read("\(root)/khugepaged/\(name)") {
                result["khugepaged.\(name)"] = KernelFile.selectedValue(text)
            }
        }
        return result
    }

    public static func describe() -> MachineDescription {
        let cpuinfo = KernelFile.read("/proc/cpuinfo") ?? ""
        let model =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" }
            ?? "unknown"
        let mem = KeyValueFile.meminfo(KernelFile.read("/proc/meminfo") ?? "")
        var uts = utsname()
        uname(&uts)
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
        }
        var extra: [String: String] = [:]
        extra["kernel.version"] = field(uts.version)
        extra["arch"] = field(uts.machine)
        if let cmdline = KernelFile.read("/proc/cmdline") {
            extra["kernel.cmdline"] = cmdline.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if cpuinfo.contains(" hypervisor") { extra["virtualized"] = "yes (CPUID hypervisor bit)" }
        return MachineDescription(
            hostname: ProcessInfo.processInfo.hostName, cpuModel: model,
            cores: ProcessInfo.processInfo.activeProcessorCount,
            memoryBytes: UInt64(max(0, mem["MemTotal"] ?? 0)), kernel: field(uts.release),
            thp: thpSettings(), extra: extra)
    }
}
