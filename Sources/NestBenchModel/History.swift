import Foundation

/// One stored metric value with the time and tags of the experiment run it belongs to: the row
/// nightly history is built from.
public struct HistoryRow: Sendable, Hashable {
    public var experimentRunID: String
    public var startedAt: Date
    public var tags: [String: String]
    public var cell: Cell
    public var metric: String
    public var unit: String
    public var polarity: Polarity
    public var value: Double

    public init(
        experimentRunID: String, startedAt: Date, tags: [String: String], cell: Cell, metric: String, unit: String,
        polarity: Polarity, value: Double
    ) {
        self.experimentRunID = experimentRunID
        self.startedAt = startedAt
        self.tags = tags
        self.cell = cell
        self.metric = metric
        self.unit = unit
        self.polarity = polarity
        self.value = value
    }
}
