import NestBenchModel

/// What the collectors' metrics are: resource usage, vmstat deltas, perf counters and their
/// proxies, the memory monitor, the fragmenter's FMFI readings, compaction and per-layer state of
/// VM stacks. Stored with every experiment (`Experiment.collectorMetrics`), so the analysis never
/// interprets a metric's name. Exact names first; patterns (`*`) cover families.
public enum CollectorMetricDeclarations {
    public static let standard: [MetricDeclaration] =
        usage + perf + vmstat + monitor + fragmentation + pressure + layers + alignment

    /// Memory pressure (`nb-hold` of a `memory_pressure:` condition).
    public static let pressure: [MetricDeclaration] = [
        MetricDeclaration("pressure.seconds", unit: "s", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("pressure.*", unit: "bytes", polarity: .neutral, role: .diagnostic),
    ]

    /// `UsageCollector` (wait4 rusage, monotonic wall clock).
    public static let usage: [MetricDeclaration] = [
        MetricDeclaration(
            "wall_seconds", unit: "s", polarity: .lowerIsBetter, center: .amean, role: .secondary,
            description: "wall time of the measured process, exec to exit"),
        MetricDeclaration("user_seconds", unit: "s", polarity: .lowerIsBetter, role: .diagnostic),
        MetricDeclaration("system_seconds", unit: "s", polarity: .lowerIsBetter, role: .diagnostic),
        MetricDeclaration("minor_faults", unit: "faults", polarity: .lowerIsBetter, role: .diagnostic),
        MetricDeclaration("max_rss_bytes", unit: "bytes", polarity: .neutral, role: .diagnostic),
    ]

    /// `PerfCollector` / `GuestCounters`: the TLB event set, `tlb_misses` (sum of completed walks)
    /// and the software-event proxies (`perf.*`: never TLB misses).
    public static let perf: [MetricDeclaration] = [
        MetricDeclaration(
            "tlb_misses", unit: "events", polarity: .lowerIsBetter, role: .secondary, figures: [.fig12],
            description: "completed page walks (loads + stores + instruction fetches)"),
        MetricDeclaration("tlb.*", unit: "events", polarity: .lowerIsBetter, role: .diagnostic),
        MetricDeclaration("cycles", unit: "events", polarity: .lowerIsBetter, role: .diagnostic),
        MetricDeclaration("instructions", unit: "events", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("perf.*", polarity: .lowerIsBetter, role: .diagnostic),
    ]

    /// `VmstatCollector`: machine-wide THP and compaction counter deltas.
    public static let vmstat: [MetricDeclaration] = [
        MetricDeclaration("vmstat.*", unit: "events", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("thp_fault_alloc", unit: "events", polarity: .neutral, role: .diagnostic),
    ]

    /// `MemoryMonitor` / `SmapsSampler`: per-run maxima are summarized by the median of runs.
    public static let monitor: [MetricDeclaration] = [
        MetricDeclaration("anon_huge_bytes_max", unit: "bytes", polarity: .neutral, center: .median, role: .diagnostic),
        MetricDeclaration(
            "monitor.fmfi*.before", unit: "ratio", polarity: .neutral, role: .diagnostic, figures: [.fig15],
            description: "FMFI before the workload started (the monitor's reading)"),
        MetricDeclaration("monitor.*", polarity: .neutral, role: .diagnostic),
    ]

    /// The fragmenter (`NestBenchFragmentation`) and the compaction step of conditions.
    public static let fragmentation: [MetricDeclaration] = [
        MetricDeclaration(
            "fmfi_before", unit: "index", polarity: .neutral, role: .diagnostic, figures: [.fig15],
            description: "FMFI as the workload started"),
        MetricDeclaration("fmfi_*", unit: "index", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("fragment_seconds", unit: "s", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("fragmenter_*", polarity: .neutral, role: .diagnostic),
    ]

    /// Per-layer state of VM stacks (`L1.fmfi`, `L1.qemu_anon_huge_bytes` …).
    public static let layers: [MetricDeclaration] = [
        MetricDeclaration("*.qemu_anon_huge_bytes", unit: "bytes", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("*.anon_huge_bytes", unit: "bytes", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("*.hugetlb_used_pages", unit: "pages", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("*.fmfi", unit: "ratio", polarity: .neutral, role: .diagnostic),
        // `LayerCounters`: each guest layer's vmstat deltas and KSM state over the run.
        MetricDeclaration("*.vmstat.*", unit: "events", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("*.ksm.full_scans", unit: "scans", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("*.ksm.run", unit: "state", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("*.ksm.*", unit: "pages", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("*.qemu_major_faults", unit: "faults", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("*.swap.io_ms", unit: "ms", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("*.swap.*", unit: "I/Os", polarity: .neutral, role: .diagnostic),
    ]

    /// `AlignmentCollector` (NestBenchAlignment): fractions of the workload's 2 MiB regions.
    public static let alignment: [MetricDeclaration] = [
        MetricDeclaration(
            "align.well_aligned", unit: "fraction", polarity: .higherIsBetter, role: .secondary,
            description: "present 2 MiB regions mapped by one huge page at every layer"),
        MetricDeclaration(
            "align.huge.*", unit: "fraction", polarity: .higherIsBetter, role: .secondary,
            description: "present 2 MiB regions of the workload mapped by one huge page at that layer"),
        MetricDeclaration("align.backed.*", unit: "fraction", polarity: .higherIsBetter, role: .diagnostic),
        MetricDeclaration("align.misaligned.*", unit: "fraction", polarity: .lowerIsBetter, role: .diagnostic),
        MetricDeclaration(
            "align.pgtable_backed.*", unit: "fraction", polarity: .higherIsBetter, role: .diagnostic,
            description: "the whole guest's page-table pages in 2 MiB ranges backed by one huge page at that layer"),
        MetricDeclaration(
            "align.kvm.*", unit: "pages", polarity: .neutral, role: .diagnostic,
            description: "KVM's whole-VM count of pages it maps at that size (debugfs), not the workload's"),
        MetricDeclaration("align.regions", unit: "regions", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("align.not_present", unit: "regions", polarity: .neutral, role: .diagnostic),
        MetricDeclaration("align.probe_seconds", unit: "s", polarity: .neutral, role: .diagnostic),
        MetricDeclaration(
            "align.timeline_probes", unit: "probes", polarity: .neutral, role: .diagnostic,
            description: "probe passes of the opt-in alignment timeline (collectors.alignment.interval) while the workload ran"),
        MetricDeclaration(
            "align.timeline_probe_seconds", unit: "s", polarity: .neutral, role: .diagnostic,
            description: "total wall time of the alignment timeline's probe passes (its perturbation of the workload)"),
    ]
}
