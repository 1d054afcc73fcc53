import NestBenchModel

/// The run metrics of a probe at one layer (`align.*`).
public enum AlignmentMetrics {
    public static let source = "pagemap"

    /// `align.regions`, `align.huge.<layer>`, `align.not_present`, `align.probe_seconds` for one process.
    /// `when` says when and how often the probe ran (kept in each metric's detail).
    public static func process(_ result: ProcessAlignment, layer: String, when: String) -> [Metric] {
        let s = result.summary
        let scope =
            "whole 2 MiB regions of pid \(result.pid)'s \(result.mappings) private anonymous/heap/anonymous-hugetlb mappings; \(when)"
        var metrics = [
            Metric(
                name: "align.regions", value: Double(s.present), unit: "regions", polarity: .neutral, source: source,
                detail: "regions with a present page (\(s.notPresent) more not present), \(scope)"),
            Metric(
                name: "align.not_present", value: Double(s.notPresent), unit: "regions", polarity: .neutral, source: source,
                detail: scope),
            Metric(
                name: "align.probe_seconds", value: result.seconds, unit: "s", polarity: .neutral, source: source,
                detail:
                    "one probe pass: maps + \(result.pagemapBytes) B of pagemap + \(result.kpageflagsBytes) B of kpageflags; \(when)"
            ),
        ]
        let name = "align.huge.\(layer)"
        if let fraction = s.hugeFraction {
            metrics.append(
                Metric(
                    name: name, value: fraction, unit: "fraction", polarity: .higherIsBetter, source: source,
                    detail:
                        "\(s.huge) of \(s.present) present regions one huge page (\(s.hugeTHP) THP, \(s.hugeHugetlb) hugetlb) at \(layer): pagemap + kpageflags; \(scope)"
                ))
        } else {
            metrics.append(
                Metric.unavailable(
                    name, unit: "fraction", polarity: .higherIsBetter, source: source,
                    reason: "unavailable: no present 2 MiB region in the probed mappings (\(scope))"))
        }
        return metrics
    }

    /// Every metric of `process` as unavailable with the reason.
    public static func unavailable(layer: String, reason: String) -> [Metric] {
        let text = reason.hasPrefix("unavailable:") ? reason : "unavailable: \(reason)"
        return [
            Metric.unavailable("align.regions", unit: "regions", polarity: .neutral, source: source, reason: text),
            Metric.unavailable("align.not_present", unit: "regions", polarity: .neutral, source: source, reason: text),
            Metric.unavailable("align.probe_seconds", unit: "s", polarity: .neutral, source: source, reason: text),
            Metric.unavailable("align.huge.\(layer)", unit: "fraction", polarity: .higherIsBetter, source: source, reason: text),
        ]
    }
}
