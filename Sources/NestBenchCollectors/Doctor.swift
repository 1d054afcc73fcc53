import Foundation
import NestBenchModel
import NestBenchProcess

/// One line of `nestbench doctor`: what this machine can or cannot do, and why.
public struct DoctorCheck: Codable, Sendable, Hashable {
    public enum Status: String, Codable, Sendable, Hashable {
        /// Works.
        case ok
        /// Works with a limitation the reason names.
        case limited
        /// Cannot be used here; the reason says why.
        case unavailable
        /// A setting, reported as is.
        case info
    }

    public var name: String
    public var status: Status
    public var value: String
    public var reason: String

    public init(name: String, status: Status, value: String, reason: String) {
        self.name = name
        self.status = status
        self.value = value
        self.reason = reason
    }
}

/// Where the doctor looks (replaceable roots for tests).
public struct DoctorEnvironment: Sendable {
    public var sysModule: String = "/sys/module"
    public var procSys: String = "/proc/sys"
    public var thpRoot: String = MachineProbe.thpRoot
    public var hugepagesRoot: String = "/sys/kernel/mm/hugepages"
    public var devKVM: String = "/dev/kvm"
    public var cpuinfo: String = "/proc/cpuinfo"
    public var isRoot: Bool = geteuid() == 0
    public var path: [String: String] = ProcessInfo.processInfo.environment

    public init() {}
}

/// What this machine can measure and run.
public enum Doctor {
    public static func checks(_ env: DoctorEnvironment = DoctorEnvironment()) -> [DoctorCheck] {
        [
            pmu(), paranoid(env), kvm(env), paging(env), thp(env), khugepaged(env), hugetlb(env), debugfs(env), qemu(env),
            root(env),
        ]
            + noise(files: NoiseSources.readThisMachine().files, processes: NoiseSources.readThisMachine().processes)
            + [kernelLog()]
    }

    /// One line per noise source (ASLR, NUMA balancing, KSM, governor, boost, irqbalance) with its
    /// state: `limited` with the fixing line when it is in its noisy state. Experiments control
    /// ASLR, NUMA balancing, governor and boost by default (`environment:`); KSM only when they say.
    public static func noise(files: [String: String], processes: [String]) -> [DoctorCheck] {
        NoiseSources.assess(files: files, processes: processes, settings: EnvironmentSettings(ksm: "leave")).map { s in
            guard s.present else {
                return DoctorCheck(name: s.name, status: .info, value: s.state, reason: "nothing to control on this machine")
            }
            let noisy = !["off", "performance"].contains(s.state)
            guard noisy else {
                return DoctorCheck(name: s.name, status: .ok, value: s.state, reason: "quiet state")
            }
            let byDefault =
                s.name == "ksm" || s.name == "irqbalance"
                ? "uncontrolled noise source unless the experiment sets it"
                : "uncontrolled outside experiments (they set it by default; environment: \(s.name): leave keeps it)"
            return DoctorCheck(name: s.name, status: .limited, value: s.state, reason: "\(byDefault); fix: \(s.fix)")
        }
    }

    /// Nested paging (EPT/NPT) of this machine's KVM module.
    static func paging(_ env: DoctorEnvironment) -> DoctorCheck {
        var files: [String: String] = [:]
        for module in ["kvm_intel", "kvm_amd"] {
            let path = "\(env.sysModule)/\(module)/parameters/\(module == "kvm_intel" ? "ept" : "npt")"
            if let t = KernelFile.read(path) {
                files["/sys/module/\(module)/parameters/\(module == "kvm_intel" ? "ept" : "npt")"] = t
            }
        }
        guard let mode = NestedPaging.mode(files: files) else {
            return DoctorCheck(
                name: "paging", status: .info, value: "no kvm_intel/kvm_amd module",
                reason: "no hardware nested paging to check here (stacks' guest layers are checked in their preflight)")
        }
        let on = mode.hasSuffix(" on")
        return DoctorCheck(
            name: "paging", status: on ? .ok : .limited, value: mode,
            reason: on ? "two-dimensional paging for guests" : "guests run on shadow paging: reload the module with ept=1/npt=1")
    }

