import Crypto
import Foundation
import NestBenchProcess
import NestBenchWorkloads
import Testing

/// `InputFetcher` against a local HTTP server (Tests/FakeApps/range_server.py) that
/// the suite starts on 127.0.0.1 and stops.
@Suite(.serialized) struct FetchTests {
    let dir = Fixtures.temporaryDirectory()

    /// Starts the server over `served`; returns it and its port.
    func startServer(served: String) async throws -> (RunningProcess, Int) {
        let portFile = dir + "/port"
        let server = try ProcessRunner.start(
            ProcessSpec(
                program: "python3",
                arguments: [SuitePaths.fakeApps + "/range_server.py", served, portFile, dir + "/requests.log"],
                environment: ["PATH": "/usr/bin:/bin"], stdoutPath: dir + "/server.out", stderrPath: dir + "/server.err",
                timeoutSeconds: 120))
        try server.release()
        for _ in 0..<200 {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let port = Int(text) { return (server, port) }
            try await Task.sleep(for: .milliseconds(25))
        }
        server.kill()
        throw FetchError("the test HTTP server did not start: \(MetricLines.tail(of: dir + "/server.err") ?? "")")
    }

    /// A tar.gz with top directory `top/` holding `top/data/file.txt`, and its sha256.
    func makeArchive(in served: String) async throws -> (name: String, sha256: String) {
        let src = dir + "/src/top/data"
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        // Big enough that a half-sent body is a real partial download.
        let payload = String(repeating: "nestbench fetch test line\n", count: 40_000)
        try payload.write(toFile: src + "/file.txt", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: served, withIntermediateDirectories: true)
        let archive = served + "/inputs.tar.gz"
        let tar = try await ProcessRunner.run(
            ProcessSpec(
                program: "tar", arguments: ["-c", "-z", "-f", archive, "-C", dir + "/src", "top"],
                environment: ["PATH": "/usr/bin:/bin"], timeoutSeconds: 30))
        #expect(tar.succeeded)
        let data = try Data(contentsOf: URL(fileURLWithPath: archive))
        return ("inputs.tar.gz", SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined())
    }

    @Test(.timeLimit(.minutes(1)))
    func downloadsVerifiesAndUnpacks() async throws {
        let served = dir + "/served"
        let (name, sha) = try await makeArchive(in: served)
        let (server, port) = try await startServer(served: served)
        defer {
            server.kill()
            _ = server.waitBlocking()
        }
        let fetcher = InputFetcher(downloads: dir + "/cache")
        let input = SuiteInput(url: "http://127.0.0.1:\(port)/\(name)", sha256: sha, stripComponents: 1, into: "data")
        let outcome = try await fetcher.fetch(name: "test-inputs", input: input, into: dir + "/data")
        #expect(outcome.verification == "sha256 verified")
        #expect(outcome.downloaded)
        #expect(FileManager.default.fileExists(atPath: dir + "/data/data/file.txt"))
        // A second fetch reuses the verified archive.
        let again = try await fetcher.fetch(name: "test-inputs", input: input, into: dir + "/data")
        #expect(!again.downloaded)
    }

    @Test(.timeLimit(.minutes(1)))
    func corruptedDownloadIsRejected() async throws {
        let served = dir + "/served"
        let (name, _) = try await makeArchive(in: served)
        let (server, port) = try await startServer(served: served)
        defer {
            server.kill()
            _ = server.waitBlocking()
        }
        let wrong = String(repeating: "ab", count: 32)
        let input = SuiteInput(url: "http://127.0.0.1:\(port)/\(name)", sha256: wrong, stripComponents: 1, into: "data")
        do {
            _ = try await InputFetcher(downloads: dir + "/cache").fetch(name: "x", input: input, into: dir + "/data")
            Issue.record("a checksum mismatch must fail")
        } catch {
            #expect(error.description.contains("sha256 mismatch") && error.description.contains(wrong))
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/cache/\(name)"), "the corrupt file is deleted")
        #expect(!FileManager.default.fileExists(atPath: dir + "/data/data/file.txt"), "nothing unpacked")
    }

    @Test(.timeLimit(.minutes(1)))
    func droppedConnectionResumesWithRange() async throws {
        let served = dir + "/served"
        let (name, sha) = try await makeArchive(in: served)
        let (server, port) = try await startServer(served: served)
        defer {
            server.kill()
            _ = server.waitBlocking()
        }
        let input = SuiteInput(url: "http://127.0.0.1:\(port)/drop/\(name)", sha256: sha, stripComponents: 1, into: "data")
        let outcome = try await InputFetcher(downloads: dir + "/cache").fetch(name: "x", input: input, into: dir + "/data")
        #expect(outcome.verification == "sha256 verified")
        let log = try String(contentsOfFile: dir + "/requests.log", encoding: .utf8)
        #expect(log.contains("/drop/\(name) None"), "a first full request")
        #expect(log.contains("/drop/\(name) bytes="), "then a Range request resuming it: \(log)")
        #expect(FileManager.default.fileExists(atPath: dir + "/data/data/file.txt"))
    }

    @Test(.timeLimit(.minutes(1)))
    func unknownChecksumIsSaidAndMissingFileFails() async throws {
        let served = dir + "/served"
        let (name, _) = try await makeArchive(in: served)
        let (server, port) = try await startServer(served: served)
        defer {
            server.kill()
            _ = server.waitBlocking()
        }
        let fetcher = InputFetcher(downloads: dir + "/cache", attempts: 1)
        let input = SuiteInput(url: "http://127.0.0.1:\(port)/\(name)", sha256: nil, stripComponents: 1, into: "data")
        let outcome = try await fetcher.fetch(name: "x", input: input, into: dir + "/data")
        #expect(outcome.verification.contains("checksum unknown"))
        let missing = SuiteInput(url: "http://127.0.0.1:\(port)/nope.tgz", sha256: nil, stripComponents: 0, into: "data")
        do {
            _ = try await fetcher.fetch(name: "y", input: missing, into: dir + "/data2")
            Issue.record("a 404 must fail")
        } catch {
            #expect(error.description.contains("HTTP 404") && error.description.contains("nope.tgz"))
        }
    }
}
