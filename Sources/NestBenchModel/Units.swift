import Foundation

/// Parsers for the human units experiment files use.
public enum Units {
    /// Bytes from `4GiB`, `512M`, `64k`, `2MiB`, `1073741824` (binary multiples: K = KiB).
    public static func bytes(_ text: String) -> UInt64? {
        let s = text.trimmingCharacters(in: .whitespaces)
        let digits = s.prefix { $0.isNumber || $0 == "." }
        guard !digits.isEmpty, let number = Double(digits) else { return nil }
        let suffix = s.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).lowercased()
        let k = 1024.0
        let multipliers: [String: Double] = [
            "": 1, "b": 1, "k": k, "kb": k, "kib": k, "m": k * k, "mb": k * k, "mib": k * k,
            "g": k * k * k, "gb": k * k * k, "gib": k * k * k, "t": k * k * k * k, "tb": k * k * k * k,
            "tib": k * k * k * k,
        ]
        guard let m = multipliers[suffix] else { return nil }
        let value = number * m
        guard value >= 0, value < 1.8e19, value == value.rounded() else { return nil }
        return UInt64(value)
    }

    /// Seconds from `90`, `90s`, `500ms`, `2m`, `1h`.
    public static func seconds(_ text: String) -> Double? {
        let s = text.trimmingCharacters(in: .whitespaces)
        let digits = s.prefix { $0.isNumber || $0 == "." }
        guard !digits.isEmpty, let number = Double(digits) else { return nil }
        let suffix = s.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).lowercased()
        let multipliers: [String: Double] = ["": 1, "s": 1, "ms": 0.001, "m": 60, "min": 60, "h": 3600]
        guard let m = multipliers[suffix], number >= 0 else { return nil }
        return number * m
    }

    /// `4294967296` → `4.0 GiB`.
    public static func formatBytes(_ bytes: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = bytes
        var index = 0
        while abs(value) >= 1024 && index < units.count - 1 {
            value /= 1024
            index += 1
        }
        return index == 0 ? "\(Int(value)) B" : String(format: "%.1f %@", value, units[index])
    }
}
