import NestBenchModel

/// Everything needed to start one QEMU virtual machine, as paths seen by the layer that runs it.
public struct QemuMachine: Sendable, Hashable {
    public enum Accelerator: String, Sendable, Hashable {
        /// Hardware (or nested) KVM.
        case kvm
        /// Multi-threaded TCG: the emulated host where there is no usable hardware virtualization.
        case tcg
    }

    /// `L0`, `L1` …: QEMU's `-name` (thread names `CPU n/KVM` or `CPU n/TCG`).
    public var name: String
    public var binary: String
    public var accelerator: Accelerator
    /// `-cpu`: nil = `max` under TCG (emulated SVM + NPT), `host` under KVM.
    public var cpuModel: String?
    public var vcpus: Int
    public var memoryBytes: UInt64
    public var backing: MemoryBacking
    public var kernel: String
    public var initrd: String?
    public var kernelArguments: [String]
    /// qboot (fast direct kernel boot); nil = QEMU's default firmware.
    public var bios: String?
    /// Directory shared read-only as the guest's root (tag `hostroot`), nil = none.
    public var rootShare: String?
    /// Directory shared read-write as the guest's /nb (tag `nbshare`).
    public var share: String
    /// File the serial console is written to.
    public var consoleLog: String
    public var qmpSocket: String
    /// Raw disk images attached as virtio-blk disks (vda, vdb … in this order), e.g. a swap device.
    public var disks: [String] = []
    /// A virtio-balloon device (`balloon0`).
    public var balloon = false
    /// A virtio-serial port `nb.bell` on a unix socket QEMU listens on (this path): the doorbell a
    /// detached agent waits on (`detachable:` layers).
    public var doorbellSocket: String? = nil
    /// Started waiting for an incoming migration (`-incoming defer`): a restore.
    public var incoming = false

    public init(
        name: String, binary: String = "qemu-system-x86_64", accelerator: Accelerator, cpuModel: String? = nil,
        vcpus: Int, memoryBytes: UInt64, backing: MemoryBacking = .anonymous, kernel: String, initrd: String?,
        kernelArguments: [String], bios: String? = "/usr/share/qemu/qboot.rom", rootShare: String? = "/",
        share: String, consoleLog: String, qmpSocket: String
    ) {
        self.name = name
        self.binary = binary
        self.accelerator = accelerator
        self.cpuModel = cpuModel
        self.vcpus = vcpus
        self.memoryBytes = memoryBytes
        self.backing = backing
        self.kernel = kernel
        self.initrd = initrd
        self.kernelArguments = kernelArguments
        self.bios = bios
        self.rootShare = rootShare
        self.share = share
        self.consoleLog = consoleLog
        self.qmpSocket = qmpSocket
    }
}

/// Builds QEMU's argv (never a shell string). Pure: unit-tested in CoreTests.
public enum QemuCommandLine {
    /// The virtio-serial port name of the doorbell (`/sys/class/virtio-ports/*/name` in the guest).
    public static let doorbellPort = "nb.bell"

    /// A saved guest's command line made the restoring one: it waits for the image (`-incoming
    /// defer`), and its serial console appends to the console log instead of truncating it (the
    /// same device, a file chardev with `append=on`).
    public static func restoring(_ argv: [String]) -> [String] {
        var out: [String] = []
        var i = 0
        while i < argv.count {
            if argv[i] == "-serial", i + 1 < argv.count, argv[i + 1].hasPrefix("file:") {
                let path = String(argv[i + 1].dropFirst("file:".count))
                out += ["-chardev", "file,id=nbconsole,path=\(path),append=on", "-serial", "chardev:nbconsole"]
                i += 2
            } else {
                out.append(argv[i])
                i += 1
            }
        }
        return out + ["-incoming", "defer"]
    }

