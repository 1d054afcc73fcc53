import Foundation
import GRDB
import NestBenchModel

/// Errors of the result store; each names the database file.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String

    public var description: String { "\(path): \(message)" }
}

/// A summary row of one stored experiment run.
public struct ExperimentRunSummary: Sendable, Hashable, Codable {
    public var id: String
    public var experiment: String
    public var startedAt: Date
    public var finishedAt: Date?
    public var status: String
    public var runs: Int
    public var tags: [String: String]
    public var campaign: String? = nil
    public var shard: String? = nil
    /// The experiment file it was run from.
    public var filePath: String? = nil
}

/// The SQLite store (GRDB). Every measured run is committed in its own transaction as soon as
/// it ends, so a killed nestbench loses nothing already measured.
public final class Store: Sendable {
    public let path: String
    private let db: DatabaseQueue

    /// `Results/nestbench.sqlite` under a results directory.
    public static func path(inResults directory: String) -> String { directory + "/nestbench.sqlite" }

    public init(path: String) throws(StoreError) {
        self.path = path
        do {
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            var config = Configuration()
            config.busyMode = .timeout(10)
            db = try DatabaseQueue(path: path, configuration: config)
            try Self.migrator.migrate(db)
        } catch {
            throw StoreError(path: path, message: "cannot open the result store: \(error)")
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "experiment_run") { t in
                t.primaryKey("id", .text)
                t.column("experiment", .text).notNull()
                t.column("file_path", .text).notNull()
                t.column("content_hash", .text).notNull()
                t.column("content", .text).notNull()
                t.column("seed", .text).notNull()
                t.column("experiment_json", .blob).notNull()
                t.column("plan_json", .blob).notNull()
                t.column("machine_json", .blob).notNull()
                t.column("tags_json", .blob).notNull()
                t.column("started_at", .datetime).notNull()
                t.column("finished_at", .datetime)
                t.column("status", .text).notNull()
            }
            try db.create(table: "run") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("experiment_run", onDelete: .cascade).notNull()
                t.column("sequence", .integer).notNull()
                t.column("configuration", .text).notNull()
                t.column("workload", .text).notNull()
                t.column("condition", .text).notNull()
                t.column("repetition", .integer).notNull()
                t.column("status", .text).notNull()
                t.column("reason", .text)
                t.column("started_at", .datetime).notNull()
                t.column("ended_at", .datetime).notNull()
                t.column("exit_status", .integer)
                t.column("signal", .integer)
                t.column("invocations_json", .blob).notNull()
                t.column("provenance_json", .blob).notNull()
                t.column("output_tail", .text)
                t.uniqueKey(["experiment_runId", "sequence"])
            }
            try db.create(table: "metric") { t in
                t.belongsTo("run", onDelete: .cascade).notNull()
                t.column("name", .text).notNull()
                t.column("value", .double)
                t.column("unit", .text).notNull()
                t.column("polarity", .text).notNull()
                t.column("source", .text).notNull()
                t.column("unavailable", .text)
                t.column("proxy_for", .text)
                t.column("detail", .text)
            }
            try db.create(index: "metric_by_name", on: "metric", columns: ["name"])
            try db.create(table: "sample") { t in
                t.belongsTo("run", onDelete: .cascade).notNull()
                t.column("t_ms", .integer).notNull()
                t.column("name", .text).notNull()
                t.column("value", .double).notNull()
            }
        }
        // v2: where an imported experiment run came from, and history lookups by experiment.
        m.registerMigration("v2") { db in
            try db.alter(table: "experiment_run") { t in
                t.add(column: "origin", .text)
            }
            try db.create(index: "experiment_run_by_name", on: "experiment_run", columns: ["experiment", "started_at"])
        }
        // v3: which process owns a running experiment run ("host pid start-time"), so that any
        // later invocation can tell a run whose owner was killed from one still in progress.
        m.registerMigration("v3") { db in
            try db.alter(table: "experiment_run") { t in
                t.add(column: "owner", .text)
            }
        }
        // v4: long evaluations. The campaign and shard of an experiment run; whether adaptive
        // repetitions were off; the plan generator's state after the stored plan (a resumed run
        // draws its adaptive blocks exactly as the uninterrupted one would); the sequence of the
        // run in flight (so a resume after kill -9 marks it `interrupted`, never dangling).
        m.registerMigration("v4") { db in
            try db.alter(table: "experiment_run") { t in
                t.add(column: "campaign", .text)
                t.add(column: "shard", .text)
                t.add(column: "fixed_repetitions", .boolean)
                t.add(column: "generator_state", .text)
                t.add(column: "in_flight", .integer)
            }
            try db.create(index: "experiment_run_by_campaign", on: "experiment_run", columns: ["campaign"])
        }
        return m
    }

    /// "host pid start" of this process, as stored in `experiment_run.owner`.
    public static var selfOwner: String { Owner.current }

    /// Experiment runs still `running` whose owner process is gone (kill -9, a crash, power
    /// loss) become `killed`. Returns their ids. Runs owned by another host are left alone.
    @discardableResult
    public func markKilled() throws(StoreError) -> [String] {
        try wrap("looking for killed experiment runs") {
            try db.write { db in
                let rows = try Row.fetchAll(db, sql: "SELECT id, owner FROM experiment_run WHERE status = 'running'")
                var killed: [String] = []
                for row in rows {
                    let id: String = row["id"]
                    let owner: String? = row["owner"]
                    // Runs from before v3 have no owner: nothing tells whether they live.
                    guard let owner, Owner.isDead(owner) else { continue }
                    try db.execute(
                        sql: "UPDATE experiment_run SET status = ?, finished_at = ? WHERE id = ?",
                        arguments: [ExperimentRunRecord.Status.killed.rawValue, Date(), id])
                    killed.append(id)
                }
                return killed
            }
        }
    }

    /// Experiment runs still `running` in a store whose writer lock this process holds: their
    /// owner cannot be writing (it would hold the lock), wherever it ran — a node that crashed
    /// and a job requeued on another node included. They become `killed`; returns their ids.
    @discardableResult
    public func markKilledUnderLock() throws(StoreError) -> [String] {
        try wrap("looking for killed experiment runs") {
            try db.write { db in
                let ids = try String.fetchAll(db, sql: "SELECT id FROM experiment_run WHERE status = 'running'")
                for id in ids {
                    try db.execute(
                        sql: "UPDATE experiment_run SET status = ?, finished_at = ? WHERE id = ?",
                        arguments: [ExperimentRunRecord.Status.killed.rawValue, Date(), id])
                }
                return ids
            }
        }
    }

    /// Tests: an owner that is not this process.
    func setOwnerForTesting(_ id: String, owner: String) throws(StoreError) {
        try wrap("setting the owner of \(id)") {
            try db.write { db in
                try db.execute(sql: "UPDATE experiment_run SET owner = ? WHERE id = ?", arguments: [owner, id])
            }
        }
    }

    /// Marks an experiment run `killed` (its owner was found dead through the knob journal).
    public func markKilled(_ id: String) throws(StoreError) {
        try wrap("marking \(id) killed") {
            try db.write { db in
                try db.execute(
                    sql: "UPDATE experiment_run SET status = ?, finished_at = ? WHERE id = ? AND status = 'running'",
                    arguments: [ExperimentRunRecord.Status.killed.rawValue, Date(), id])
            }
        }
    }

    /// Changes a stored run's status (a run whose workload a signal stopped is `interrupted`).
    public func updateRunStatus(_ id: String, sequence: Int, status: RunStatus, reason: String?) throws(StoreError) {
        try wrap("updating run \(sequence) of \(id)") {
            try db.write { db in
                try db.execute(
                    sql: "UPDATE run SET status = ?, reason = ? WHERE experiment_runId = ? AND sequence = ?",
                    arguments: [status.rawValue, reason, id, sequence])
            }
        }
    }

    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    private func json<T: Encodable>(_ value: T) throws -> Data { try Self.encoder.encode(value) }

    private func wrap<T>(_ what: String, _ body: () throws -> T) throws(StoreError) -> T {
        do {
            return try body()
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(path: path, message: "\(what) failed: \(error)")
        }
    }

    /// Records the start of an experiment run (with the plan generator's state after its plan).
    public func begin(_ record: ExperimentRunRecord, generatorState: UInt64? = nil) throws(StoreError) {
        try wrap("recording the experiment run") {
            try db.write { db in
                try Self.insert(
                    record, owner: record.status == .running ? Owner.current : nil, origin: nil, generatorState: generatorState,
                    db: db)
            }
        }
    }

    /// Inserts one experiment run's row: `begin` (its owner while running, the plan generator's
    /// state) and `importRun` (where it was measured) write every column through here.
    static func insert(
        _ record: ExperimentRunRecord, owner: String?, origin: String?, generatorState: UInt64?, db: Database
    ) throws {
        try db.execute(
            sql: """
                INSERT INTO experiment_run (id, experiment, file_path, content_hash, content, seed,
                  experiment_json, plan_json, machine_json, tags_json, started_at, finished_at, status, owner, origin,
                  campaign, shard, fixed_repetitions, generator_state)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                record.id, record.experiment.name, record.filePath, record.contentHash, record.content,
                String(record.seed), try Self.encoder.encode(record.experiment), try Self.encoder.encode(record.plan),
                try Self.encoder.encode(record.machine), try Self.encoder.encode(record.tags), record.startedAt,
                record.finishedAt, record.status.rawValue, owner, origin, record.campaign, record.shard?.description,
                record.fixedRepetitions, generatorState.map { String($0) },
            ])
    }

    /// Replaces the stored plan (adaptive repetitions append to it), with the generator's state after it.
    public func updatePlan(_ id: String, plan: [PlannedRun], generatorState: UInt64? = nil) throws(StoreError) {
        try wrap("updating the plan") {
            try db.write { db in
                if let generatorState {
                    try db.execute(
                        sql: "UPDATE experiment_run SET plan_json = ?, generator_state = ? WHERE id = ?",
                        arguments: [try json(plan), String(generatorState), id])
                } else {
                    try db.execute(sql: "UPDATE experiment_run SET plan_json = ? WHERE id = ?", arguments: [try json(plan), id])
                }
            }
        }
    }

    /// What a resume needs besides the record: the generator's state after the stored plan and
    /// the sequence of the run that was in flight when the experiment run stopped.
    public struct ResumePoint: Sendable, Equatable {
        public var generatorState: UInt64?
        public var inFlight: Int?
    }

    public func resumePoint(_ id: String) throws(StoreError) -> ResumePoint {
        try wrap("reading experiment run \(id)") {
            try db.read { db in
                let row = try Row.fetchOne(
                    db, sql: "SELECT generator_state, in_flight FROM experiment_run WHERE id = ?", arguments: [id])
                return ResumePoint(
                    generatorState: (row?["generator_state"] as String?).flatMap { UInt64($0) }, inFlight: row?["in_flight"])
            }
        }
    }

    /// Records the run now executing (nil: none), before it starts.
    public func setInFlight(_ id: String, sequence: Int?) throws(StoreError) {
        try wrap("recording the run in flight") {
            try db.write { db in
                try db.execute(sql: "UPDATE experiment_run SET in_flight = ? WHERE id = ?", arguments: [sequence, id])
            }
        }
    }

    /// An interrupted (killed, failed) experiment run continues: `running` again, owned by this process.
    public func reopen(_ id: String) throws(StoreError) {
        try wrap("reopening \(id)") {
            try db.write { db in
                try db.execute(
                    sql: "UPDATE experiment_run SET status = 'running', finished_at = NULL, owner = ? WHERE id = ?",
                    arguments: [Owner.current, id])
            }
        }
    }

    /// The ids of the experiment runs of a campaign, oldest first.
    public func campaign(_ campaign: String) throws(StoreError) -> [String] {
        try wrap("reading campaign \(campaign)") {
            try db.read { db in
                try String.fetchAll(
                    db, sql: "SELECT id FROM experiment_run WHERE campaign = ? ORDER BY started_at, rowid", arguments: [campaign])
            }
        }
    }

    public func finish(_ id: String, status: ExperimentRunRecord.Status, at date: Date = Date()) throws(StoreError) {
        try wrap("finishing the experiment run") {
            try db.write { db in
                try db.execute(
                    sql: "UPDATE experiment_run SET status = ?, finished_at = ? WHERE id = ?",
                    arguments: [status.rawValue, date, id])
            }
        }
    }

    /// Stores one measured run with its metrics and timeline in one transaction.
    @discardableResult
    public func record(_ run: RunRecord, samples: [(tMillis: Int64, name: String, value: Double)] = []) throws(StoreError)
        -> Int64
    {
        try wrap("storing run \(run.planned.sequence)") {
            try db.write { db in
                try Self.insert(run, samples: samples, db: db)
            }
        }
    }

    /// Updates a stored run's status, reason and provenance (what is learned after it ended: the
    /// kernel log, the environment's state). Metrics and samples stay as measured.
    public func amend(_ run: RunRecord) throws(StoreError) {
        try wrap("amending run \(run.planned.sequence)") {
            try db.write { db in
                try db.execute(
                    sql: """
                        UPDATE run SET status = ?, reason = ?, provenance_json = ?
                        WHERE experiment_runId = ? AND sequence = ?
                        """,
                    arguments: [
                        run.status.rawValue, run.reason, try Self.encoder.encode(run.provenance), run.experimentRunID,
                        run.planned.sequence,
                    ])
            }
        }
    }

    /// Inserts one run with its metrics and samples; returns the run's row id.
    static func insert(
        _ run: RunRecord, samples: [(tMillis: Int64, name: String, value: Double)], db: Database
    ) throws -> Int64 {
        try db.execute(
            sql: """
                INSERT INTO run (experiment_runId, sequence, configuration, workload, condition, repetition,
                  status, reason, started_at, ended_at, exit_status, signal, invocations_json,
                  provenance_json, output_tail)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                run.experimentRunID, run.planned.sequence, run.planned.configuration, run.planned.workload,
                run.planned.condition, run.planned.repetition, run.status.rawValue, run.reason,
                run.startedAt, run.endedAt, run.exitStatus, run.signal, try Self.encoder.encode(run.invocations),
                try Self.encoder.encode(run.provenance), run.outputTail,
            ])
        let id = db.lastInsertedRowID
        for m in run.metrics {
            try db.execute(
                sql: """
                    INSERT INTO metric (runId, name, value, unit, polarity, source, unavailable, proxy_for, detail)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    id, m.name, m.value, m.unit, m.polarity.rawValue, m.source, m.unavailable, m.proxyFor,
                    m.detail,
                ])
        }
        for s in samples {
            try db.execute(
                sql: "INSERT INTO sample (runId, t_ms, name, value) VALUES (?, ?, ?, ?)",
                arguments: [id, s.tMillis, s.name, s.value])
        }
        return id
    }

    /// The id of the most recently started experiment run.
    public func latestID() throws(StoreError) -> String? {
        try wrap("reading the latest run") {
            try db.read { db in
                try String.fetchOne(db, sql: "SELECT id FROM experiment_run ORDER BY started_at DESC, rowid DESC LIMIT 1")
            }
        }
    }

    /// Resolves `latest`, a full id, or a unique prefix of one.
    public func resolve(_ reference: String) throws(StoreError) -> String? {
        if reference == "latest" { return try latestID() }
        return try wrap("looking up run \(reference)") {
            try db.read { db in
                let ids = try String.fetchAll(
                    db, sql: "SELECT id FROM experiment_run WHERE id = ? OR id LIKE ? ORDER BY started_at",
                    arguments: [reference, reference + "%"])
                if ids.contains(reference) { return reference }
                if ids.count > 1 {
                    throw StoreError(
                        path: path,
                        message:
                            "run \"\(reference)\" is ambiguous: \(ids.count) runs start with it: \(ids.prefix(10).joined(separator: ", "))\(ids.count > 10 ? ", …" : ""); give more of the id"
                    )
                }
                return ids.first
            }
        }
    }

    public func experimentRun(_ id: String) throws(StoreError) -> ExperimentRunRecord? {
        try wrap("reading experiment run \(id)") {
            try db.read { db in
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM experiment_run WHERE id = ?", arguments: [id])
                else { return nil }
                let decoder = JSONDecoder()
                return ExperimentRunRecord(
                    id: row["id"],
                    experiment: try decoder.decode(Experiment.self, from: row["experiment_json"] as Data),
                    filePath: row["file_path"], contentHash: row["content_hash"], content: row["content"],
                    seed: UInt64(row["seed"] as String) ?? 0,
                    plan: try decoder.decode([PlannedRun].self, from: row["plan_json"] as Data),
                    startedAt: row["started_at"], finishedAt: row["finished_at"],
                    status: ExperimentRunRecord.Status(rawValue: row["status"]) ?? .failed,
                    machine: try decoder.decode(MachineDescription.self, from: row["machine_json"] as Data),
                    tags: try decoder.decode([String: String].self, from: row["tags_json"] as Data),
                    campaign: row["campaign"], shard: (row["shard"] as String?).flatMap { Shard(parsing: $0) },
                    fixedRepetitions: row["fixed_repetitions"])
            }
        }
    }

    /// Every stored run of an experiment run, in execution order, with metrics.
    public func runs(of id: String) throws(StoreError) -> [RunRecord] {
        try wrap("reading the runs of \(id)") {
            try db.read { db in
                let decoder = JSONDecoder()
                var metricsByRun: [Int64: [Metric]] = [:]
                let metricRows = try Row.fetchCursor(
                    db,
                    sql: """
                        SELECT metric.* FROM metric JOIN run ON run.id = metric.runId
                        WHERE run.experiment_runId = ? ORDER BY metric.rowid
                        """, arguments: [id])
                while let m = try metricRows.next() {
                    metricsByRun[m["runId"], default: []].append(
                        Metric(
                            name: m["name"], value: m["value"], unit: m["unit"],
                            polarity: Polarity(rawValue: m["polarity"]) ?? .neutral, source: m["source"],
                            unavailable: m["unavailable"], proxyFor: m["proxy_for"], detail: m["detail"]))
                }
                let rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM run WHERE experiment_runId = ? ORDER BY sequence", arguments: [id])
                return try rows.map { row in
                    RunRecord(
                        experimentRunID: id,
                        planned: PlannedRun(
                            sequence: row["sequence"], configuration: row["configuration"], workload: row["workload"],
                            condition: row["condition"], repetition: row["repetition"]),
                        status: RunStatus(rawValue: row["status"]) ?? .failed, reason: row["reason"],
                        startedAt: row["started_at"], endedAt: row["ended_at"],
                        invocations: try decoder.decode([Invocation].self, from: row["invocations_json"] as Data),
                        exitStatus: row["exit_status"], signal: row["signal"],
                        metrics: metricsByRun[row["id"]] ?? [],
                        provenance: try decoder.decode([String: String].self, from: row["provenance_json"] as Data),
                        outputTail: row["output_tail"])
                }
            }
        }
    }

    /// All experiment runs, newest first.
    public func list() throws(StoreError) -> [ExperimentRunSummary] {
        try wrap("listing experiment runs") {
            try db.read { db in
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT e.id, e.experiment, e.started_at, e.finished_at, e.status, e.tags_json, e.campaign, e.shard, e.file_path,
                          (SELECT COUNT(*) FROM run r WHERE r.experiment_runId = e.id) AS n
                        FROM experiment_run e ORDER BY e.started_at DESC, e.rowid DESC
                        """)
                return try rows.map { row in
                    ExperimentRunSummary(
                        id: row["id"], experiment: row["experiment"], startedAt: row["started_at"],
                        finishedAt: row["finished_at"], status: row["status"], runs: row["n"],
                        tags: try JSONDecoder().decode([String: String].self, from: row["tags_json"] as Data),
                        campaign: row["campaign"], shard: row["shard"], filePath: row["file_path"])
                }
            }
        }
    }

    /// Experiment runs of `experiment` that are not `completed` (interrupted, killed, failed,
    /// running, nothing ran): what history, compare and nightly leave out by default.
    public func incomplete(experiment: String) throws(StoreError) -> [(id: String, status: String)] {
        try wrap("reading the history of \(experiment)") {
            try db.read { db in
                try Row.fetchAll(
                    db,
                    sql:
                        "SELECT id, status FROM experiment_run WHERE experiment = ? AND status != 'completed' ORDER BY started_at",
                    arguments: [experiment]
                ).map { (id: $0["id"], status: $0["status"]) }
            }
        }
    }

    /// Every successful run's metric values of every stored run of an experiment (by name), with
    /// the experiment run's time and tags, oldest first; only `completed` experiment runs unless
    /// `includeIncomplete` (then also interrupted, killed, … ones, and the runs they finished).
    public func history(experiment: String, includeIncomplete: Bool = false) throws(StoreError) -> [HistoryRow] {
        try wrap("reading the history of \(experiment)") {
            try db.read { db in
                var tags: [String: [String: String]] = [:]
                let decoder = JSONDecoder()
                for row in try Row.fetchAll(
                    db, sql: "SELECT id, tags_json FROM experiment_run WHERE experiment = ?", arguments: [experiment])
                {
                    tags[row["id"]] = try decoder.decode([String: String].self, from: row["tags_json"] as Data)
                }
                var result: [HistoryRow] = []
                let cursor = try Row.fetchCursor(
                    db,
                    sql: """
                        SELECT e.id, e.started_at, r.configuration, r.workload, r.condition,
                          m.name, m.unit, m.polarity, m.value
                        FROM experiment_run e JOIN run r ON r.experiment_runId = e.id JOIN metric m ON m.runId = r.id
                        WHERE e.experiment = ? AND r.status = 'ok' AND m.value IS NOT NULL
                          AND (? OR e.status = 'completed')
                        ORDER BY e.started_at, e.id, r.sequence
                        """, arguments: [experiment, includeIncomplete])
                // Each configuration's runs see their scoped tags (`L1.kernel@vanilla`) by plain name.
                var resolved: [String: [String: String]] = [:]
                while let row = try cursor.next() {
                    let id: String = row[0]
                    let configuration: String = row[2]
                    let key = id + "\u{0}" + configuration
                    if resolved[key] == nil { resolved[key] = RunTags.resolve(tags[id] ?? [:], configuration: configuration) }
                    result.append(
                        HistoryRow(
                            experimentRunID: id, startedAt: row[1], tags: resolved[key]!,
                            cell: Cell(configuration: row[2], workload: row[3], condition: row[4]), metric: row[5],
                            unit: row[6], polarity: Polarity(rawValue: row[7]) ?? .neutral, value: row[8]))
                }
                return result
            }
        }
    }

    /// Adds tags to a stored experiment run (automatic tags learnt while it runs: a stack's kernels).
    public func addTags(_ id: String, _ added: [String: String]) throws(StoreError) {
        guard !added.isEmpty else { return }
        try wrap("tagging \(id)") {
            try db.write { db in
                guard let data = try Data.fetchOne(db, sql: "SELECT tags_json FROM experiment_run WHERE id = ?", arguments: [id])
                else { return }
                var tags = try JSONDecoder().decode([String: String].self, from: data)
                tags.merge(added) { $1 }
                try db.execute(sql: "UPDATE experiment_run SET tags_json = ? WHERE id = ?", arguments: [try json(tags), id])
            }
        }
    }

    /// Replaces the tags of a stored experiment run.
    public func setTags(_ id: String, _ tags: [String: String]) throws(StoreError) {
        try wrap("tagging \(id)") {
            try db.write { db in
                try db.execute(sql: "UPDATE experiment_run SET tags_json = ? WHERE id = ?", arguments: [try json(tags), id])
            }
        }
    }

    /// The raw metric rows of an experiment's history, undecoded: the reference cost of reading.
    public func countHistoryRows(experiment: String) throws(StoreError) -> Int {
        try wrap("reading the history of \(experiment)") {
            try db.read { db in
                var n = 0
                var sum = 0.0
                let cursor = try Row.fetchCursor(
                    db,
                    sql: """
                        SELECT m.value FROM experiment_run e JOIN run r ON r.experiment_runId = e.id
                        JOIN metric m ON m.runId = r.id WHERE e.experiment = ? AND r.status = 'ok'
                        """, arguments: [experiment])
                while let row = try cursor.next() {
                    n += 1
                    sum += (row[0] as Double?) ?? 0
                }
                return sum.isNaN ? -n : n
            }
        }
    }

    /// Where an experiment run came from: nil when measured here, else the import's description.
    public func origin(of id: String) throws(StoreError) -> String? {
        try wrap("reading experiment run \(id)") {
            try db.read { db in try String.fetchOne(db, sql: "SELECT origin FROM experiment_run WHERE id = ?", arguments: [id]) }
        }
    }

    /// One experiment run with all its runs and timelines, for `nestbench export`.
    public func export(_ id: String) throws(StoreError) -> RunExport? {
        guard let record = try experimentRun(id) else { return nil }
        let runs = try runs(of: id)
        let samples = try samples(of: id)
        return RunExport(
            format: RunExport.formatName, version: RunExport.currentVersion, exportedAt: Date(), origin: try origin(of: id),
            experimentRun: record,
            runs: runs.map { RunExport.ExportedRun(record: $0, samples: samples[$0.planned.sequence] ?? []) })
    }

    /// The timelines of an experiment run's runs, by run sequence, in the order they were stored.
    public func samples(of id: String) throws(StoreError) -> [Int: [RunExport.Sample]] {
        try wrap("reading the samples of \(id)") {
            try db.read { db in
                var out: [Int: [RunExport.Sample]] = [:]
                let cursor = try Row.fetchCursor(
                    db,
                    sql: """
                        SELECT r.sequence, s.t_ms, s.name, s.value FROM sample s JOIN run r ON r.id = s.runId
                        WHERE r.experiment_runId = ? ORDER BY s.rowid
                        """, arguments: [id])
                while let row = try cursor.next() {
                    out[row[0], default: []].append(RunExport.Sample(tMillis: row[1], name: row[2], value: row[3]))
                }
                return out
            }
        }
    }

    /// Result of an import.
    public enum ImportOutcome: Sendable, Equatable {
        case imported(runs: Int)
        /// The same experiment run (same id, file hash and runs) is already stored.
        case alreadyPresent
    }

    /// Stores an exported experiment run in one transaction. An id that exists with different
    /// content is an error (two testbeds never share run ids; a re-import of the same file is a no-op).
    public func importRun(_ bundle: RunExport, source: String) throws(StoreError) -> ImportOutcome {
        guard bundle.format == RunExport.formatName else {
            throw StoreError(path: source, message: "format: expected \"\(RunExport.formatName)\", found \"\(bundle.format)\"")
        }
        guard bundle.version <= RunExport.currentVersion else {
            throw StoreError(
                path: source,
                message: "version: \(bundle.version) is newer than this nestbench reads (\(RunExport.currentVersion))")
        }
        let problems = bundle.problems
        if !problems.isEmpty {
            throw StoreError(
                path: source, message: problems.prefix(5).joined(separator: "; ") + (problems.count > 5 ? "; …" : ""))
        }
        let record = bundle.experimentRun
        if let existing = try export(record.id) {
            if existing.fingerprint == bundle.fingerprint { return .alreadyPresent }
            throw StoreError(
                path: source,
                message:
                    "experiment_run.id: \(record.id) is already stored with different content (stored: \(existing.runs.count) runs, "
                    + "file hash \(existing.experimentRun.contentHash.prefix(12)), status \(existing.experimentRun.status.rawValue); "
                    + "\(source): \(bundle.runs.count) runs, file hash \(record.contentHash.prefix(12)), status \(record.status.rawValue)); "
                    + "import it with --as-new to keep both")
        }
        let origin =
            bundle.origin
            ?? "imported from \(record.machine.hostname) (\(source)) on \(ISO8601DateFormatter().string(from: Date()))"
        try wrap("importing \(record.id)") {
            try db.write { db in
                try Self.insert(record, owner: nil, origin: origin, generatorState: nil, db: db)
                for run in bundle.runs {
                    _ = try Self.insert(run.record, samples: run.samples.map { ($0.tMillis, $0.name, $0.value) }, db: db)
                }
            }
        }
        return .imported(runs: bundle.runs.count)
    }
}

