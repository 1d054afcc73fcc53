import Foundation
import NestBenchPlatforms
import NestBenchProcess
import Synchronization

/// A holding helper with a line protocol (`Harness/fragment/nb-fragment.c`,
/// `Harness/pressure/nb-hold.c`): built from the harness, started as a helper of a place with
/// its stdout — one `kind key=value …` line per event (`FragmenterEvent`) — in a log file that is
/// followed as it grows, held until `ready`, stopped by `terminate()`. The one start and stop
/// path of both; what their events mean stays with their sessions.
struct LineProtocolHelper: Sendable {
    /// How messages name it: "the fragmenter", "nb-hold".
    let name: String
    let child: any HelperProcess
    let place: any Place
    /// Its protocol (stdout) and its stderr.
    let logPath: String
    let stderrPath: String
    let reader: LogTail

    /// Every protocol event read so far.
    var events: [FragmenterEvent] { reader.events }

    /// Builds `source` (relative to Harness/) as `program` and starts it in `place` with
    /// `arguments`, its stdout in `directory/<file>.log` and stderr in `directory/<file>.stderr`.
    /// `onEvent` sees every protocol line as it is read.
    static func start(
        _ name: String, source: String, program: String, arguments: [String], file: String, directory: String,
        place: any Place, harness: HarnessLocator, onEvent: @escaping @Sendable (FragmenterEvent) -> Void = { _ in }
    ) async throws(FragmentationError) -> LineProtocolHelper {
        let binary: String
        do {
            binary = try await harness.program(source, name: program)
        } catch {
            throw FragmentationError("cannot build \(name): \(error)")
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FragmentationError("\(directory): cannot create (\(error))")
        }
        let log = directory + "/\(file).log"
        let err = directory + "/\(file).stderr"
        let child: any HelperProcess
        do {
            child = try await place.startHelper(
                ProcessSpec(
                    program: binary, arguments: arguments, environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"],
                    workingDirectory: directory, stdoutPath: log, stderrPath: err))
        } catch {
            throw FragmentationError("cannot start \(name) in \(place.name): \(error)")
        }
        let reader = LogTail(path: log, onEvent: onEvent)
        reader.start()
        return LineProtocolHelper(name: name, child: child, place: place, logPath: log, stderrPath: err, reader: reader)
    }

    /// Waits for its `ready` line. An `error` line, an exit before it (with the last lines of its
    /// stderr), `deadline` (`timeout` says what was not reached) or a stop request (Ctrl-C: a
    /// helper in a guest is not among the children a signal kills) stop it and are the error.
    func ready(
        by deadline: ContinuousClock.Instant, timeout: String,
        stopRequested: @Sendable () -> Bool = { Cancellation.shared.isRequested }
    ) async throws(FragmentationError) -> FragmenterEvent {
        while true {
            if let ready = reader.events.first(where: { $0.kind == "ready" }) { return ready }
            let failure: String?
            if let error = reader.events.first(where: { $0.kind == "error" }) {
                failure = "\(name) failed: \(error.fields["message"] ?? "")"
            } else if child.hasExited {
                let outcome = await child.ended()
                let tail =
                    FileManager.default.contents(atPath: stderrPath).map {
                        String(decoding: $0.suffix(600), as: UTF8.self).split(separator: "\n").suffix(3).joined(separator: "\n")
                    } ?? ""
                failure = "\(name) exited before reaching its target (\(outcome.description))" + (tail.isEmpty ? "" : " \(tail)")
            } else if stopRequested() {
                failure = "interrupted before \(name) reached its target"
            } else if ContinuousClock.now > deadline {
                failure = timeout
            } else {
                failure = nil
            }
            if let failure {
                await child.stop()
                reader.stop()
                throw FragmentationError(failure + " (in \(place.name); log: \(logPath))")
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Stops it (SIGTERM, then SIGKILL after `grace`), which gives what it holds back, and stops
    /// following its log. Returns how it ended.
    @discardableResult
    func terminate(grace: Duration = .seconds(10)) async -> HelperEnd {
        let end = await child.terminate(grace: grace)
        reader.stop()
        return end
    }
}

extension HelperProcess {
    /// Stops a holding helper (nb-fragment, nb-hold): SIGTERM, then SIGKILL after `grace`; its end.
    func terminate(grace: Duration = .seconds(10)) async -> HelperEnd {
        if !hasExited { await signal(SIGTERM) }
        let deadline = ContinuousClock.now + grace
        while !hasExited && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if !hasExited { await signal(SIGKILL) }
        return await ended()
    }
}

/// Follows a growing protocol log file, parsing complete lines.
final class LogTail: Sendable {
    let path: String
    let onEvent: @Sendable (FragmenterEvent) -> Void
    private let state = Mutex<(events: [FragmenterEvent], stop: Bool)>(([], false))
    private let done = DispatchSemaphore(value: 0)
    private let start0 = ContinuousClock.now

    init(path: String, onEvent: @escaping @Sendable (FragmenterEvent) -> Void) {
        self.path = path
        self.onEvent = onEvent
    }

    var events: [FragmenterEvent] { state.withLock { $0.events } }

    func start() {
        let thread = Thread { [self] in
            var offset: UInt64 = 0
            var partial = ""
            while true {
                let stopping = state.withLock { $0.stop }
                if let handle = FileHandle(forReadingAtPath: path) {
                    try? handle.seek(toOffset: offset)
                    if let data = try? handle.readToEnd(), !data.isEmpty {
                        offset += UInt64(data.count)
                        partial += String(decoding: data, as: UTF8.self)
                        while let newline = partial.firstIndex(of: "\n") {
                            let line = partial[..<newline]
                            let t = Int64((ContinuousClock.now - start0).seconds * 1000)
                            if let event = FragmenterEvent.parse(line, tMillis: t) {
                                state.withLock { $0.events.append(event) }
                                onEvent(event)
                            }
                            partial = String(partial[partial.index(after: newline)...])
                        }
                    }
                    try? handle.close()
                }
                if stopping { break }
                usleep(100_000)
            }
            done.signal()
        }
        thread.name = "nestbench-protocol-log"
        thread.start()
    }

    func stop() {
        let already = state.withLock { s -> Bool in
            let was = s.stop
            s.stop = true
            return was
        }
        if !already { done.wait() }
    }
}
