import Crypto
import Foundation
import NestBenchProcess

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Why an input could not be fetched; every message names the URL or file.
public struct FetchError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(_ message: String) { self.message = message }
}

/// Progress of one download, for the CLI's stderr.
public struct FetchProgress: Sendable {
    public var input: String
    public var received: Int64
    public var expected: Int64?
}

/// What fetching one input did.
public struct FetchOutcome: Sendable {
    public var input: String
    public var archive: String
    /// "verified", or "checksum unknown: not verified".
    public var verification: String
    public var unpackedInto: String
    public var downloaded: Bool
}

/// Downloads declared input archives into the cache with URLSession, resumes partial downloads
/// with HTTP Range requests, verifies SHA-256 when the suite declares one, and unpacks with tar.
public struct InputFetcher: Sendable {
    public var downloads: String
    /// Attempts per archive (each resumes where the last stopped).
    public var attempts: Int
    public var progress: @Sendable (FetchProgress) -> Void

    public init(downloads: String, attempts: Int = 4, progress: @escaping @Sendable (FetchProgress) -> Void = { _ in }) {
        self.downloads = downloads
        self.attempts = attempts
        self.progress = progress
    }

    /// Downloads (or reuses), verifies and unpacks `input` into `destination`.
    public func fetch(name: String, input: SuiteInput, into destination: String) async throws(FetchError) -> FetchOutcome {
        guard let url = URL(string: input.url), url.scheme != nil else {
            throw FetchError("input \(name): invalid URL \"\(input.url)\"")
        }
        do {
            try FileManager.default.createDirectory(atPath: downloads, withIntermediateDirectories: true)
        } catch {
            throw FetchError("\(downloads): cannot create the download cache (\(error.localizedDescription))")
        }
        let file = "\(downloads)/\(input.fileName)"
        let partial = file + ".part"
        var downloaded = false
        if FileManager.default.fileExists(atPath: file), let expected = input.sha256 {
            if try Self.sha256(of: file) != expected.lowercased() {
                try? FileManager.default.removeItem(atPath: file)
            }
        }
        if !FileManager.default.fileExists(atPath: file) {
            var lastError: FetchError?
            for _ in 0..<attempts {
                do {
                    try await download(url, to: partial, name: name)
                    lastError = nil
                    break
                } catch {
                    lastError = error
                }
            }
            if let lastError {
                throw FetchError("\(lastError.message) (gave up after \(attempts) attempts; \(partial) is kept to resume)")
            }
            guard rename(partial, file) == 0 else { throw FetchError("\(file): cannot move the finished download in place") }
            downloaded = true
        }
        var verification = "checksum unknown: not verified (the suite publishes no checksum)"
        if let expected = input.sha256?.lowercased() {
            let actual = try Self.sha256(of: file)
            guard actual == expected else {
                try? FileManager.default.removeItem(atPath: file)
                throw FetchError(
                    "\(input.url): sha256 mismatch: expected \(expected), got \(actual); the download is corrupt or the file changed upstream (deleted \(file); run the fetch again)"
                )
            }
            verification = "sha256 verified"
        }
        try await unpack(file, into: destination, stripComponents: input.stripComponents ?? 0)
        return FetchOutcome(
            input: name, archive: file, verification: verification, unpackedInto: destination, downloaded: downloaded)
    }

