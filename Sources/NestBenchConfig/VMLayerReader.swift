import Foundation
import NestBenchModel
import Yams

/// Reads the `layers:` of a `platform: qemu` configuration (see Suites/configurations/*.yaml).
enum VMLayerReader {
    static let keys: Set<String> = ExperimentLoader.layerSettingKeys.union([
        "kernel", "initrd", "modules_dir", "cmdline", "vcpus", "memory", "backing", "cpu", "pinning", "modules",
        "requires", "boot_timeout", "boot_retries", "instances", "swap", "qemu_memory_max", "balloon",
        "detachable", "this_machine",
    ])

    static func readLayers(_ node: Node, at path: String, _ r: YAMLReader) -> [VMLayer] {
        guard let entries = r.mapping(node, at: path, allowed: nil) else { return [] }
        var layers: [VMLayer] = []
        var nodes: [(Node, String)] = []
        for (index, entry) in entries.enumerated() {
            guard entry.key == "L\(index)" else {
                r.problem(
                    entry.path, entry.value, "layers are named L0, L1, L2 … in order; expected L\(index) here, found \(entry.key)"
                )
                continue
            }
            if let layer = readLayer(entry.value, name: entry.key, at: entry.path, isHost: index == 0, r) {
                layers.append(layer)
                nodes.append((entry.value, entry.path))
            }
        }
        if layers.count < 2 && r.problems.isEmpty {
            r.problem(path, node, "a qemu stack needs at least L0 (the host hypervisor) and L1 (a guest)")
        }
        for (index, layer) in layers.enumerated() where index > 0 {
            let parent = layers[index - 1]
            let (n, p) = nodes[index]
            if index >= 2 {
                if layer.memoryBytes * UInt64(layer.instances) >= parent.memoryBytes {
                    r.problem(
                        "\(p).memory", n,
                        "\(layer.name) needs less memory than its host \(parent.name) (\(Units.formatBytes(Double(parent.memoryBytes))))"
                    )
                }
                // (L0 as this machine: its CPUs are this machine's, checked at the run's preflight.)
                for cpu in layer.pinning where cpu >= parent.vcpus && !(index == 1 && parent.thisMachine) {
                    r.problem("\(p).pinning", n, "CPU \(cpu) does not exist in \(parent.name), which has \(parent.vcpus) vCPUs")
                }
            }
            if layer.detachable && (index != layers.count - 1 || index > 1 || layer.instances > 1) {
                r.problem(
                    "\(p).detachable", n,
                    "only a single innermost L1 can be detachable (its QEMU runs on this machine: L0 is this machine)")
            }
            if layer.instances > 1 && index != layers.count - 1 {
                r.problem("\(p).instances", n, "only the innermost layer can have several instances (colocation)")
            }
            if let page = layer.backing.hugetlbPageBytes {
                let needed = (layer.memoryBytes * UInt64(layer.instances) + page - 1) / page
                let pool =
                    page == 2 << 20
                    ? parent.settings.sysctl["vm.nr_hugepages"]
                        ?? parent.settings.sysfs["/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"]
                    : parent.settings.sysfs["/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"]
                if (pool.flatMap { UInt64($0) } ?? 0) < needed {
                    r.problem(
                        "\(p).backing", n,
                        "\(layer.backing.rawValue) needs a pool of at least \(needed) huge pages in \(parent.name) (set "
                            + (page == 2 << 20
                                ? "sysctl: {vm.nr_hugepages: \(needed)}"
                                : "sysfs: {/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages: \(needed)}")
                            + " in \(parent.name))")
                }
            }
        }
        return layers
    }