    /// Whether runs can read the kernel log (/dev/kmsg) to catch oopses, OOM kills, hung tasks.
    static func kernelLog() -> DoctorCheck {
        let watch = KernelLogWatch()
        if let why = watch.unavailableReason {
            return DoctorCheck(
                name: "kernel_log", status: .limited, value: "unreadable",
                reason: "\(why): runs cannot be checked for oops/BUG/WARNING/OOM kills (run as root)")
        }
        return DoctorCheck(
            name: "kernel_log", status: .ok, value: "/dev/kmsg readable",
            reason: "each run is checked for oops/BUG/WARNING/OOM-kill/hung-task/KVM errors (environment.kernel_log: mark|fail)")
    }

    static func pmu() -> DoctorCheck {
        let cpu = CPUIdentity.local()
        let core: String
        do {
            core = try Perfmon.corePMU().map { "\($0.name) (\($0.description), \($0.counters) generic counters)" } ?? "none"
        } catch {
            core = "libpfm error: \(error)"
        }
        let library = "libpfm4 (API \(Perfmon.libraryVersion)) core PMU: \(core)"
        switch PMUProbe.hardware() {
        case .available:
            let set = TLBEventSets.select(corePMU: try? Perfmon.corePMU(), cpu: cpu)
            switch set {
            case .success(let s):
                return DoctorCheck(
                    name: "pmu", status: .ok, value: library,
                    reason: "hardware counters open; TLB events: \(s.microarchitecture) table")
            case .failure(let f):
                return DoctorCheck(name: "pmu", status: .limited, value: library, reason: "counters open, but \(f.reason)")
            }
        case .unavailable(let reason):
            return DoctorCheck(
                name: "pmu", status: .unavailable, value: "no PMU; \(library)",
                reason: "\(reason) — TLB-miss metrics are recorded as unavailable; software events are collected as proxies")
        }
    }

    static func paranoid(_ env: DoctorEnvironment) -> DoctorCheck {
        guard let text = KernelFile.read("\(env.procSys)/kernel/perf_event_paranoid")?.trimmed, let level = Int(text) else {
            return DoctorCheck(
                name: "perf_event_paranoid", status: .unavailable, value: "?",
                reason: "cannot read /proc/sys/kernel/perf_event_paranoid")
        }
        let meaning: String
        switch level {
        case ...(-1): meaning = "no restrictions"
        case 0: meaning = "per-CPU and kernel counting allowed for users"
        case 1: meaning = "users may count their processes in user and kernel mode"
        case 2: meaning = "users may count user mode only"
        default: meaning = "perf_event_open refused to users"
        }
        let status: DoctorCheck.Status = env.isRoot || level <= 1 ? .ok : .limited
        let root = env.isRoot ? "running as root: not limited" : "not root: set kernel.perf_event_paranoid <= 1 or run as root"
        return DoctorCheck(name: "perf_event_paranoid", status: status, value: text, reason: "\(meaning); \(root)")
    }

