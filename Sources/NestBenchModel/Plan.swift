/// SplitMix64: a small, well-known seeded generator (Steele, Lea & Flood, OOPSLA 2014),
/// so a recorded seed reproduces the same order on any platform.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Builds the execution order: randomized and interleaved (RMIT), never A-then-B.
public enum Planner {
    /// Every cell of the experiment, in declaration order.
    public static func cells(of experiment: Experiment) -> [Cell] {
        var cells: [Cell] = []
        for workload in experiment.workloads {
            for condition in experiment.conditions {
                for configuration in experiment.configurations {
                    cells.append(
                        Cell(configuration: configuration.name, workload: workload.label, condition: condition.name))
                }
            }
        }
        return cells
    }

    /// One block per repetition; each block runs every given cell once, in a fresh random order.
    /// - Parameters:
    ///   - cells: the cells to run in these blocks.
    ///   - firstRepetition: repetition number of the first block (later blocks add to it).
    ///   - blocks: how many blocks.
    ///   - startSequence: sequence number of the first planned run.
    ///   - generator: the seeded generator, advanced in place so follow-up blocks stay reproducible.
    public static func blocks(
        cells: [Cell], repetitions: [Cell: Int] = [:], blocks: Int, startSequence: Int = 0,
        generator: inout SeededGenerator
    ) -> [PlannedRun] {
        var plan: [PlannedRun] = []
        var done = repetitions
        var sequence = startSequence
        for _ in 0..<blocks {
            for cell in cells.shuffled(using: &generator) {
                let repetition = (done[cell] ?? 0) + 1
                done[cell] = repetition
                plan.append(
                    PlannedRun(
                        sequence: sequence, configuration: cell.configuration, workload: cell.workload,
                        condition: cell.condition, repetition: repetition))
                sequence += 1
            }
        }
        return plan
    }

    /// The initial plan: `repetitions.min` interleaved blocks over every cell.
    public static func initialPlan(for experiment: Experiment, generator: inout SeededGenerator) -> [PlannedRun] {
        blocks(cells: cells(of: experiment), blocks: experiment.repetitions.min, generator: &generator)
    }
}
