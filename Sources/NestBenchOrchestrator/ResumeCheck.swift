import Foundation
import NestBenchConfig
import NestBenchModel

/// Whether a stored experiment run may be continued with the experiment file as it is now.
public enum ResumeCheck {
    /// Statuses a resume continues. `completed` and `nothing-ran` only with `--retry-failed` and
    /// failed runs to run again.
    public static let resumable: Set<ExperimentRunRecord.Status> = [.interrupted, .killed, .failed]

    /// Why `stored` cannot be resumed from `loaded` (nil: it can): its status, its shard, or the
    /// first difference between the stored resolved experiment (includes resolved) and the
    /// file's resolved experiment now, named by key path.
    public static func problem(
        stored: ExperimentRunRecord, loaded: LoadedExperiment, shard: Shard?, retryFailed: Bool, hasFailedRuns: Bool
    ) -> String? {
        if stored.status == .running {
            return "experiment run \(stored.id) is still running (its owner lives); wait for it or stop it first"
        }
        if !resumable.contains(stored.status) && !(retryFailed && hasFailedRuns) {
            return
                "experiment run \(stored.id) is \(stored.status.rawValue): nothing to resume\(stored.status == .completed ? " (--retry-failed runs its failed runs again, if it has any)" : "")"
        }
        if stored.shard != shard {
            return
                "experiment run \(stored.id) is \(stored.shard.map { "shard \($0)" } ?? "not sharded"), not \(shard.map { "shard \($0)" } ?? "the whole plan"): give the same --shard"
        }
        if let change = difference(stored: stored.experiment, now: loaded.experiment) {
            return
                "\(loaded.path) (or a file it includes) changed since experiment run \(stored.id) started: \(change); resuming would mix two experiments; start a new run instead"
        }
        return nil
    }

    /// The first difference between two experiments as "key.path: was X, now Y", nil when equal.
    public static func difference(stored: Experiment, now: Experiment) -> String? {
        guard stored != now else { return nil }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let a = try? JSONSerialization.jsonObject(with: encoder.encode(stored), options: [.fragmentsAllowed]),
            let b = try? JSONSerialization.jsonObject(with: encoder.encode(now), options: [.fragmentsAllowed])
        else { return "the experiment differs" }
        return diff(a, b, path: "") ?? "the experiment differs"
    }

    static func diff(_ a: Any?, _ b: Any?, path: String) -> String? {
        let name = path.isEmpty ? "(the experiment)" : path
        switch (a, b) {
        case (let x as [String: Any], let y as [String: Any]):
            for key in Set(x.keys).union(y.keys).sorted() {
                if let d = diff(x[key], y[key], path: path.isEmpty ? key : "\(path).\(key)") { return d }
            }
            return nil
        case (let x as [Any], let y as [Any]):
            for i in 0..<max(x.count, y.count) {
                if let d = diff(i < x.count ? x[i] : nil, i < y.count ? y[i] : nil, path: "\(path)[\(i)]") { return d }
            }
            return nil
        case (nil, nil):
            return nil
        case (nil, let y?):
            return "\(name): added (\(short(y)))"
        case (let x?, nil):
            return "\(name): removed (was \(short(x)))"
        case (let x?, let y?):
            return (x as? NSObject) == (y as? NSObject) ? nil : "\(name): was \(short(x)), now \(short(y))"
        }
    }

    static func short(_ value: Any) -> String {
        let text: String
        if let s = value as? String {
            text = "\"\(s)\""
        } else if let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys]) {
            text = String(decoding: data, as: UTF8.self)
        } else {
            text = "\(value)"
        }
        return text.count > 80 ? String(text.prefix(77)) + "…" : text
    }
}
