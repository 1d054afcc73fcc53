import Crypto
import Foundation
import NestBenchProcess

/// Errors building the C harness.
public struct HarnessError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Finds NestBench's `Harness/` directory and compiles its C programs on first use into a cache
/// keyed by the source's hash.
public struct HarnessLocator: Sendable {
    public var harnessDirectory: String?
    public var cacheDirectory: String

    /// `$NESTBENCH_HARNESS`, else the first `Harness/` above the executable or the current directory.
    public init(harnessDirectory: String? = nil, cacheDirectory: String? = nil) {
        let env = ProcessInfo.processInfo.environment
        self.harnessDirectory = harnessDirectory ?? env["NESTBENCH_HARNESS"] ?? Self.search()
        let home = env["HOME"] ?? "/tmp"
        self.cacheDirectory =
            cacheDirectory ?? env["NESTBENCH_CACHE"].map { $0 + "/harness" } ?? home + "/.cache/nestbench/harness"
    }

    static func search() -> String? {
        var starts: [String] = [FileManager.default.currentDirectoryPath]
        let exe = (CommandLine.arguments.first.flatMap { ProcessRunner.resolve($0) }) ?? ""
        if !exe.isEmpty {
            starts.append(((exe as NSString).resolvingSymlinksInPath as NSString).deletingLastPathComponent)
        }
        for start in starts {
            var dir = start
            for _ in 0..<8 {
                let candidate = dir + "/Harness"
                if FileManager.default.fileExists(atPath: candidate + "/micro/nb-micro.c") { return candidate }
                let parent = (dir as NSString).deletingLastPathComponent
                if parent == dir { break }
                dir = parent
            }
        }
        return nil
    }

    /// Path of the compiled program for `source` (relative to Harness/), building it if needed;
    /// `flags` are extra compiler flags (`-static` for a guest that runs without the host's libc).
    public func program(_ source: String, name: String, flags: [String] = []) async throws(HarnessError) -> String {
        guard let harnessDirectory else {
            throw HarnessError(
                message: "cannot find NestBench's Harness/ directory; run from the project checkout or set NESTBENCH_HARNESS")
        }
        let sourcePath = harnessDirectory + "/" + source
        guard let data = FileManager.default.contents(atPath: sourcePath) else {
            throw HarnessError(message: "\(sourcePath): missing harness source")
        }
        let hash = SHA256.hash(data: data).prefix(8).map { String(format: "%02x", $0) }.joined()
        let dir = "\(cacheDirectory)/\(hash)"
        let binary = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: binary) { return binary }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw HarnessError(message: "\(dir): cannot create the harness cache (\(error))")
        }
        guard let cc = ProcessRunner.resolve("cc") ?? ProcessRunner.resolve("gcc") else {
            throw HarnessError(message: "no C compiler (cc) to build \(sourcePath); install gcc (apt-get install gcc)")
        }
        // Per build: tasks of one process may build the same program at once (the first to
        // finish installs it; the others' renames replace it with the same bytes).
        let unique = "\(getpid()).\(UUID().uuidString.prefix(8))"
        let tmp = "\(binary).\(unique).tmp"
        let log = "\(dir)/\(name).\(unique).build.log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let spec = ProcessSpec(
            program: cc, arguments: ["-O2", "-Wall"] + flags + ["-o", tmp, sourcePath],
            environment: ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"],
            stdoutPath: log, stderrPath: log, timeoutSeconds: 120)
        let outcome: ProcessOutcome
        do {
            outcome = try await ProcessRunner.run(spec)
        } catch {
            throw HarnessError(message: "building \(sourcePath): \(error)")
        }
        guard outcome.succeeded else {
            let output = FileManager.default.contents(atPath: log).map { String(decoding: $0.suffix(4096), as: UTF8.self) } ?? ""
            throw HarnessError(message: "building \(sourcePath) failed (\(outcome.describe(timeout: 120))): \(output)")
        }
        guard rename(tmp, binary) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: tmp)
            throw HarnessError(message: "\(binary): cannot install the built harness program (\(reason))")
        }
        return binary
    }
}
