import Foundation
import NestBenchCollectors
import NestBenchModel
import NestBenchVM

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

    /// A booted stack's layers: kernel release and command line of each (L0 is this machine with
    /// hardware virtualization), QEMU's version.
    static func stack(_ stack: QemuStack, configuration: String, emulated: Bool) -> [String: String] {
        var layers: [AutomaticTags.Layer] = []
        if !emulated, let l0 = stack.configuration.layers.first {
            let here = MachineProbe.describe()
            layers.append(
                AutomaticTags.Layer(
                    name: l0.name, kernel: here.kernel.isEmpty ? nil : here.kernel, commandLine: here.extra["kernel.cmdline"]))
        }
        for layer in stack.layers {
            layers.append(
                AutomaticTags.Layer(
                    name: layer.name, kernel: layer.kernelRelease == "?" ? nil : layer.kernelRelease,
                    commandLine: layer.commandLine))
        }
        return AutomaticTags.stack(
            configuration: configuration, layers: layers, qemuVersion: stack.layers.compactMap(\.qemuVersion).first)
    }
}