    static func kvm(_ env: DoctorEnvironment) -> DoctorCheck {
        let hasDevice = FileManager.default.fileExists(atPath: env.devKVM)
        let cpuinfo = KernelFile.read(env.cpuinfo) ?? ""
        let flags = Set(
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") }?.split(separator: " ").map(String.init) ?? [])
        let virtualization = flags.contains("vmx") ? "VT-x (vmx)" : flags.contains("svm") ? "AMD-V (svm)" : "no vmx/svm CPU flag"
        for module in ["kvm_intel", "kvm_amd"] where FileManager.default.fileExists(atPath: "\(env.sysModule)/\(module)") {
            let nested = KernelFile.read("\(env.sysModule)/\(module)/parameters/nested")?.trimmed ?? "?"
            let on = nested == "Y" || nested == "1"
            return DoctorCheck(
                name: "kvm", status: hasDevice ? (on ? .ok : .limited) : .unavailable,
                value: "\(module), nested \(on ? "on" : "off")",
                reason: hasDevice
                    ? (on
                        ? "hardware virtualization with nested guests (L1 can run KVM)"
                        : "nested virtualization is off: modprobe \(module) nested=1 for L2 guests")
                    : "\(env.devKVM) is missing")
        }
        if FileManager.default.fileExists(atPath: "\(env.sysModule)/kvm_pvm") {
            return DoctorCheck(
                name: "kvm", status: .limited, value: "kvm_pvm\(hasDevice ? " (\(env.devKVM) present)" : "")",
                reason:
                    "PVM (paravirtualized KVM without \(virtualization == "no vmx/svm CPU flag" ? "VT-x/AMD-V" : virtualization)): "
                    + "it boots only PVM guest kernels, not stock kernels; no hardware-assisted nested paging")
        }
        return DoctorCheck(
            name: "kvm", status: .unavailable, value: hasDevice ? "\(env.devKVM) present, unknown module" : "none",
            reason: hasDevice
                ? "no kvm_intel, kvm_amd or kvm_pvm module in \(env.sysModule)" : "no \(env.devKVM); \(virtualization)")
    }

    static func thp(_ env: DoctorEnvironment) -> DoctorCheck {
        let s = MachineProbe.thpSettings(root: env.thpRoot)
        guard let enabled = s["enabled"] else {
            return DoctorCheck(
                name: "thp", status: .unavailable, value: "none", reason: "\(env.thpRoot) is missing: no THP in this kernel")
        }
        return DoctorCheck(
            name: "thp", status: .info,
            value: "enabled=\(enabled) defrag=\(s["defrag"] ?? "?") shmem_enabled=\(s["shmem_enabled"] ?? "?")",
            reason: enabled == "madvise"
                ? "THP only for madvise(MADV_HUGEPAGE) regions; experiments set it per configuration"
                : "experiments set it per configuration and restore it")
    }

    static func khugepaged(_ env: DoctorEnvironment) -> DoctorCheck {
        let s = MachineProbe.thpSettings(root: env.thpRoot)
        let values = KhugepagedSettings.names.compactMap { n in s["khugepaged.\(n)"].map { "\(n)=\($0)" } }
        return DoctorCheck(
            name: "khugepaged", status: values.isEmpty ? .unavailable : .info,
            value: values.isEmpty ? "none" : values.joined(separator: " "),
            reason: values.isEmpty ? "\(env.thpRoot)/khugepaged is missing" : "collapse daemon settings")
    }

    static func hugetlb(_ env: DoctorEnvironment) -> DoctorCheck {
        let sizes = (try? FileManager.default.contentsOfDirectory(atPath: env.hugepagesRoot))?.sorted() ?? []
        guard !sizes.isEmpty else {
            return DoctorCheck(name: "hugetlb", status: .unavailable, value: "none", reason: "\(env.hugepagesRoot) is missing")
        }
        let pools = sizes.map { dir -> String in
            let total = KernelFile.read("\(env.hugepagesRoot)/\(dir)/nr_hugepages")?.trimmed ?? "?"
            let free = KernelFile.read("\(env.hugepagesRoot)/\(dir)/free_hugepages")?.trimmed ?? "?"
            return "\(dir.replacingOccurrences(of: "hugepages-", with: "")) \(total) pages (\(free) free)"
        }
        return DoctorCheck(
            name: "hugetlb", status: .info, value: pools.joined(separator: ", "), reason: "reserved hugetlbfs pools")
    }

    static func debugfs(_ env: DoctorEnvironment) -> DoctorCheck {
        if Debugfs.isMounted() {
            return DoctorCheck(
                name: "debugfs", status: .ok, value: "mounted at \(Debugfs.path)",
                reason: "extfrag/unusable_index and tracepoints readable")
        }
        return DoctorCheck(
            name: "debugfs", status: env.isRoot ? .ok : .unavailable, value: "not mounted",
            reason: env.isRoot
                ? "nestbench mounts it while it needs it (tracepoint ids, unusable_index) and unmounts it after"
                : "not root: cannot mount it; tlb:tlb_flush and the kernel's unusable_index are unavailable")
    }

    static func qemu(_ env: DoctorEnvironment) -> DoctorCheck {
        if let path = ProcessRunner.resolve("qemu-system-x86_64", environment: env.path) {
            return DoctorCheck(name: "qemu", status: .ok, value: path, reason: "qemu-system-x86_64 present")
        }
        return DoctorCheck(
            name: "qemu", status: .unavailable, value: "absent",
            reason: "qemu-system-x86_64 not in PATH (apt-get install qemu-system-x86)")
    }

    static func root(_ env: DoctorEnvironment) -> DoctorCheck {
        env.isRoot
            ? DoctorCheck(
                name: "root", status: .ok, value: "yes", reason: "knobs, debugfs, tracepoints and per-CPU counters are usable")
            : DoctorCheck(
                name: "root", status: .limited, value: "no (uid \(geteuid()))",
                reason: "THP/sysctl knobs cannot be changed and debugfs cannot be mounted; run with sudo")
    }
}
