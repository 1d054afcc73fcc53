import Crypto
import Foundation
import NestBenchModel
import Yams

/// An experiment as loaded from its file, with what identifies that file.
public struct LoadedExperiment: Sendable {
    public var experiment: Experiment
    public var path: String
    public var content: String
    /// Hex SHA-256 of the file's bytes.
    public var contentHash: String
}

/// Reads and validates experiment files (see `Suites/quickstart.yaml` for the format).
public enum ExperimentLoader {
    static let topKeys: Set<String> = [
        "name", "description", "baseline", "seed", "configurations", "workloads", "conditions",
        "repetitions", "analysis", "collectors", "reference", "environment",
    ]

    /// Loads `path`; every problem in the file is reported at once in the thrown error.
    public static func load(
        path: String, catalog: (any WorkloadCatalog)? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> LoadedExperiment {
        let data: Data
        do {
            data = try InputFile.read(path, limit: 64 << 20)
        } catch {
            throw ConfigError(problems: [
                ConfigProblem(
                    file: path, keyPath: "", line: nil, column: nil,
                    message: "cannot read the experiment file: it \(error.message)")
            ])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(problems: [
                ConfigProblem(file: path, keyPath: "", line: nil, column: nil, message: "the file is not UTF-8 text")
            ])
        }
        let experiment = try parse(text, file: path, catalog: catalog, environment: environment)
        let hash = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        return LoadedExperiment(experiment: experiment, path: path, content: text, contentHash: hash)
    }

    /// Parses experiment YAML text; `file` names it in errors.
    public static func parse(
        _ text: String, file: String, catalog: (any WorkloadCatalog)? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> Experiment {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ConfigError(problems: [
                    ConfigProblem(file: file, keyPath: "", line: nil, column: nil, message: "the file is empty")
                ])
            }
            root = node
        } catch let error as ConfigError {
            throw error
        } catch let error as YamlError {
            throw ConfigError(problems: [yamlProblem(error, file: file, text: text)])
        } catch {
            throw ConfigError(problems: [
                ConfigProblem(file: file, keyPath: "", line: nil, column: nil, message: "invalid YAML: \(error)")
            ])
        }
        let reader = YAMLReader(file: file, environment: environment)
        let experiment = read(root, reader: reader, catalog: catalog)
        if let experiment, reader.problems.isEmpty {
            // The workloads' and collectors' metric declarations travel with the experiment.
            return (catalog as? any MetricDeclaring)?.declaring(experiment) ?? experiment
        }
        throw ConfigError(problems: reader.problems)
    }