extension RunExport {
    /// What is wrong with a decoded export, as "key.path: problem": the experiment by the
    /// loader's rules, and every run belonging to this experiment run, each sequence once.
    public var problems: [String] {
        var problems = experimentRun.experiment.problems.map { "experiment_run.experiment.\($0)" }
        let id = experimentRun.id
        if id.isEmpty || id.count > 200 { problems.append("experiment_run.id: must be 1…200 characters") }
        if experimentRun.status == .running {
            problems.append("experiment_run.status: running (an experiment run in progress cannot be imported)")
        }
        var sequences: Set<Int> = []
        for (i, run) in runs.enumerated() {
            let r = run.record
            if r.experimentRunID != id {
                problems.append(
                    "runs[\(i)].record.experimentRunID: \"\(r.experimentRunID)\" is not this export's experiment run \"\(id)\"")
            }
            if r.planned.sequence < 0 {
                problems.append("runs[\(i)].record.planned.sequence: \(r.planned.sequence) is negative")
            } else if !sequences.insert(r.planned.sequence).inserted {
                problems.append("runs[\(i)].record.planned.sequence: \(r.planned.sequence) appears twice")
            }
            if r.planned.repetition < 1 { problems.append("runs[\(i)].record.planned.repetition: must be ≥ 1") }
            for m in r.metrics where m.value.map({ !$0.isFinite }) ?? false {
                problems.append("runs[\(i)].record.metrics.\(m.name): not a finite number")
            }
            if run.samples.contains(where: { !$0.value.isFinite }) {
                problems.append("runs[\(i)].samples: values must be finite numbers")
            }
        }
        return problems
    }

