/// How a guest's RAM is backed in the layer below it.
public enum MemoryBacking: String, Codable, Sendable, Hashable, CaseIterable {
    /// `memory-backend-ram`: anonymous memory; QEMU madvises it, so the hosting layer's THP
    /// `enabled` setting decides whether huge pages back it.
    case anonymous
    /// `memory-backend-ram,prealloc=on`: anonymous memory faulted in at boot, so THP (if the
    /// hosting layer allows it) backs the guest from the start.
    case thp
    /// `memory-backend-memfd,hugetlb=on,hugetlbsize=2M,prealloc=on`: the hosting layer needs a
    /// 2 MiB hugetlb pool (`sysctl: {vm.nr_hugepages: N}`).
    case hugetlb2M = "hugetlb-2m"
    /// As above with 1 GiB pages (`sysfs: {/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages: N}`).
    case hugetlb1G = "hugetlb-1g"

    /// The huge page size of a hugetlb backing, in bytes.
    public var hugetlbPageBytes: UInt64? {
        switch self {
        case .hugetlb2M: 2 << 20
        case .hugetlb1G: 1 << 30
        default: nil
        }
    }
}

/// One layer of a `qemu` stack. `layers[0]` is L0, the host hypervisor: this machine where it has
/// hardware virtualization, else an emulated host (a TCG guest with emulated SVM + nested
/// paging) booted from `kernel`. Every later layer is a KVM guest of the layer before it.
public struct VMLayer: Codable, Sendable, Hashable {
    /// `L0`, `L1`, `L2` …
    public var name: String
    /// Kernel image (bzImage or vmlinux); variables already expanded.
    public var kernel: String?
    /// An initramfs of the user's; nil = NestBench's generated one (Harness/guest).
    public var initrd: String?
    /// Where the generated initramfs takes modules from; nil = /lib/modules/<the image's version>.
    public var modulesDirectory: String?
    /// Extra kernel command line arguments.
    public var cmdline: [String]
    public var vcpus: Int
    public var memoryBytes: UInt64
    public var backing: MemoryBacking
    /// QEMU `-cpu` model; nil = `max` for an emulated host, `host` under KVM.
    public var cpuModel: String?
    /// vCPU i runs on CPU `pinning[i]` of the layer below; empty = unpinned.
    public var pinning: [Int]
    /// Knobs applied in this layer after it boots.
    public var settings: LayerSettings
    /// Kernel modules loaded (with parameters) after boot, in order, e.g. kvm_amd nested=1.
    public var modules: [KernelModule]
    /// Paths that must exist in this layer's booted kernel (checked at preflight), e.g. a Gemini
    /// kernel's own sysfs knobs.
    public var requires: [String]
    public var bootTimeoutSeconds: Double
    /// How many more times a boot that fails or hangs is tried.
    public var bootRetries: Int
    /// Copies of this (innermost) layer in its parent, each running the workload at the same time.
    public var instances: Int
    /// Per instance, vCPU → CPU of the layer below, when instances differ (a colocated split);
    /// nil: every instance uses `pinning`.
    public var instancePinning: [[Int]]?
    /// A swap device for this layer: a sparse raw image NestBench creates on this machine's disk
    /// (under the stack's share), attached as a virtio-blk disk and enabled in the guest after boot.
    public var swapBytes: UInt64?
    /// Caps this layer's QEMU process in the layer below with cgroup v2 `memory.max` (the layer
    /// below swaps what does not fit, when it has swap): the host side of double paging.
    public var qemuMemoryMaxBytes: UInt64?
    /// A virtio-balloon device (and its driver loaded after boot), for `memory_pressure` with
    /// `method: balloon`.
    public var balloon: Bool = false
    /// A guest that can be saved and restored (`save_restore:`): it runs from its initramfs with
    /// statically linked copies of the agent and the micro, keeps only its share on 9p (unmounted
    /// by the agent before a save) and has a virtio-serial doorbell. Its QEMU runs on this machine.
    public var detachable: Bool = false
    /// L0 only: L0 is this machine even without hardware virtualization (no emulated host); L1
    /// then runs under TCG here (`this_machine: true`, for guests NestBench saves and restores).
    public var thisMachine: Bool = false

    public init(
        name: String, kernel: String? = nil, initrd: String? = nil, modulesDirectory: String? = nil,
        cmdline: [String] = [], vcpus: Int = 1, memoryBytes: UInt64 = 1 << 30, backing: MemoryBacking = .anonymous,
        cpuModel: String? = nil, pinning: [Int] = [], settings: LayerSettings = LayerSettings(),
        modules: [KernelModule] = [], requires: [String] = [], bootTimeoutSeconds: Double = 300, bootRetries: Int = 1,
        instances: Int = 1
    ) {
        self.name = name
        self.kernel = kernel
        self.initrd = initrd
        self.modulesDirectory = modulesDirectory
        self.cmdline = cmdline
        self.vcpus = vcpus
        self.memoryBytes = memoryBytes
        self.backing = backing
        self.cpuModel = cpuModel
        self.pinning = pinning
        self.settings = settings
        self.modules = modules
        self.requires = requires
        self.bootTimeoutSeconds = bootTimeoutSeconds
        self.bootRetries = bootRetries
        self.instances = instances
    }
}

/// A kernel module to load, with its parameters (`kvm_amd nested=1 npt=1`).
public struct KernelModule: Codable, Sendable, Hashable {
    public var name: String
    /// Parameter → value, in a stable (sorted) order when loaded.
    public var parameters: [String: String]

    public init(name: String, parameters: [String: String] = [:]) {
        self.name = name
        self.parameters = parameters
    }

    /// `kvm_vendor`: the KVM module of the layer's own CPU vendor, so that one configuration
    /// serves Intel and AMD testbeds (and the emulated host, which is AMD).
    public static let vendorKVM = "kvm_vendor"

    /// This module for a layer whose CPU reports `cpuVendor` (/proc/cpuinfo `vendor_id`):
    /// `kvm_vendor` becomes kvm_intel (GenuineIntel) or kvm_amd (AuthenticAMD, HygonGenuine),
    /// its `tdp` parameter (two-dimensional paging) `ept` or `npt`; nil for another vendor.
    /// Other modules are returned as they are.
    public func resolved(cpuVendor: String) -> KernelModule? {
        guard name == Self.vendorKVM else { return self }
        let (module, tdp): (String, String)
        switch cpuVendor {
        case "GenuineIntel": (module, tdp) = ("kvm_intel", "ept")
        case "AuthenticAMD", "HygonGenuine": (module, tdp) = ("kvm_amd", "npt")
        default: return nil
        }
        var parameters = parameters
        if let value = parameters.removeValue(forKey: "tdp") { parameters[tdp] = value }
        return KernelModule(name: module, parameters: parameters)
    }

    /// `modprobe` arguments after the program name.
    public var modprobeArguments: [String] {
        [name] + parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    }

    /// The sysfs files that show the parameters once the module is loaded.
    public var parameterPaths: [String] {
        parameters.keys.sorted().map { "/sys/module/\(name.replacingOccurrences(of: "-", with: "_"))/parameters/\($0)" }
    }
}
