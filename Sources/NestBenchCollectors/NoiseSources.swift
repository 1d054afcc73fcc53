import Foundation
import NestBenchModel

/// The state of one noise source of a layer (ASLR, NUMA balancing, KSM, CPU governor, boost,
/// irqbalance), whether the experiment controls it, and the line that fixes it.
public struct NoiseSource: Codable, Sendable, Hashable {
    public var name: String
    /// What the layer has now ("off", "on", "performance", "not in this kernel (…)").
    public var state: String
    /// Whether the source exists on this layer at all (cpufreq, numa_balancing may not).
    public var present: Bool
    /// The knobs that set it to the experiment's value; empty when it is left alone or absent.
    public var knobs: [Knob]
    /// Whether the experiment (or the defaults) controls it.
    public var controlled: Bool
    /// One line that would fix it by hand, or the experiment setting that does.
    public var fix: String

    public init(name: String, state: String, present: Bool, knobs: [Knob], controlled: Bool, fix: String) {
        self.name = name
        self.state = state
        self.present = present
        self.knobs = knobs
        self.controlled = controlled
        self.fix = fix
    }

    /// Uncontrolled and in the noisy state: what `doctor` and the run warn about.
    public var warns: Bool { present && !controlled && !["off", "performance"].contains(state) }
}

/// Assesses a layer's noise sources from its files' contents. Pure: the caller reads the files
/// (this machine via `readThisMachine()`, a guest through its agent), so every layer is judged
/// by the same rules.
public enum NoiseSources {
    public static let aslrPath = "/proc/sys/kernel/randomize_va_space"
    public static let numaPath = "/proc/sys/kernel/numa_balancing"
    public static let ksmPath = "/sys/kernel/mm/ksm/run"
    public static let cpufreqRoot = "/sys/devices/system/cpu"
    public static let boostPath = "/sys/devices/system/cpu/cpufreq/boost"
    public static let noTurboPath = "/sys/devices/system/cpu/intel_pstate/no_turbo"

    /// The paths `assess` looks at for `cpus` CPUs (the governor is per CPU).
    public static func paths(cpus: Int) -> [String] {
        [aslrPath, numaPath, ksmPath, boostPath, noTurboPath]
            + (0..<cpus).map { "\(cpufreqRoot)/cpu\($0)/cpufreq/scaling_governor" }
    }