    /// The measured content, for telling a re-import of the same export from a different one
    /// under the same id (dates, origin and export time left out: they change on a round trip).
    var fingerprint: String {
        var parts = [
            experimentRun.id, experimentRun.contentHash, String(experimentRun.seed), experimentRun.status.rawValue,
            String(experimentRun.plan.count), String(runs.count),
        ]
        for run in runs.sorted(by: { $0.record.planned.sequence < $1.record.planned.sequence }) {
            let r = run.record
            parts.append(
                "\(r.planned.sequence)|\(r.planned.configuration)|\(r.planned.workload)|\(r.planned.condition)|\(r.planned.repetition)|\(r.status.rawValue)|\(r.reason ?? "")|\(r.exitStatus.map(String.init) ?? "")|\(r.signal.map(String.init) ?? "")|\(run.samples.count)"
            )
            for m in r.metrics { parts.append("\(m.name)=\(m.value.map { "\($0)" } ?? "-")\(m.unit)\(m.unavailable ?? "")") }
        }
        return parts.joined(separator: "\n")
    }

    /// The same export under another experiment-run id (`import --as-new`).
    public func renamed(to id: String) -> RunExport {
        var copy = self
        copy.experimentRun.id = id
        copy.runs = runs.map { run in
            var run = run
            run.record.experimentRunID = id
            return run
        }
        return copy
    }
}