    static func readLayer(_ node: Node, name: String, at path: String, isHost: Bool, _ r: YAMLReader) -> VMLayer? {
        guard let fields = r.mapping(node, at: path, allowed: keys) else { return nil }
        var layer = VMLayer(name: name)
        let settingFields = fields.filter { ExperimentLoader.layerSettingKeys.contains($0.key) }
        layer.settings = ExperimentLoader.readLayerFields(settingFields, r)
        var pinningNode: (Node, String)?
        for f in fields where !ExperimentLoader.layerSettingKeys.contains(f.key) {
            switch f.key {
            case "kernel", "initrd":
                guard let file = r.expanded(f.value, at: f.path) else { continue }
                if !FileManager.default.isReadableFile(atPath: file) {
                    r.problem(f.path, f.value, "\(f.key) image \(file) does not exist or is not readable")
                    continue
                }
                if f.key == "kernel" { layer.kernel = file } else { layer.initrd = file }
            case "modules_dir":
                guard let dir = r.expanded(f.value, at: f.path) else { continue }
                if !FileManager.default.fileExists(atPath: dir + "/modules.dep") {
                    r.problem(f.path, f.value, "\(dir) has no modules.dep (expected a /lib/modules/VERSION directory)")
                }
                layer.modulesDirectory = dir
            case "cmdline":
                if case .sequence(let seq) = f.value {
                    layer.cmdline = seq.enumerated().compactMap { r.expanded($1, at: "\(f.path)[\($0)]") }
                } else if let text = r.expanded(f.value, at: f.path) {
                    layer.cmdline = text.split(separator: " ").map(String.init)
                }
            case "vcpus": if let v = r.int(f.value, at: f.path, range: 1...256) { layer.vcpus = v }
            case "memory":
                if let b = r.bytes(f.value, at: f.path) {
                    if b < 128 << 20 {
                        r.problem(f.path, f.value, "at least 128MiB (a 6.1 guest under 512MiB also forces THP to never)")
                    } else {
                        layer.memoryBytes = b
                    }
                }
            case "backing":
                if let b = r.choice(f.value, at: f.path, from: MemoryBacking.allCases.map(\.rawValue)) {
                    layer.backing = MemoryBacking(rawValue: b)!
                }
            case "cpu": layer.cpuModel = r.string(f.value, at: f.path)
            case "pinning":
                pinningNode = (f.value, f.path)
                layer.pinning = ExperimentLoader.readCPUs(f.value, at: f.path, r)
            case "modules": layer.modules = readModules(f.value, at: f.path, r)
            case "requires":
                if let seq = r.sequence(f.value, at: f.path) {
                    for (i, item) in seq.enumerated() {
                        guard let p = r.expanded(item, at: "\(f.path)[\(i)]") else { continue }
                        if !p.hasPrefix("/") { r.problem("\(f.path)[\(i)]", item, "required paths are absolute (\(p))") }
                        layer.requires.append(p)
                    }
                }
            case "boot_timeout": if let t = r.seconds(f.value, at: f.path) { layer.bootTimeoutSeconds = t }
            case "boot_retries": if let v = r.int(f.value, at: f.path, range: 0...10) { layer.bootRetries = v }
            case "balloon": if let b = r.bool(f.value, at: f.path) { layer.balloon = b }
            case "detachable":
                if let b = r.bool(f.value, at: f.path) {
                    if isHost && b { r.problem(f.path, f.value, "L0 hosts the other layers: only L1 can be detachable") }
                    layer.detachable = b && !isHost
                }
            case "this_machine":
                if let b = r.bool(f.value, at: f.path) {
                    if isHost { layer.thisMachine = b } else { r.problem(f.path, f.value, "only L0 can be this machine") }
                }
            case "swap":
                if let b = r.bytes(f.value, at: f.path) {
                    if b < 16 << 20 { r.problem(f.path, f.value, "a swap device of at least 16MiB") } else { layer.swapBytes = b }
                }
            case "qemu_memory_max":
                if let b = r.bytes(f.value, at: f.path) {
                    if isHost {
                        r.problem(
                            f.path, f.value,
                            "L0's QEMU runs on this machine: cap it with this machine's own cgroup; qemu_memory_max is for guest layers (L1 …), capped in the layer below"
                        )
                    } else if b < 64 << 20 {
                        r.problem(f.path, f.value, "at least 64MiB")
                    } else {
                        layer.qemuMemoryMaxBytes = b
                    }
                }
            default:
                if isHost {
                    r.problem(f.path, f.value, "L0 is the host: it cannot have several instances")
                } else if let v = r.int(f.value, at: f.path, range: 1...16) {
                    layer.instances = v
                }
            }
        }
        if let (n, p) = pinningNode, !layer.pinning.isEmpty, layer.pinning.count != layer.vcpus {
            r.problem(p, n, "pin each of the \(layer.vcpus) vCPUs to one CPU (found \(layer.pinning.count) CPUs)")
        }
        if !isHost && layer.kernel == nil && !fields.contains(where: { $0.key == "kernel" }) {
            r.problem(path, node, "missing required key \"kernel\" (a kernel image path, or ${VARIABLE})")
        }
        return layer
    }

    static func readModules(_ node: Node, at path: String, _ r: YAMLReader) -> [KernelModule] {
        guard let entries = r.mapping(node, at: path, allowed: nil) else { return [] }
        var modules: [KernelModule] = []
        for e in entries {
            if case .scalar(let s) = e.value, s.string.isEmpty || s.string == "~" || s.string == "null" {
                modules.append(KernelModule(name: e.key))
                continue
            }
            let parameters = r.stringMap(e.value, at: e.path) ?? [:]
            for (k, v) in parameters where k.contains(" ") || v.contains(" ") || k.contains("=") {
                r.problem("\(e.path).\(k)", e.value, "module parameters and values cannot contain spaces or '='")
            }
            modules.append(KernelModule(name: e.key, parameters: parameters))
        }
        return modules
    }
}