    /// A command line whose QMP and doorbell sockets listen at other paths (a lazy restore's
    /// QEMU, started while the old one still holds the first ones).
    public static func movingSockets(
        _ argv: [String], qmp: (from: String, to: String), doorbell: (from: String, to: String)
    ) -> [String] {
        var out = argv
        for i in out.indices.dropFirst() {
            switch (out[i - 1], out[i]) {
            case ("-qmp", "unix:\(optionValue(qmp.from)),server=on,wait=off"):
                out[i] = "unix:\(optionValue(qmp.to)),server=on,wait=off"
            case ("-chardev", "socket,id=nbbell,path=\(optionValue(doorbell.from)),server=on,wait=off"):
                out[i] = "socket,id=nbbell,path=\(optionValue(doorbell.to)),server=on,wait=off"
            default: break
            }
        }
        return out
    }

    /// The memory backend object for a backing.
    public static func memoryBackend(_ backing: MemoryBacking, bytes: UInt64, id: String = "ram0") -> String {
        let size = "size=\(bytes / (1 << 20))M"
        switch backing {
        case .anonymous: return "memory-backend-ram,id=\(id),\(size)"
        case .thp: return "memory-backend-ram,id=\(id),\(size),prealloc=on"
        case .hugetlb2M: return "memory-backend-memfd,id=\(id),\(size),hugetlb=on,hugetlbsize=2M,prealloc=on"
        case .hugetlb1G: return "memory-backend-memfd,id=\(id),\(size),hugetlb=on,hugetlbsize=1G,prealloc=on"
        }
    }

    /// Escapes a value for QEMU's comma-separated option syntax (a comma is doubled).
    public static func optionValue(_ value: String) -> String {
        value.replacingOccurrences(of: ",", with: ",,")
    }

    /// The arguments after the program name. The VM starts paused (`-S`): pin its vCPU threads
    /// over QMP, then `cont`.
    public static func arguments(for m: QemuMachine) -> [String] {
        let cpu = m.cpuModel ?? (m.accelerator == .tcg ? "max" : "host")
        let accel = m.accelerator == .tcg ? "tcg,thread=multi" : "kvm"
        var args: [String] = [
            "-name", "\(optionValue(m.name)),debug-threads=on",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-accel", accel,
            "-cpu", cpu,
            "-smp", "\(m.vcpus)",
            "-m", "\(m.memoryBytes / (1 << 20))M",
            "-object", memoryBackend(m.backing, bytes: m.memoryBytes),
            "-machine", "pc,memory-backend=ram0",
        ]
        if let bios = m.bios { args += ["-bios", bios] }
        args += ["-kernel", m.kernel]
        if let initrd = m.initrd { args += ["-initrd", initrd] }
        args += ["-append", m.kernelArguments.joined(separator: " ")]
        args += ["-serial", "file:\(m.consoleLog)"]
        if let root = m.rootShare {
            args += [
                "-fsdev", "local,id=hostroot,path=\(optionValue(root)),readonly=on,security_model=none,multidevs=remap",
                "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
            ]
        }
        args += [
            "-fsdev", "local,id=nbshare,path=\(optionValue(m.share)),security_model=none,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=nbshare,mount_tag=nbshare",
            "-qmp", "unix:\(optionValue(m.qmpSocket)),server=on,wait=off",
            "-S",
        ]
        if m.balloon { args += ["-device", "virtio-balloon-pci,id=balloon0"] }
        for (i, disk) in m.disks.enumerated() {
            args += ["-drive", "file=\(optionValue(disk)),if=virtio,format=raw,id=disk\(i)"]
        }
        if let bell = m.doorbellSocket {
            args += [
                "-device", "virtio-serial-pci,id=nbserial",
                "-chardev", "socket,id=nbbell,path=\(optionValue(bell)),server=on,wait=off",
                "-device", "virtserialport,bus=nbserial.0,chardev=nbbell,name=\(doorbellPort)",
            ]
        }
        if m.incoming { args += ["-incoming", "defer"] }
        return args
    }
}