    /// Hex SHA-256 of a file, streamed.
    public static func sha256(of path: String) throws(FetchError) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw FetchError("\(path): cannot read") }
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let chunk: Data
            do {
                chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            } catch {
                throw FetchError("\(path): read error (\(error.localizedDescription))")
            }
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    func unpack(_ archive: String, into destination: String, stripComponents: Int) async throws(FetchError) {
        do {
            try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: true)
        } catch {
            throw FetchError("\(destination): cannot create (\(error.localizedDescription))")
        }
        var arguments = ["-x", "-f", archive, "-C", destination]
        if stripComponents > 0 { arguments.append("--strip-components=\(stripComponents)") }
        let log = "\(downloads)/\((archive as NSString).lastPathComponent).unpack.log"
        let spec = ProcessSpec(
            program: "tar", arguments: arguments,
            environment: ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"],
            stdoutPath: log, stderrPath: log, timeoutSeconds: 3600)
        let outcome: ProcessOutcome
        do {
            outcome = try await ProcessRunner.run(spec)
        } catch {
            throw FetchError("unpacking \(archive): \(error.description)")
        }
        guard outcome.succeeded else {
            throw FetchError(
                "unpacking \(archive) into \(destination) failed (tar \(outcome.describe(timeout: 3600))): \(MetricLines.tail(of: log, lines: 3) ?? "")"
            )
        }
    }

    /// One attempt: GET (with `Range: bytes=N-` when `partial` has N bytes), appending to `partial`.
    func download(_ url: URL, to partial: String, name: String) async throws(FetchError) {
        if !FileManager.default.fileExists(atPath: partial) {
            _ = FileManager.default.createFile(atPath: partial, contents: nil)
        }
        let existing = (try? FileManager.default.attributesOfItem(atPath: partial)[.size] as? Int64) ?? 0
        var request = URLRequest(url: url)
        request.timeoutInterval = 60
        if existing > 0 { request.setValue("bytes=\(existing)-", forHTTPHeaderField: "Range") }
        guard let handle = FileHandle(forWritingAtPath: partial) else { throw FetchError("\(partial): cannot write") }
        defer { try? handle.close() }
        let delegate = DownloadDelegate(
            handle: handle, offset: existing, name: name, url: url.absoluteString, progress: progress)
        let session = URLSession(configuration: .ephemeral, delegate: delegate, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        let result: Result<Void, FetchError> = await withCheckedContinuation { continuation in
            delegate.continuation = continuation
            session.dataTask(with: request).resume()
        }
        try result.get()
    }
}

/// Streams a response body into the partial file; resolves the attempt when the task ends.
final class DownloadDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    let handle: FileHandle
    var received: Int64
    var expected: Int64?
    let name: String
    let url: String
    let progress: @Sendable (FetchProgress) -> Void
    var continuation: CheckedContinuation<Result<Void, FetchError>, Never>?
    var failure: FetchError?
    var rangeComplete = false
    var lastReport = ContinuousClock.now
    let lock = NSLock()

    init(
        handle: FileHandle, offset: Int64, name: String, url: String, progress: @escaping @Sendable (FetchProgress) -> Void
    ) {
        self.handle = handle
        self.received = offset
        self.name = name
        self.url = url
        self.progress = progress
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void
    ) {
        lock.lock()
        defer { lock.unlock() }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 200
        switch status {
        case 206:
            handle.seekToEndOfFile()
            expected = response.expectedContentLength >= 0 ? received + response.expectedContentLength : nil
            completionHandler(.allow)
        case 200:
            // The server ignored the range (or there was none): start over.
            handle.truncateFile(atOffset: 0)
            received = 0
            expected = response.expectedContentLength >= 0 ? response.expectedContentLength : nil
            completionHandler(.allow)
        case 416:
            // Nothing left to send: the partial file is already complete.
            rangeComplete = true
            completionHandler(.cancel)
        default:
            failure = FetchError("\(url): HTTP \(status) (\(HTTPURLResponse.localizedString(forStatusCode: status)))")
            completionHandler(.cancel)
        }
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        lock.lock()
        handle.write(data)
        received += Int64(data.count)
        let now = ContinuousClock.now
        let report = now - lastReport > .milliseconds(200)
        if report { lastReport = now }
        let snapshot = FetchProgress(input: name, received: received, expected: expected)
        lock.unlock()
        if report { progress(snapshot) }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        lock.lock()
        let result: Result<Void, FetchError>
        if let failure {
            result = .failure(failure)
        } else if rangeComplete {
            result = .success(())
        } else if let error {
            result = .failure(FetchError("\(url): download interrupted after \(received) bytes (\(error.localizedDescription))"))
        } else if let expected, received < expected {
            result = .failure(FetchError("\(url): connection closed after \(received) of \(expected) bytes"))
        } else {
            result = .success(())
        }
        let snapshot = FetchProgress(input: name, received: received, expected: expected)
        let continuation = self.continuation
        self.continuation = nil
        lock.unlock()
        progress(snapshot)
        continuation?.resume(returning: result)
    }
}