    static func yamlProblem(_ error: YamlError, file: String, text: String = "") -> ConfigProblem {
        switch error {
        case .duplicatedKeysInMapping(let duplicates, let context):
            // Yams's message embeds the whole file; name the key and the lines it is on instead.
            let key = duplicates.sorted().first ?? "?"
            let lines = linesDefining(key: key, in: text)
            let line = lines.count >= 2 ? lines[1] : (context.mark.line > 0 ? context.mark.line : nil)
            let also = lines.count >= 2 ? " (first at line \(lines[0]))" : ""
            let others =
                duplicates.count > 1 ? "; also duplicated: \(duplicates.sorted().dropFirst().joined(separator: ", "))" : ""
            return ConfigProblem(
                file: file, keyPath: key, line: line, column: nil,
                message: "duplicate key \"\(key)\" in one mapping\(also)\(others)")
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _):
            return ConfigProblem(
                file: file, keyPath: "", line: mark.line, column: mark.column,
                message: "invalid YAML: \(problem)")
        case .composer(_, let problem, let mark, _):
            return ConfigProblem(
                file: file, keyPath: "", line: mark.line, column: mark.column,
                message: "invalid YAML: \(problem)")
        default:
            return ConfigProblem(file: file, keyPath: "", line: nil, column: nil, message: "invalid YAML: \(error)")
        }
    }

    /// 1-based lines where `key:` appears as a mapping key (block or flow style).
    static func linesDefining(key: String, in text: String) -> [Int] {
        var result: [Int] = []
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            var search = line[...]
            while let range = search.range(of: key) {
                let before = range.lowerBound == line.startIndex ? nil : line[line.index(before: range.lowerBound)]
                let after = line[range.upperBound...].drop { $0 == " " || $0 == "\"" || $0 == "'" }
                let quoteBefore = before == "\"" || before == "'"
                let startOK = before == nil || before == " " || before == "{" || before == "," || before == "-" || quoteBefore
                if startOK && after.first == ":" {
                    result.append(index + 1)
                }
                search = line[range.upperBound...]
            }
        }
        return result
    }

    // MARK: - Sections

    static func read(_ root: Node, reader r: YAMLReader, catalog: (any WorkloadCatalog)?) -> Experiment? {
        guard let entries = r.mapping(root, at: "", allowed: topKeys) else { return nil }
        var fields: [String: (Node, String)] = [:]
        for e in entries { fields[e.key] = (e.value, e.path) }

        func required(_ key: String) -> (Node, String)? {
            if let f = fields[key] { return f }
            r.problem(key, root, "missing required key \"\(key)\"")
            return nil
        }

        let name = required("name").flatMap { r.string($0.0, at: $0.1) }
        let description = fields["description"].flatMap { r.string($0.0, at: $0.1) }
        let seed = fields["seed"].flatMap { r.uint64($0.0, at: $0.1) }
        let configurations = required("configurations").flatMap { readConfigurations($0.0, at: $0.1, r) } ?? []
        let workloads = required("workloads").flatMap { readWorkloads($0.0, at: $0.1, r, catalog: catalog) } ?? []
        let conditions = fields["conditions"].map { readConditions($0.0, at: $0.1, r) } ?? [Condition(name: "clean")]
        let repetitions = fields["repetitions"].map { readRepetitions($0.0, at: $0.1, r) } ?? RepetitionPolicy()
        let analysis =
            fields["analysis"].map { readAnalysis($0.0, at: $0.1, r, conditionNames: conditions.map(\.name)) }
            ?? AnalysisSettings()
        let collectors = fields["collectors"].map { readCollectors($0.0, at: $0.1, r) }
        let reference = fields["reference"].flatMap { readReference($0.0, at: $0.1, r) }
        let environment = fields["environment"].map { readEnvironment($0.0, at: $0.1, r) }

        var baseline: String?
        if let (node, path) = required("baseline"), let b = r.string(node, at: path) {
            if !configurations.isEmpty, !configurations.contains(where: { $0.name == b }) {
                r.problem(
                    path, node,
                    "baseline \"\(b)\" is not a configuration of this experiment (have: \(configurations.map(\.name).joined(separator: ", ")))"
                )
            }
            baseline = b
        }
        if let (node, path) = fields["configurations"], configurations.isEmpty, case .mapping = node {
            r.problem(path, node, "at least one configuration is required")
        }
        if let (node, path) = fields["workloads"], workloads.isEmpty, case .sequence = node {
            r.problem(path, node, "at least one workload is required")
        }
        if let reference, let (node, path) = fields["reference"] {
            for (i, v) in reference.values.enumerated() {
                if !configurations.isEmpty, !configurations.contains(where: { $0.name == v.configuration }) {
                    r.problem(
                        "\(path).values[\(i)].configuration", node,
                        "\"\(v.configuration)\" is not a configuration of this experiment")
                }
                if let c = v.condition, !conditions.contains(where: { $0.name == c }) {
                    r.problem("\(path).values[\(i)].condition", node, "\"\(c)\" is not a condition of this experiment")
                }
            }
        }
        if let (node, path) = fields["conditions"] {
            for c in conditions {
                if let spec = c.saveRestore {
                    saveRestoreProblems(spec, at: "\(path).\(c.name).save_restore", node, configurations, workloads, r)
                }
            }
        }
        guard let name, let baseline else { return nil }
        var experiment = Experiment(
            name: name, description: description, baseline: baseline, seed: seed,
            configurations: configurations, workloads: workloads, conditions: conditions,
            repetitions: repetitions, analysis: analysis, collectors: collectors)
        experiment.reference = reference
        experiment.environment = environment
        return experiment
    }

    /// `reference: {source: "…", values: [{figure: fig11, configuration: xgemini, condition: clean,
    /// change: +16.5% | ratio: 1.165, label: "…"}]}`.
    static func readReference(_ node: Node, at path: String, _ r: YAMLReader) -> ReferenceSet? {
        guard let fields = r.mapping(node, at: path, allowed: ["source", "values"]) else { return nil }
        var source: String?
        var values: [ReferenceValue] = []
        for f in fields {
            switch f.key {
            case "source": source = r.string(f.value, at: f.path)
            default:
                guard let items = r.sequence(f.value, at: f.path) else { continue }
                for (i, item) in items.enumerated() {
                    let at = "\(f.path)[\(i)]"
                    guard
                        let entries = r.mapping(
                            item, at: at, allowed: ["figure", "configuration", "condition", "change", "ratio", "label"])
                    else { continue }
                    var by: [String: (Node, String)] = [:]
                    for e in entries { by[e.key] = (e.value, e.path) }
                    let figure = by["figure"].flatMap { r.string($0.0, at: $0.1) }
                    let configuration = by["configuration"].flatMap { r.string($0.0, at: $0.1) }
                    var ratio: Double?
                    if let (n, p) = by["ratio"] { ratio = r.double(n, at: p, range: 0.000001...1_000_000) }
                    if let (n, p) = by["change"], let text = r.string(n, at: p) {
                        let t = text.trimmingCharacters(in: .whitespaces)
                        if t.hasSuffix("%"),
                            let v = Double(
                                t.dropLast().replacingOccurrences(of: "+", with: "")
                                    .replacingOccurrences(of: "−", with: "-"))
                        {
                            ratio = 1 + v / 100
                        } else {
                            r.problem(p, n, "change must be a percentage such as +16.5% or -35.0%, got \"\(text)\"")
                        }
                    }
                    if figure == nil { r.problem(at, item, "missing required key \"figure\"") }
                    if configuration == nil { r.problem(at, item, "missing required key \"configuration\"") }
                    if ratio == nil, by["ratio"] == nil, by["change"] == nil {
                        r.problem(at, item, "give the published value as change: +16.5% or ratio: 1.165")
                    }
                    guard let figure, let configuration, let ratio else { continue }
                    values.append(
                        ReferenceValue(
                            figure: figure, configuration: configuration,
                            condition: by["condition"].flatMap { r.string($0.0, at: $0.1) }, ratio: ratio,
                            label: by["label"].flatMap { r.string($0.0, at: $0.1) }))
                }
            }
        }
        guard let source else {
            r.problem(path, node, "missing required key \"source\" (where the reference values come from)")
            return nil
        }
        return ReferenceSet(source: source, values: values)
    }

    /// `environment: {aslr: off, numa_balancing: off, ksm: leave, governor: performance, boost: off,
    /// kernel_log: mark}`.
    static func readEnvironment(_ node: Node, at path: String, _ r: YAMLReader) -> EnvironmentSettings {
        var settings = EnvironmentSettings()
        guard let fields = r.mapping(node, at: path, allowed: Set(EnvironmentSettings.names)) else { return settings }
        for f in fields {
            guard let raw = r.string(f.value, at: f.path) else { continue }
            // YAML 1.1 reads off/on as booleans; Yams gives them back as "false"/"true" strings or the literal.
            let v: String
            switch raw.lowercased() {
            case "false", "no", "0": v = "off"
            case "true", "yes", "1": v = "on"
            default: v = raw
            }
            let onOff = ["off", "on", "leave"]
            switch f.key {
            case "kernel_log":
                guard ["mark", "fail"].contains(v) else {
                    r.problem(f.path, f.value, "kernel_log must be mark or fail, got \"\(raw)\"")
                    continue
                }
                settings.kernelLog = v
            case "governor":
                settings.governor = v
            default:
                guard onOff.contains(v) else {
                    r.problem(f.path, f.value, "\(f.key) must be off, on or leave, got \"\(raw)\"")
                    continue
                }
                switch f.key {
                case "aslr": settings.aslr = v
                case "numa_balancing": settings.numaBalancing = v
                case "ksm": settings.ksm = v
                default: settings.boost = v
                }
            }
        }
        return settings
    }

    static func readConfigurations(_ node: Node, at path: String, _ r: YAMLReader) -> [Configuration]? {
        guard let entries = r.mapping(node, at: path, allowed: nil) else { return nil }
        var result: [Configuration] = []
        for entry in entries {
            if case .mapping(let m) = entry.value, m.keys.contains(where: { $0.string == "include" }) {
                if let configuration = readIncludedConfiguration(entry.value, name: entry.key, at: entry.path, r) {
                    result.append(configuration)
                }
                continue
            }
            if let configuration = readConfiguration(entry.value, name: entry.key, at: entry.path, r) {
                result.append(configuration)
            }
        }
        return result
    }

    static let configurationKeys: Set<String> = ["platform", "host", "description", "layers"]

    /// One configuration's body (inline in the experiment, or a whole included file with `path` "").
    static func readConfiguration(_ node: Node, name: String, at path: String, _ r: YAMLReader) -> Configuration? {
        guard let fields = r.mapping(node, at: path, allowed: configurationKeys) else { return nil }
        var configuration = Configuration(name: name)
        var layersNode: (Node, String)?
        for f in fields {
            switch f.key {
            case "platform":
                if let p = r.choice(f.value, at: f.path, from: PlatformKind.allCases.map(\.rawValue)) {
                    configuration.platform = PlatformKind(rawValue: p)!
                }
            case "host":
                configuration.host = readLayer(f.value, at: f.path, r)
            case "layers":
                layersNode = (f.value, f.path)
            default:
                configuration.description = r.string(f.value, at: f.path)
            }
        }
        if let (n, p) = layersNode {
            if configuration.platform != .qemu {
                r.problem(p, n, "layers need platform: qemu")
            } else {
                configuration.layers = VMLayerReader.readLayers(n, at: p, r)
            }
        } else if configuration.platform == .qemu {
            r.problem(path, node, "platform qemu needs layers (L0, L1 …)")
        }
        return configuration
    }

    /// `name: {include: configurations/x.yaml}`: the file (relative to the experiment file) holds
    /// the configuration's body; its problems name that file.
    static func readIncludedConfiguration(_ node: Node, name: String, at path: String, _ r: YAMLReader) -> Configuration? {
        guard let fields = r.mapping(node, at: path, allowed: ["include"]), let f = fields.first,
            let relative = r.string(f.value, at: f.path)
        else { return nil }
        let base = (r.file as NSString).deletingLastPathComponent
        let file = relative.hasPrefix("/") ? relative : (base.isEmpty ? relative : base + "/" + relative)
        let text: String
        do {
            text = try InputFile.text(file, limit: 64 << 20)
        } catch {
            r.problem(f.path, f.value, "cannot read the included file \(file): it \(error.message)")
            return nil
        }
        let sub = YAMLReader(file: file, environment: r.environment)
        defer { r.absorb(sub) }
        do {
            guard let root = try Yams.compose(yaml: text) else {
                sub.problem("", nil, "the file is empty")
                return nil
            }
            return readConfiguration(root, name: name, at: "", sub)
        } catch let error as YamlError {
            let p = yamlProblem(error, file: file)
            sub.problem("", nil, p.message)
            return nil
        } catch {
            sub.problem("", nil, "invalid YAML: \(error)")
            return nil
        }
    }

    static let layerSettingKeys: Set<String> = ["thp", "khugepaged", "ksm", "sysctl", "sysfs"]

    /// The KSM files a `ksm:` block may set (`/sys/kernel/mm/ksm/<name>`), as whole numbers.
    static let ksmKnobs: Set<String> = [
        "run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes", "use_zero_pages", "max_page_sharing",
    ]

    static func readLayer(_ node: Node, at path: String, _ r: YAMLReader) -> LayerSettings {
        guard let fields = r.mapping(node, at: path, allowed: layerSettingKeys) else { return LayerSettings() }
        return readLayerFields(fields, r)
    }

    static func readLayerFields(_ fields: [(key: String, value: Node, path: String)], _ r: YAMLReader) -> LayerSettings {
        var layer = LayerSettings()
        for f in fields {
            switch f.key {
            case "thp":
                guard let thp = r.mapping(f.value, at: f.path, allowed: ["enabled", "defrag", "shmem_enabled"]) else {
                    continue
                }
                for t in thp {
                    switch t.key {
                    case "enabled": layer.thp.enabled = r.choice(t.value, at: t.path, from: THPSettings.enabledValues)
                    case "defrag": layer.thp.defrag = r.choice(t.value, at: t.path, from: THPSettings.defragValues)
                    default: layer.thp.shmemEnabled = r.choice(t.value, at: t.path, from: THPSettings.shmemValues)
                    }
                }
            case "khugepaged":
                guard let k = r.mapping(f.value, at: f.path, allowed: Set(KhugepagedSettings.names)) else { continue }
                for e in k {
                    let range = e.key == "defrag" ? 0...1 : 0...Int(Int32.max)
                    if let v = r.int(e.value, at: e.path, range: range) { layer.khugepaged.settings[e.key] = v }
                }
            case "ksm":
                // Kernel samepage merging: knobs under /sys/kernel/mm/ksm/, restored like every knob.
                guard let k = r.mapping(f.value, at: f.path, allowed: ksmKnobs) else { continue }
                for e in k {
                    let range =
                        e.key == "run"
                        ? 0...2 : e.key == "merge_across_nodes" || e.key == "use_zero_pages" ? 0...1 : 0...Int(Int32.max)
                    if let v = r.int(e.value, at: e.path, range: range) {
                        layer.sysfs["/sys/kernel/mm/ksm/\(e.key)"] = String(v)
                    }
                }
            case "sysctl":
                if let map = r.stringMap(f.value, at: f.path) {
                    for key in map.keys where key.contains("/") || key.contains("..") {
                        r.problem("\(f.path).\(key)", f.value, "sysctl names are dotted (vm.compaction_proactiveness), not paths")
                    }
                    layer.sysctl = map
                }
            default:
                if let map = r.stringMap(f.value, at: f.path) {
                    for key in map.keys
                    where !(key.hasPrefix("/sys/") || key.hasPrefix("/proc/sys/")) || key.contains("/../") {
                        r.problem("\(f.path).\(key)", f.value, "sysfs knobs must be absolute paths under /sys/ or /proc/sys/")
                    }
                    layer.sysfs.merge(map) { $1 }
                }
            }
        }
        return layer
    }

    static func readWorkloads(_ node: Node, at path: String, _ r: YAMLReader, catalog: (any WorkloadCatalog)?)
        -> [WorkloadSpec]?
    {
        guard let items = r.sequence(node, at: path) else { return nil }
        var result: [WorkloadSpec] = []
        var labels: Set<String> = []
        for (index, item) in items.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let spec = readWorkload(item, at: itemPath, r, catalog: catalog, group: true) else { continue }
            if !labels.insert(spec.label).inserted {
                r.problem(itemPath, item, "two workloads are labeled \"\(spec.label)\": give each a distinct label")
            }
            result.append(spec)
        }
        return result
    }

    /// One workload, or (with `group`) a colocated group: `{label: a+b, colocate: [{…}, {…}]}`,
    /// whose members run together, each in its own innermost guest.
    static func readWorkload(_ item: Node, at itemPath: String, _ r: YAMLReader, catalog: (any WorkloadCatalog)?, group: Bool)
        -> WorkloadSpec?
    {
        let keys: Set<String> = ["name", "suite", "label", "params", "cpus", "timeout", "env"]
        guard let fields = r.mapping(item, at: itemPath, allowed: group ? keys.union(["colocate"]) : keys) else {
            return nil
        }
        var byKey: [String: (Node, String)] = [:]
        for f in fields { byKey[f.key] = (f.value, f.path) }
        if let (membersNode, membersPath) = byKey["colocate"] {
            for key in ["name", "suite", "params", "cpus", "timeout", "env"] where byKey[key] != nil {
                r.problem(
                    byKey[key]!.1, byKey[key]!.0, "a colocated group takes only label and colocate; give \(key) to its members")
            }
            guard let items = r.sequence(membersNode, at: membersPath) else { return nil }
            var members: [WorkloadSpec] = []
            for (index, memberNode) in items.enumerated() {
                if let member = readWorkload(memberNode, at: "\(membersPath)[\(index)]", r, catalog: catalog, group: false) {
                    members.append(member)
                }
            }
            guard items.count >= 2 else {
                r.problem(membersPath, membersNode, "colocate needs at least two workloads")
                return nil
            }
            // Members named alike get -1, -2 … unless labeled.
            for (name, count) in Dictionary(members.map { ($0.label, 1) }, uniquingKeysWith: +) where count > 1 {
                var n = 0
                for i in members.indices where members[i].label == name {
                    n += 1
                    members[i].label = "\(name)-\(n)"
                }
            }
            var spec = WorkloadSpec(
                label: members.map(\.label).joined(separator: "+"), suite: "colocated",
                name: members.map(\.name).joined(separator: "+"))
            spec.colocated = members
            spec.timeoutSeconds = members.map(\.timeoutSeconds).max() ?? spec.timeoutSeconds
            if let (n, p) = byKey["label"], let label = r.string(n, at: p) { spec.label = label }
            return spec
        }
        guard let (nameNode, namePath) = byKey["name"] else {
            r.problem(itemPath, item, "missing required key \"name\"" + (group ? " (or colocate)" : ""))
            return nil
        }
        guard let (suiteNode, suitePath) = byKey["suite"] else {
            r.problem(itemPath, item, "missing required key \"suite\"")
            return nil
        }
        guard let name = r.string(nameNode, at: namePath), let suite = r.string(suiteNode, at: suitePath) else {
            return nil
        }
        var spec = WorkloadSpec(suite: suite, name: name)
        if let (n, p) = byKey["label"], let label = r.string(n, at: p) { spec.label = label }
        if let (n, p) = byKey["params"], let params = r.stringMap(n, at: p) { spec.params = params }
        if let (n, p) = byKey["env"], let env = r.stringMap(n, at: p) { spec.environment = env }
        if let (n, p) = byKey["timeout"], let t = r.seconds(n, at: p) { spec.timeoutSeconds = t }
        if let (n, p) = byKey["cpus"] { spec.cpus = readCPUs(n, at: p, r) }
        if let catalog {
            for problem in catalog.problems(for: spec) {
                let (n, p) = byKey[problem.key.split(separator: ".").first.map(String.init) ?? ""] ?? (item, itemPath)
                r.problem(problem.key.contains(".") ? "\(itemPath).\(problem.key)" : p, n, problem.message)
            }
        }
        return spec
    }

    /// CPUs as a list `[0, 1]` or a cpulist string `"0-3,6"`.
    static func readCPUs(_ node: Node, at path: String, _ r: YAMLReader) -> [Int] {
        if case .sequence(let seq) = node {
            return seq.enumerated().compactMap { r.int($1, at: "\(path)[\($0)]", range: 0...CPUList.maxCPU) }
        }
        guard let text = r.string(node, at: path) else { return [] }
        guard let cpus = CPUList.parse(text) else {
            r.problem(
                path, node,
                "expected a CPU list such as [0, 1] or \"0-3,6\" with CPUs 0–\(CPUList.maxCPU), found \"\(text.prefix(80))\"")
            return []
        }
        return cpus
    }

    static func readConditions(_ node: Node, at path: String, _ r: YAMLReader) -> [Condition] {
        guard let entries = r.mapping(node, at: path, allowed: nil) else { return [] }
        var result: [Condition] = []
        for entry in entries {
            var condition = Condition(name: entry.key)
            if case .scalar(let s) = entry.value, s.string.isEmpty || s.string == "~" || s.string == "null" {
                result.append(condition)
                continue
            }
            guard
                let fields = r.mapping(
                    entry.value, at: entry.path,
                    allowed: ["fragmentation", "memory_pressure", "save_restore", "compact", "description"])
            else {
                continue
            }
            var compact: Bool?
            for f in fields {
                switch f.key {
                case "fragmentation": condition.fragmentation = readFragmentation(f.value, at: f.path, r)
                case "memory_pressure": condition.memoryPressure = readMemoryPressure(f.value, at: f.path, r)
                case "save_restore": condition.saveRestore = readSaveRestore(f.value, at: f.path, r)
                case "compact": compact = r.bool(f.value, at: f.path)
                default: _ = r.string(f.value, at: f.path)
                }
            }
            condition.compact = compact ?? (condition.fragmentation != nil)
            if let a = condition.fragmentation?.layer, let b = condition.memoryPressure?.layer, a != b {
                r.problem(
                    "\(entry.path).memory_pressure.layer", entry.value,
                    "a condition runs in one layer: fragmentation.layer is \(a), memory_pressure.layer is \(b)")
            }
            result.append(condition)
        }
        if result.isEmpty { r.problem(path, node, "at least one condition is required when the key is given") }
        return result
    }

    /// A save/restore condition needs its layer to be a detachable guest in every configuration,
    /// and workloads that report their progress (the micro with params.progress).
    static func saveRestoreProblems(
        _ spec: SaveRestoreSpec, at path: String, _ node: Node, _ configurations: [Configuration],
        _ workloads: [WorkloadSpec], _ r: YAMLReader
    ) {
        guard !spec.layer.isEmpty else { return }
        for c in configurations {
            guard c.platform == .qemu else {
                r.problem(
                    "\(path).layer", node, "configuration \(c.name) is not a qemu stack: there is no guest \(spec.layer) to save")
                continue
            }
            guard let layer = c.layers.first(where: { $0.name == spec.layer }) else {
                r.problem("\(path).layer", node, "configuration \(c.name) has no layer \(spec.layer)")
                continue
            }
            if !layer.detachable {
                r.problem(
                    "\(path).layer", node,
                    "configuration \(c.name)'s \(spec.layer) must be detachable: true (a guest that can be saved: it runs from its initramfs)"
                )
            }
        }
        for (i, w) in workloads.enumerated() {
            for member in w.colocated ?? [w] {
                let progress = member.params["progress"].flatMap(Double.init) ?? 0
                if member.suite != "micro" || progress <= 0 {
                    r.problem(
                        "workloads[\(i)]", node,
                        "\(member.label): \(path) needs the micro with params.progress (seconds per progress interval) to measure TTR"
                    )
                }
            }
        }
    }

    static func readSaveRestore(_ node: Node, at path: String, _ r: YAMLReader) -> SaveRestoreSpec? {
        guard let fields = r.mapping(node, at: path, allowed: ["layer", "at", "tolerance", "mode"]) else { return nil }
        var spec = SaveRestoreSpec(layer: "", atSeconds: 0)
        var has: Set<String> = []
        for f in fields {
            has.insert(f.key)
            switch f.key {
            case "at":
                if let t = r.seconds(f.value, at: f.path) {
                    if t <= 0 {
                        r.problem(f.path, f.value, "must be after the workload's start (e.g. 10s)")
                    } else {
                        spec.atSeconds = t
                    }
                }
            case "mode":
                if let m = r.string(f.value, at: f.path) {
                    if let mode = SaveRestoreSpec.Mode(rawValue: m) {
                        spec.mode = mode
                    } else {
                        r.problem(
                            f.path, f.value, "must be eager (save to an image, then load it) or lazy (postcopy), got \"\(m)\"")
                    }
                }
            case "tolerance":
                if let t = r.double(f.value, at: f.path, range: 0...1) {
                    if t == 0 || t == 1 {
                        r.problem(f.path, f.value, "must be between 0 and 1 (e.g. 0.1: within 10%)")
                    } else {
                        spec.tolerance = t
                    }
                }
            default:
                if let l = r.string(f.value, at: f.path) {
                    if l.wholeMatch(of: /L[0-9]+/) != nil && l != "L0" {
                        spec.layer = l
                    } else {
                        r.problem(f.path, f.value, "must be the guest layer to save, such as L1, got \"\(l)\"")
                    }
                }
            }
        }
        for key in ["layer", "at"] where !has.contains(key) {
            r.problem(
                path, node,
                "missing required key \"\(key)\""
                    + (key == "at" ? " (when to save, e.g. 10s)" : " (the guest layer to save, e.g. L1)"))
        }
        return spec
    }

    static func readMemoryPressure(_ node: Node, at path: String, _ r: YAMLReader) -> MemoryPressureSpec? {
        guard let fields = r.mapping(node, at: path, allowed: ["available", "step", "timeout", "layer", "method"]) else {
            return nil
        }
        var spec = MemoryPressureSpec(availableBytes: 0)
        var hasTarget = false
        for f in fields {
            switch f.key {
            case "available":
                hasTarget = true
                if let b = r.bytes(f.value, at: f.path) {
                    // Driving a layer's MemAvailable under 64 MiB invites its OOM killer (or a swap
                    // storm) rather than pressure: refused, as a typo like `available: 0` would be.
                    if b < 64 << 20 {
                        r.problem(f.path, f.value, "must be at least 64MiB (below that the layer's OOM killer acts)")
                    } else {
                        spec.availableBytes = b
                    }
                }
            case "step":
                if let b = r.bytes(f.value, at: f.path) {
                    if b < 4096 { r.problem(f.path, f.value, "must be at least 4KiB") } else { spec.stepBytes = b }
                }
            case "timeout": if let t = r.seconds(f.value, at: f.path) { spec.timeoutSeconds = t }
            case "method":
                if let m = r.choice(f.value, at: f.path, from: MemoryPressureSpec.Method.allCases.map(\.rawValue)) {
                    spec.method = MemoryPressureSpec.Method(rawValue: m)!
                }
            default:
                if let l = r.string(f.value, at: f.path) {
                    if l == "host" || l.wholeMatch(of: /L[0-9]+(\.[0-9]+)?/) != nil {
                        spec.layer = l
                    } else {
                        r.problem(f.path, f.value, "must be host or a layer name such as L0, got \"\(l)\"")
                    }
                }
            }
        }
        if !hasTarget { r.problem(path, node, "missing required key \"available\" (the MemAvailable to leave, e.g. 512MiB)") }
        return spec
    }

    static func readFragmentation(_ node: Node, at path: String, _ r: YAMLReader) -> FragmentationSpec? {
        guard
            let fields = r.mapping(
                node, at: path,
                allowed: [
                    "method", "target_fmfi", "order", "slack", "free", "hold", "mlock", "tolerance", "sysctl", "timeout",
                    "layer",
                ])
        else {
            return nil
        }
        var spec = FragmentationSpec(targetFMFI: 0)
        var hasTarget = false
        for f in fields {
            switch f.key {
            case "method":
                if let m = r.choice(f.value, at: f.path, from: FragmentationSpec.Method.allCases.map(\.rawValue)) {
                    spec.method = FragmentationSpec.Method(rawValue: m)!
                }
            case "target_fmfi":
                hasTarget = true
                if let t = r.double(f.value, at: f.path, range: 0...1) { spec.targetFMFI = t }
            case "order": if let o = r.int(f.value, at: f.path, range: 1...10) { spec.order = o }
            case "slack": if let s = r.bytes(f.value, at: f.path) { spec.slackBytes = s }
            case "free": if let b = r.bytes(f.value, at: f.path) { spec.freeBytes = b }
            case "hold": if let h = r.bool(f.value, at: f.path) { spec.hold = h }
            case "mlock": if let m = r.bool(f.value, at: f.path) { spec.mlock = m }
            case "tolerance": if let t = r.double(f.value, at: f.path, range: 0...1) { spec.tolerance = t }
            case "timeout": if let t = r.seconds(f.value, at: f.path) { spec.timeoutSeconds = t }
            case "layer":
                if let l = r.string(f.value, at: f.path) {
                    if l == "host" || l.wholeMatch(of: /L[0-9]+(\.[0-9]+)?/) != nil {
                        spec.layer = l
                    } else {
                        r.problem(f.path, f.value, "must be host or a layer name such as L2, got \"\(l)\"")
                    }
                }
            default:
                if let map = r.stringMap(f.value, at: f.path) {
                    for key in map.keys where key.contains("/") {
                        r.problem("\(f.path).\(key)", f.value, "sysctl names are dotted (vm.compaction_proactiveness), not paths")
                    }
                    spec.sysctl = map
                }
            }
        }
        if !hasTarget { r.problem(path, node, "missing required key \"target_fmfi\"") }
        return spec
    }

    static func readRepetitions(_ node: Node, at path: String, _ r: YAMLReader) -> RepetitionPolicy {
        var policy = RepetitionPolicy()
        guard let fields = r.mapping(node, at: path, allowed: ["min", "max", "target_ci", "boots"]) else { return policy }
        var maxNode: Node?
        var explicitMax = false
        var invalid = false
        for f in fields {
            switch f.key {
            case "min":
                if let v = r.int(f.value, at: f.path, range: 2...1000) { policy.min = v } else { invalid = true }
            case "boots": if let v = r.int(f.value, at: f.path, range: 1...1000) { policy.boots = v }
            case "max":
                maxNode = f.value
                if let v = r.int(f.value, at: f.path, range: 2...1000) {
                    policy.max = v
                    explicitMax = true
                } else {
                    invalid = true
                }
            default: if let v = r.double(f.value, at: f.path, range: 0.0001...1) { policy.targetRelativeCI = v }
            }
        }
        if !explicitMax { policy.max = Swift.max(policy.max, policy.min) }
        // An invalid min or max is reported once, by itself: no comparison with a default.
        if !invalid && policy.max < policy.min {
            r.problem("\(path).max", maxNode ?? node, "max (\(policy.max)) is smaller than min (\(policy.min))")
        }
        if let b = policy.boots, b > policy.min, let f = fields.first(where: { $0.key == "boots" }) {
            r.problem(f.path, f.value, "boots (\(b)) is larger than min (\(policy.min)): each boot holds at least one block")
        }
        return policy
    }

    static func readAnalysis(_ node: Node, at path: String, _ r: YAMLReader, conditionNames: [String]) -> AnalysisSettings {
        var settings = AnalysisSettings()
        guard
            let fields = r.mapping(
                node, at: path, allowed: ["alpha", "min_effect", "primary_metric", "baseline_condition"])
        else {
            return settings
        }
        for f in fields {
            switch f.key {
            case "alpha": if let v = r.double(f.value, at: f.path, range: 0.0001...0.5) { settings.alpha = v }
            case "min_effect": if let v = r.double(f.value, at: f.path, range: 0...10) { settings.minEffect = v }
            case "baseline_condition":
                settings.baselineCondition = r.string(f.value, at: f.path)
                if let name = settings.baselineCondition, !conditionNames.contains(name) {
                    r.problem(
                        f.path, f.value,
                        "\"\(name)\" is not a condition of this experiment (have: \(conditionNames.joined(separator: ", ")))")
                }
            default: settings.primaryMetric = r.string(f.value, at: f.path)
            }
        }
        return settings
    }

    /// `collectors: {perf: {default_events, events, scope, proxies}, monitor: {interval, order},
    /// alignment: {interval}}`.
    static func readCollectors(_ node: Node, at path: String, _ r: YAMLReader) -> CollectorSettings {
        var settings = CollectorSettings()
        guard let fields = r.mapping(node, at: path, allowed: ["perf", "monitor", "alignment"]) else { return settings }
        for f in fields {
            if f.key == "alignment" {
                guard let alignment = r.mapping(f.value, at: f.path, allowed: ["interval"]) else { continue }
                var a = AlignmentSettings()
                for m in alignment {
                    if case .scalar(let s) = m.value, s.string == "off" {
                        a.intervalMillis = nil
                    } else if let seconds = r.seconds(m.value, at: m.path) {
                        let minimum = AlignmentSettings.minimumIntervalMillis
                        if seconds * 1000 < Double(minimum) || seconds > 3600 {
                            r.problem(
                                m.path, m.value,
                                "the alignment timeline's interval must be between \(minimum)ms and 1h (or off): each probe holds the workload's memory-map lock while it reads"
                            )
                        } else {
                            a.intervalMillis = Int((seconds * 1000).rounded())
                        }
                    }
                }
                settings.alignment = a
            } else if f.key == "perf" {
                guard
                    let perf = r.mapping(f.value, at: f.path, allowed: ["default_events", "events", "scope", "proxies"])
                else { continue }
                for p in perf {
                    switch p.key {
                    case "default_events": if let v = r.bool(p.value, at: p.path) { settings.perf.defaultEvents = v }
                    case "proxies": if let v = r.bool(p.value, at: p.path) { settings.perf.proxies = v }
                    case "scope": if let v = r.choice(p.value, at: p.path, from: PerfSettings.scopes) { settings.perf.scope = v }
                    default:
                        guard let events = r.stringMap(p.value, at: p.path) else { continue }
                        for (name, event) in events {
                            if name.isEmpty || name.contains(where: { $0.isWhitespace }) {
                                r.problem("\(p.path).\(name)", p.value, "metric names have no spaces (e.g. dtlb_2m_walks)")
                            }
                            if event.trimmingCharacters(in: .whitespaces).isEmpty || event.contains(where: { $0.isWhitespace }) {
                                r.problem(
                                    "\(p.path).\(name)", p.value,
                                    "expected a libpfm event string such as DTLB_LOAD_MISSES:WALK_COMPLETED, found \"\(event)\"")
                            }
                        }
                        settings.perf.events = events
                    }
                }
            } else {
                guard let monitor = r.mapping(f.value, at: f.path, allowed: ["interval", "order"]) else { continue }
                for m in monitor {
                    if m.key == "order" {
                        if let v = r.int(m.value, at: m.path, range: 0...10) { settings.monitor.order = v }
                    } else if case .scalar(let s) = m.value, s.string == "off" {
                        settings.monitor.intervalMillis = nil
                    } else if let seconds = r.seconds(m.value, at: m.path) {
                        if seconds < 0.01 || seconds > 3600 {
                            r.problem(m.path, m.value, "the monitor interval must be between 10ms and 1h (or off)")
                        } else {
                            settings.monitor.intervalMillis = Int((seconds * 1000).rounded())
                        }
                    }
                }
            }
        }
        if !settings.perf.defaultEvents && settings.perf.events.isEmpty && !settings.perf.proxies {
            r.problem("\(path).perf", node, "default_events and proxies are off and no events are given: nothing to count")
        }
        return settings
    }
}
