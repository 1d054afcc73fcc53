import Foundation

/// How a metric's runs are summarized into one value per cell.
public enum MetricCenter: String, Codable, Sendable, Hashable, CaseIterable {
    /// Arithmetic mean: times, counts, amounts.
    case amean
    /// Harmonic mean: rates (operations per second, throughput).
    case hmean
    /// Median of the per-run values: per-run percentiles and maxima (the run is the unit; percentiles
    /// are never averaged).
    case median
}

/// What a metric is for in a report.
public enum MetricRole: String, Codable, Sendable, Hashable, CaseIterable {
    /// The headline: verdicts, geometric means and adaptive repetitions are judged on it. One per workload.
    case primary
    /// Reported and judged (`compare --all-metrics`), never a headline.
    case secondary
    /// Explains the others (counters, memory state); reported, never a headline.
    case diagnostic
}

/// A figure of the xGemini paper's evaluation (§5) a metric feeds.
public enum PaperFigure: String, Codable, Sendable, Hashable, CaseIterable {
    /// Fig. 11: normalized throughput of the main workloads.
    case fig11
    /// Fig. 12: normalized TLB misses.
    case fig12
    /// Fig. 13 (a): normalized mean latency.
    case fig13Mean = "fig13-mean"
    /// Fig. 13 (b): normalized p99 latency.
    case fig13P99 = "fig13-p99"
    /// Fig. 14: normalized throughput of colocated workloads.
    case fig14
    /// Fig. 15: normalized FMFI.
    case fig15
    /// Fig. 16: normalized throughput of the overhead workloads.
    case fig16
}

/// What a workload or collector says about a metric it produces: its unit, which direction is
/// better, how runs are summarized, its role and the paper figures it feeds.
///
/// Analysis and reports use only declarations: no metric or suite name is interpreted there. `name`
/// is an exact metric name or a pattern where `*` stands for any run of characters
/// (`vmstat.*`, `monitor.*.max`).
public struct MetricDeclaration: Codable, Sendable, Hashable {
    public var name: String
    public var unit: String?
    public var polarity: Polarity
    public var center: MetricCenter
    public var role: MetricRole
    public var figures: [PaperFigure]
    /// One line saying what it is.
    public var description: String?

    public init(
        _ name: String, unit: String? = nil, polarity: Polarity, center: MetricCenter = .amean,
        role: MetricRole = .secondary, figures: [PaperFigure] = [], description: String? = nil
    ) {
        self.name = name
        self.unit = unit
        self.polarity = polarity
        self.center = center
        self.role = role
        self.figures = figures
        self.description = description
    }

    enum CodingKeys: String, CodingKey {
        case name, unit, polarity, center, role, figures, description
    }

    /// Suite files may leave out `center` (amean), `role` (secondary) and `figures` (none).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        unit = try c.decodeIfPresent(String.self, forKey: .unit)
        polarity = try c.decode(Polarity.self, forKey: .polarity)
        center = try c.decodeIfPresent(MetricCenter.self, forKey: .center) ?? .amean
        role = try c.decodeIfPresent(MetricRole.self, forKey: .role) ?? .secondary
        figures = try c.decodeIfPresent([PaperFigure].self, forKey: .figures) ?? []
        description = try c.decodeIfPresent(String.self, forKey: .description)
    }

    /// Whether this declaration covers `metric`.
    public func matches(_ metric: String) -> Bool {
        name.contains("*") ? Self.glob(Substring(name), Substring(metric)) : name == metric
    }

    /// Whether `name` is a pattern rather than one metric.
    public var isPattern: Bool { name.contains("*") }

    /// `*` matches any run of characters (also none); every other character matches itself.
    static func glob(_ pattern: Substring, _ text: Substring) -> Bool {
        guard let star = pattern.firstIndex(of: "*") else { return pattern == text }
        let prefix = pattern[..<star]
        guard text.hasPrefix(prefix) else { return false }
        let restPattern = pattern[pattern.index(after: star)...]
        var rest = text.dropFirst(prefix.count)
        while true {
            if glob(restPattern, rest) { return true }
            if rest.isEmpty { return false }
            rest = rest.dropFirst()
        }
    }

    /// The same declaration for a colocated member's metrics (`<member>.<name>`).
    public func prefixed(_ prefix: String) -> MetricDeclaration {
        var d = self
        d.name = prefix + name
        return d
    }

    /// The declaration of a metric nobody declared: its own unit and polarity, the arithmetic
    /// mean, diagnostic, in no figure. Analysis never guesses more from the name.
    public static func undeclared(_ metric: String, unit: String, polarity: Polarity) -> MetricDeclaration {
        MetricDeclaration(metric, unit: unit, polarity: polarity, center: .amean, role: .diagnostic)
    }
}

extension Array where Element == MetricDeclaration {
    /// The declaration covering `metric`: an exact name first, then the first matching pattern.
    public func declaration(for metric: String) -> MetricDeclaration? {
        first { !$0.isPattern && $0.name == metric } ?? first { $0.isPattern && $0.matches(metric) }
    }

    /// The declared primary metric (the first exact-named one with role primary).
    public var primary: MetricDeclaration? { first { $0.role == .primary && !$0.isPattern } }
}

extension Experiment {
    /// Every declaration that applies to a workload's metrics: the workload's own (a colocated
    /// group's members', prefixed with the member's label), then the collectors' (also per member).
    public func metricDeclarations(of workload: WorkloadSpec) -> [MetricDeclaration] {
        let collectors = collectorMetrics ?? []
        if let members = workload.colocated {
            return members.flatMap { m in (m.metrics ?? []).map { $0.prefixed(m.label + ".") } }
                + members.flatMap { m in collectors.map { $0.prefixed(m.label + ".") } } + collectors
        }
        return (workload.metrics ?? []) + collectors
    }

    /// The declaration of one metric of one workload (by label), or nil when nobody declared it.
    public func declaration(of metric: String, workload label: String) -> MetricDeclaration? {
        guard let w = workload(labeled: label) else { return (collectorMetrics ?? []).declaration(for: metric) }
        return metricDeclarations(of: w).declaration(for: metric)
    }

    /// The metric headlines, geometric means and adaptive repetitions use for a workload: the
    /// experiment's `analysis.primary_metric` when set, else the workload's declared primary; for a
    /// colocated group, its first member's, under that member's label. nil when none is declared.
    public func primaryMetric(of workload: WorkloadSpec) -> String? {
        if let first = workload.colocated?.first { return primaryMetric(of: first).map { "\(first.label).\($0)" } }
        if let m = analysis.primaryMetric { return m }
        return workload.metrics?.primary?.name
    }

    /// Whether every workload and the collectors carry declarations (experiments stored before
    /// declarations existed do not: readers fill them in with `WorkloadRegistry.declaring`).
    public var hasMetricDeclarations: Bool {
        collectorMetrics != nil
            && workloads.allSatisfy { w in w.colocated.map { $0.allSatisfy { $0.metrics != nil } } ?? (w.metrics != nil) }
    }
}
