/// SplitMix64: a small, well-known seeded generator (Steele, Lea & Flood, OOPSLA 2014),
/// so a recorded seed reproduces the same order on any platform.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    /// The whole state: stored with a run's plan, so a resumed run draws what it would have drawn.
    public private(set) var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    /// The generator exactly where `state` (from `state`) left it.
    public init(state: UInt64) {
        self.state = state
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

    /// Shard `shard`'s share of the initial plan: the whole repetition blocks `K`, `K+N`, … of
    /// the full initial plan (drawn from the same seed on every testbed, so the shards together
    /// are exactly the unsharded plan), numbered afresh from sequence 0 and repetition 1.
    /// Throws when a shard would get fewer than 2 blocks (it could not have its own ratio).
    public static func initialPlan(
        for experiment: Experiment, shard: Shard, generator: inout SeededGenerator
    ) throws(ShardError) -> [PlannedRun] {
        let blocks = experiment.repetitions.min
        let fewest = shard.blocks(of: blocks) < 2 ? shard : Shard(index: shard.count - 1, count: shard.count)
        if fewest.blocks(of: blocks) < 2 {
            throw ShardError(
                message:
                    "--shard \(shard): shard \(fewest) would get \(fewest.blocks(of: blocks)) of the \(blocks) repetition blocks (repetitions.min); each shard needs at least 2 so each testbed has its own ratio: set repetitions.min to at least \(2 * shard.count) or use at most \(max(1, blocks / 2)) shards"
            )
        }
        let full = initialPlan(for: experiment, generator: &generator)
        let size = cells(of: experiment).count
        var plan: [PlannedRun] = []
        var repetitions: [Cell: Int] = [:]
        for block in stride(from: shard.index, to: blocks, by: shard.count) {
            for p in full[(block * size)..<((block + 1) * size)] {
                let repetition = (repetitions[p.cell] ?? 0) + 1
                repetitions[p.cell] = repetition
                plan.append(
                    PlannedRun(
                        sequence: plan.count, configuration: p.configuration, workload: p.workload,
                        condition: p.condition, repetition: repetition))
            }
        }
        return plan
    }
}

/// A shard that cannot be run as asked.
public struct ShardError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
