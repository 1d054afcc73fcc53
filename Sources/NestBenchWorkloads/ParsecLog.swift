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
    /// The resolution of the printed ROI time: 10^-(decimals printed), e.g. 0.001 for `0.012s`.
    public var resolution: Double?

    /// A ROI shorter than 100 times its printed resolution (1 ms on many 3.0 trees): its ratios
    /// are mostly rounding. Nil when it is long enough or there is no ROI time.
    public var resolutionWarning: String? {
        guard let seconds, let resolution, seconds < 100 * resolution else { return nil }
        return
            "ROI \(seconds)s is under 100× its printed resolution (\(resolution)s): ratios of it are mostly rounding; use a larger input size"
    }

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
        var parsecError: String?

        func finish() {
            guard var r = current else { return }
            if r.seconds != nil, r.failure == nil, let crash = r.crash {
                // A ROI time followed by a crash is not a successful run.
                r.failure = "the program crashed after its region of interest (\(crash)); the ROI time is not used"
            }
            if r.seconds == nil && r.failure == nil {
                if let parsecError {
                    // parsecmgmt's own error (a binary it cannot find under its PARSECPLAT, …): the
                    // program never ran, the build is not to blame.
                    r.failure = "no ROI time: parsecmgmt did not run the program: \(parsecError)"
                } else if let crash = r.crash {
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
                parsecError = nil
                continue
            }
            if current == nil { current = ParsecROI() }
            if line.hasPrefix("[PARSEC] Error:"), parsecError == nil { parsecError = line }
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
                    let decimals = value.split(separator: ".", maxSplits: 1).dropFirst().first?.count ?? 0
                    current?.resolution = pow(10, -Double(decimals))
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
