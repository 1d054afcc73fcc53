import Foundation

/// What one PARSEC benchmark's output says about its region of interest.
public struct ParsecROI: Sendable, Hashable {
    /// `parsec.streamcluster` when the log names it (parsecmgmt logs), else nil.
    public var benchmark: String?
    /// Seconds from `[HOOKS] Total time spent in ROI: <s>s`, or nil with `failure` saying why.
    public var seconds: Double?
    /// Why there is no usable ROI time.
    public var failure: String?
    /// The line where the program died, as the shell reported it ("Segmentation fault", "Aborted").
    public var crash: String?

    public var succeeded: Bool { seconds != nil && failure == nil }
}

/// Parses PARSEC output: parsecmgmt logs (one or more benchmarks) or a program's own output.
///
/// The success signal is the hooks line `[HOOKS] Total time spent in ROI: <seconds>s` (any number
/// of decimals). parsecmgmt exits 0 even when the program crashed, and splash2x programs of the
/// 3.0 tree never print the line, so a missing line is a failure with its reason — never a zero.
public enum ParsecLog {
    static let roiPrefix = "[HOOKS] Total time spent in ROI:"
    static let benchmarkPrefix = "[PARSEC] [========== Running benchmark "
    static let crashWords = [
        "Segmentation fault", "Aborted", "Killed", "Bus error", "Floating point exception", "Illegal instruction",
        "core dumped",
    ]

    /// One result per benchmark in a parsecmgmt log, or one for plain program output.
    public static func parse(_ text: String) -> [ParsecROI] {
        var results: [ParsecROI] = []
        var current: ParsecROI?
        var sawHooks = false
        var sawROIStart = false
        var sawROIEnd = false

        func finish() {
            guard var r = current else { return }
            if r.seconds != nil, r.failure == nil, let crash = r.crash {
                // A ROI time followed by a crash is not a successful run.
                r.failure = "the program crashed after its region of interest (\(crash)); the ROI time is not used"
            }
            if r.seconds == nil && r.failure == nil {
                if let crash = r.crash {
                    r.failure = "no ROI time: the program crashed (\(crash))"
                } else if !sawHooks {
                    r.failure =
                        "no ROI time: this build does not print it (no [HOOKS] lines: build with the gcc-hooks configuration; splash2x programs of PARSEC 3.0 never print it)"
                } else if sawROIStart && !sawROIEnd {
                    r.failure = "no ROI time: the program stopped inside its region of interest (crashed or was killed)"
                } else if sawROIEnd {
                    r.failure =
                        "no ROI time: this build does not print it (the program left its ROI but printed no total; PARSEC 3.0's splash2x programs never do)"
                } else {
                    r.failure = "no ROI time: the program crashed or exited before its region of interest"
                }
            }
            results.append(r)
        }

        // `isNewline`: "\r\n" (a CRLF log) is one Character, never equal to "\n".
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.hasPrefix(benchmarkPrefix) {
                // parsecmgmt's preamble ("Benchmarks to run") is not a benchmark of its own.
                if let c = current, c.benchmark == nil, c.seconds == nil, c.crash == nil, !sawHooks {
                    current = nil
                }
                finish()
                let rest = line.dropFirst(benchmarkPrefix.count)
                current = ParsecROI(benchmark: rest.split(separator: " ").first.map(String.init))
                sawHooks = false
                sawROIStart = false
                sawROIEnd = false
                continue
            }
            if current == nil { current = ParsecROI() }
            if line.hasPrefix("[HOOKS]") { sawHooks = true }
            if line.hasPrefix("[HOOKS] Entering ROI") { sawROIStart = true }
            if line.hasPrefix("[HOOKS] Leaving ROI") { sawROIEnd = true }
            if line.hasPrefix(roiPrefix) {
                var value = line.dropFirst(roiPrefix.count).trimmingCharacters(in: .whitespaces)
                if value.hasSuffix("s") { value.removeLast() }
                if let previous = current?.seconds {
                    // Two totals for one benchmark: ambiguous, both reported.
                    current?.failure =
                        "two ROI lines for one benchmark (\(previous)s, then \(value)s): ambiguous, neither is used"
                } else if current?.failure?.hasPrefix("unparsable ROI time") == true {
                    current?.failure =
                        "two ROI lines for one benchmark (one unparsable, then \(value)s): ambiguous, neither is used"
                } else if let seconds = Double(value), seconds.isFinite, seconds >= 0 {
                    current?.seconds = seconds
                    if seconds == 0 {
                        current?.failure =
                            "ROI time printed as \(value)s: below the printed resolution, no throughput can be derived (use a larger input)"
                    }
                } else {
                    current?.failure = "unparsable ROI time \"\(value)\" in: \(line)"
                }
            }
            if let word = crashWords.first(where: { line.contains($0) }),
                line.contains("line ") || line.hasPrefix(word) || line.contains(": \(word)")
            {
                if current?.crash == nil {
                    current?.crash = word
                } else if current?.crash == "uncaught C++ exception" {
                    current?.crash = "uncaught C++ exception, \(word)"
                }
            }
            if current?.crash == nil, line.hasPrefix("terminate called after throwing") {
                current?.crash = "uncaught C++ exception"
            }
        }
        finish()
        return results
    }
}
