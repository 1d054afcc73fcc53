import Foundation
import NestBenchCollectors
import NestBenchModel

/// The automatic tags of an experiment run (`AutomaticTags`), from this machine and the stacks it boots.
enum RunTagging {
    /// Tags known at the start: this machine, each local configuration's kernel; the user's win.
    static func initial(machine: MachineDescription, experiment: Experiment, user: [String: String]) -> [String: String] {
        var tags = AutomaticTags.machine(machine)
        for c in experiment.configurations where c.platform != .qemu {
            tags.merge(AutomaticTags.local(configuration: c.name, machine: machine)) { $1 }
        }
        return RunTags.yielding(tags, to: user).merging(user) { $1 }
    }

    /// A booted stack's layers, from what its placement records (`L1.kernel`, `L1.cmdline`,
    /// `qemu_version`): kernel release and command line of each, QEMU's version. A first layer
    /// without its own entry is this machine (L0 with hardware virtualization).
    static func stack(_ provenance: [String: String], configuration: Configuration, named name: String) -> [String: String] {
        let layerNames = configuration.layers.map(\.name)
        var booted: [String] = []
        for key in provenance.keys where key.hasSuffix(".kernel") {
            let layer = String(key.dropLast(".kernel".count))
            if layerNames.contains(where: { layer == $0 || layer.hasPrefix($0 + ".") }) { booted.append(layer) }
        }
        var layers: [AutomaticTags.Layer] = []
        if let first = layerNames.first, !booted.contains(where: { $0 == first || $0.hasPrefix(first + ".") }) {
            let here = MachineProbe.describe()
            layers.append(
                AutomaticTags.Layer(
                    name: first, kernel: here.kernel.isEmpty ? nil : here.kernel, commandLine: here.extra["kernel.cmdline"]))
        }
        for layer in booted.sorted() {
            let release = provenance["\(layer).kernel"]
            layers.append(
                AutomaticTags.Layer(
                    name: layer, kernel: release == "?" ? nil : release, commandLine: provenance["\(layer).cmdline"]))
        }
        return AutomaticTags.stack(configuration: name, layers: layers, qemuVersion: provenance["qemu_version"])
    }
}