/// An experiment run with its runs and timelines as one JSON document (`nestbench export`), so
/// testbeds can merge results into one store (`nestbench import`).
public struct RunExport: Codable, Sendable {
    public static let formatName = "nestbench-export"
    public static let currentVersion = 1

    public struct Sample: Codable, Sendable, Hashable {
        public var tMillis: Int64
        public var name: String
        public var value: Double

        public init(tMillis: Int64, name: String, value: Double) {
            self.tMillis = tMillis
            self.name = name
            self.value = value
        }
    }

    public struct ExportedRun: Codable, Sendable {
        public var record: RunRecord
        public var samples: [Sample]

        public init(record: RunRecord, samples: [Sample] = []) {
            self.record = record
            self.samples = samples
        }
    }

    public init(
        format: String = RunExport.formatName, version: Int = RunExport.currentVersion, exportedAt: Date = Date(),
        origin: String? = nil, experimentRun: ExperimentRunRecord, runs: [ExportedRun]
    ) {
        self.format = format
        self.version = version
        self.exportedAt = exportedAt
        self.origin = origin
        self.experimentRun = experimentRun
        self.runs = runs
    }

    public var format: String
    public var version: Int
    public var exportedAt: Date
    /// Where the run was measured when it had been imported before (nil: on the exporting machine).
    public var origin: String?
    public var experimentRun: ExperimentRunRecord
    public var runs: [ExportedRun]