    /// - Parameters:
    ///   - files: path → content for the paths of `paths(cpus:)` that exist on the layer (absent = missing).
    ///   - processes: names of the layer's running processes (`irqbalance` is looked for).
    ///   - settings: the experiment's `environment:` (nil: defaults; `doctor` passes nil too).
    public static func assess(
        files: [String: String], processes: [String] = [], settings: EnvironmentSettings? = nil
    ) -> [NoiseSource] {
        let s = settings ?? EnvironmentSettings()
        let wanted = Dictionary(s.effective.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        func value(_ path: String) -> String? {
            files[path].map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        var result: [NoiseSource] = []

        func onOff(_ name: String, path: String, offValue: String, onValue: String, fix: String, absent: String) {
            guard let v = value(path) else {
                result.append(NoiseSource(name: name, state: absent, present: false, knobs: [], controlled: false, fix: ""))
                return
            }
            let state = v == offValue ? "off" : "on (\(v))"
            let want = wanted[name] ?? "leave"
            let knobs = want == "leave" ? [] : [Knob(path: path, value: want == "off" ? offValue : onValue)]
            result.append(
                NoiseSource(
                    name: name, state: v == offValue ? "off" : state, present: true, knobs: knobs,
                    controlled: want != "leave", fix: "environment: {\(name): off} — or by hand: \(fix)"))
        }
        onOff(
            "aslr", path: aslrPath, offValue: "0", onValue: "2", fix: "sysctl -w kernel.randomize_va_space=0",
            absent: "unknown (no \(aslrPath))")
        onOff(
            "numa_balancing", path: numaPath, offValue: "0", onValue: "1", fix: "sysctl -w kernel.numa_balancing=0",
            absent: "not in this kernel (no \(numaPath)): nothing to control")
        onOff(
            "ksm", path: ksmPath, offValue: "0", onValue: "1", fix: "echo 0 > \(ksmPath)",
            absent: "not in this kernel (no \(ksmPath)): nothing to control")

        // Governor: every CPU's cpufreq policy.
        let governorFiles = files.keys.filter { $0.hasPrefix(cpufreqRoot + "/cpu") && $0.hasSuffix("/scaling_governor") }
            .sorted()
        if governorFiles.isEmpty {
            result.append(
                NoiseSource(
                    name: "governor", state: "no cpufreq (no \(cpufreqRoot)/cpu*/cpufreq): frequency not controllable here",
                    present: false, knobs: [], controlled: false, fix: ""))
        } else {
            let governors = Set(governorFiles.compactMap { value($0) }).sorted()
            let want = wanted["governor"] ?? "leave"
            result.append(
                NoiseSource(
                    name: "governor", state: governors.joined(separator: ","), present: true,
                    knobs: want == "leave" ? [] : governorFiles.map { Knob(path: $0, value: want) },
                    controlled: want != "leave",
                    fix: "environment: {governor: performance} — or by hand: cpupower frequency-set -g performance"))
        }
        // Boost: cpufreq/boost (1 = on) or intel_pstate/no_turbo (1 = off).
        let want = wanted["boost"] ?? "leave"
        if let v = value(boostPath) {
            result.append(
                NoiseSource(
                    name: "boost", state: v == "0" ? "off" : "on", present: true,
                    knobs: want == "leave" ? [] : [Knob(path: boostPath, value: want == "off" ? "0" : "1")],
                    controlled: want != "leave", fix: "environment: {boost: off} — or by hand: echo 0 > \(boostPath)"))
        } else if let v = value(noTurboPath) {
            result.append(
                NoiseSource(
                    name: "boost", state: v == "1" ? "off" : "on", present: true,
                    knobs: want == "leave" ? [] : [Knob(path: noTurboPath, value: want == "off" ? "1" : "0")],
                    controlled: want != "leave", fix: "environment: {boost: off} — or by hand: echo 1 > \(noTurboPath)"))
        } else {
            result.append(
                NoiseSource(
                    name: "boost", state: "no boost knob (no cpufreq/boost or intel_pstate/no_turbo): not controllable here",
                    present: false, knobs: [], controlled: false, fix: ""))
        }
        let irq = processes.contains("irqbalance")
        result.append(
            NoiseSource(
                name: "irqbalance", state: irq ? "running" : "off", present: true, knobs: [], controlled: false,
                fix: irq ? "stop irqbalance while measuring (systemctl stop irqbalance)" : ""))
        return result
    }

    /// This machine's files and processes for `assess`.
    public static func readThisMachine() -> (files: [String: String], processes: [String]) {
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        var files: [String: String] = [:]
        for p in paths(cpus: cpus) { if let t = KernelFile.read(p) { files[p] = t } }
        var processes: [String] = []
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") {
            for e in entries where e.allSatisfy(\.isNumber) {
                if let comm = KernelFile.read("/proc/\(e)/comm")?.trimmingCharacters(in: .whitespacesAndNewlines),
                    comm == "irqbalance"
                {
                    processes.append(comm)
                }
            }
        }
        return (files, processes)
    }

    /// One provenance line per source: `env.aslr` → `off`, `env.ksm` → `on (1), uncontrolled`.
    public static func provenance(_ sources: [NoiseSource], prefix: String = "") -> [String: String] {
        var result: [String: String] = [:]
        for s in sources {
            result["\(prefix)env.\(s.name)"] = s.state + (s.present && !s.controlled ? ", uncontrolled" : "")
        }
        return result
    }
}

/// Which paging mode a KVM layer runs: nested (two-dimensional) paging — EPT on Intel, NPT on
/// AMD — or shadow paging, from the module parameters. Pure: callers read the files per layer.
public enum NestedPaging {
    public static let files = [
        "/sys/module/kvm_intel/parameters/ept", "/sys/module/kvm_amd/parameters/npt",
    ]

    /// "ept on", "npt off (shadow paging)", or nil when no KVM vendor module is loaded.
    public static func mode(files: [String: String]) -> String? {
        for (path, name) in [(Self.files[0], "ept"), (Self.files[1], "npt")] {
            guard let raw = files[path]?.trimmingCharacters(in: .whitespacesAndNewlines) else { continue }
            let on = ["Y", "1", "y"].contains(raw)
            return on ? "\(name) on" : "\(name) off (shadow paging)"
        }
        return nil
    }
}
