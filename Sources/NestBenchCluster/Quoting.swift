/// Quoting of user-given text (paths, ids, partition names) in the job scripts NestBench writes
/// for Slurm: nothing the user gave is ever interpreted by bash or by sbatch's directive parser.
public enum ScriptQuoting {
    /// `text` as one bash word: single quotes, an embedded `'` as `'\''`. Bash interprets
    /// nothing inside single quotes (`$`, backquotes, `\`, `!` in a script), so the word is
    /// exactly `text`.
    public static func word(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
    }

    /// `text` as the value of an `#SBATCH --option=VALUE` line: sbatch splits a directive at
    /// blanks and stops at `#` unless quoted, takes `"` as quotes and `\` as an escape, so the value
    /// is double-quoted with `\` and `"` escaped (checked against sbatch 22.05 on loopback).
    public static func directive(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// A literal path inside a Slurm file name pattern (`--output`): `%` starts a replacement
    /// symbol (`%a`, `%j`), `%%` is a literal `%`.
    public static func literalInPattern(_ path: String) -> String {
        path.replacingOccurrences(of: "%", with: "%%")
    }

    /// Why `text` cannot appear in a job script (a line break or NUL would end a directive or
    /// the heredoc it is in), or nil.
    public static func problem(_ text: String) -> String? {
        // By scalar: "\r\n" is one Character, which a Character search for "\n" misses.
        if text.unicodeScalars.contains(where: { $0 == "\n" || $0 == "\r" }) { return "contains a line break" }
        if text.unicodeScalars.contains("\0") { return "contains a NUL character" }
        return nil
    }
}