    static func isoFormatter(fractional: Bool) -> ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = fractional ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
        return f
    }

    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Milliseconds kept (the store's precision), so a re-import is identical.
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(Self.isoFormatter(fractional: true).string(from: date))
        }
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { decoder in
            let c = try decoder.singleValueContainer()
            let text = try c.decode(String.self)
            guard
                let date = Self.isoFormatter(fractional: true).date(from: text)
                    ?? Self.isoFormatter(fractional: false).date(from: text)
            else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "\"\(text)\" is not an ISO 8601 date")
            }
            return date
        }
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return d
    }
}

/// The owner of a running experiment run: host name, pid and the process's start time (field 22
/// of /proc/PID/stat), so that a reused pid is not taken for the owner.
enum Owner {
    static var current: String {
        let pid = getpid()
        return "\(ProcessInfo.processInfo.hostName) \(pid) \(startTime(of: pid).map(String.init) ?? "-")"
    }

    static func startTime(of pid: Int32) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Whether the owner recorded as `owner` is certainly gone (same host, pid dead or reused).
    static func isDead(_ owner: String) -> Bool {
        let parts = owner.split(separator: " ")
        guard parts.count == 3, String(parts[0]) == ProcessInfo.processInfo.hostName, let pid = Int32(parts[1]) else {
            return false
        }
        guard let now = startTime(of: pid) else { return true }
        return String(parts[2]) != "-" && String(now) != String(parts[2])
    }
}
