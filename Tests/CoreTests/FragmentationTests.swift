import Foundation
import Logging
import NestBenchModel
import NestBenchPlatforms
import NestBenchProcess
import Synchronization
import Testing

@testable import NestBenchFragmentation

@Suite("Fragmenter protocol")
struct FragmenterProtocolTests {
    @Test func parsesEvents() throws {
        let ready = try #require(
            FragmenterEvent.parse("ready fmfi=0.9318 held=31543296 free=20408893440 seconds=80.90 reached=1"))
        #expect(ready.kind == "ready")
        #expect(ready.double("fmfi") == 0.9318)
        #expect(ready.fields["reached"] == "1")
        let error = try #require(FragmenterEvent.parse("error cannot read /proc/buddyinfo: No such file"))
        #expect(error.kind == "error" && error.fields["message"] == "cannot read /proc/buddyinfo: No such file")
        #expect(FragmenterEvent.parse("   ") == nil)
    }

    @Test func argumentsFollowTheSpec() {
        let spec = FragmentationSpec(targetFMFI: 0.5, order: 4, slackBytes: 2 << 30, hold: false, mlock: false)
        let args = Fragmenter.arguments(for: spec, intervalMillis: 250)
        #expect(
            args == [
                "--target", "0.5", "--order", "4", "--method", "anon-holes", "--slack", "2147483648", "--interval-ms", "250",
            ])
        let held = Fragmenter.arguments(for: FragmentationSpec(targetFMFI: 0.9))
        #expect(held.contains("--hold") && held.contains("--mlock"))
    }

    @Test func exitStatusOrUnavailableNeverAStandIn() {
        let clean = FragmentationSession.exitMetric(HelperEnd(exitStatus: 0, description: "exit status 0"))
        #expect(clean.value == 0 && clean.unavailable == nil)
        let killed = FragmentationSession.exitMetric(HelperEnd(exitStatus: nil, description: "killed by signal 9 (Killed)"))
        #expect(killed.value == nil, "no -1 for a fragmenter killed by a signal")
        #expect(killed.unavailable == "unavailable: the fragmenter has no exit status (killed by signal 9 (Killed))")
    }

    @Test func pinnedCompactionKnobs() {
        let knobs = FragmentationSpec(targetFMFI: 0.9).knobs
        #expect(knobs.map(\.path) == ["/proc/sys/vm/compact_unevictable_allowed", "/proc/sys/vm/compaction_proactiveness"])
        #expect(knobs.allSatisfy { $0.value == "0" })
    }
}

/// The one start path of the holding helpers (nb-fragment, nb-hold): a fake helper with the same
/// line protocol, built from a harness directory of its own and started on this machine.
@Suite("Line protocol helper", .serialized)
struct LineProtocolHelperTests {
    /// Prints a progress line, then by its argument: `ready`, an `error` line, or a stderr line
    /// and exit 3; it then waits for a signal (`silent` prints nothing more).
    static let source = """
        #include <stdio.h>
        #include <string.h>
        #include <unistd.h>
        int main(int argc, char **argv) {
            const char *mode = argc > 1 ? argv[1] : "";
            setvbuf(stdout, NULL, _IONBF, 0);
            printf("progress step=1\\n");
            if (!strcmp(mode, "ready")) printf("ready held=42 seconds=0.5\\n");
            if (!strcmp(mode, "error")) printf("error cannot hold: no memory\\n");
            if (!strcmp(mode, "exit")) { fprintf(stderr, "nb-fake: dying\\n"); return 3; }
            for (;;) pause();
        }
        """

    /// Processes whose name is `name` (by /proc/PID/comm).
    static func running(_ name: String) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }.filter {
            (try? String(contentsOfFile: "/proc/\($0)/comm", encoding: .utf8))?.trimmingCharacters(in: .newlines) == name
        }
    }

    /// Starts the fake in `mode` and waits for `ready` (at most `seconds`); the program's unique
    /// name (a comm of at most 15 characters) to look for it afterwards.
    static func start(
        _ mode: String, seconds: Double = 20, stopRequested: @escaping @Sendable () -> Bool = { false }
    ) async throws -> (
        name: String, result: Result<(LineProtocolHelper, FragmenterEvent), FragmentationError>
    ) {
        let dir = Fixtures.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/harness/fake", withIntermediateDirectories: true)
        try Self.source.write(toFile: dir + "/harness/fake/nb-fake.c", atomically: true, encoding: .utf8)
        let name = "nbfake" + String(UUID().uuidString.prefix(8))
        let place = LocalPlace(
            platform: LocalPlatform(journal: KnobJournal(path: dir + "/journal.json"), logger: Logger(label: "test")),
            collectors: [], runsDirectory: dir)
        let events = Mutex<[String]>([])
        do {
            let helper = try await LineProtocolHelper.start(
                "the fake", source: "fake/nb-fake.c", program: name, arguments: [mode], file: "fake", directory: dir + "/run",
                place: place, harness: HarnessLocator(harnessDirectory: dir + "/harness", cacheDirectory: dir + "/cache"),
                onEvent: { e in events.withLock { $0.append(e.kind) } })
            let ready = try await helper.ready(
                by: ContinuousClock.now + .seconds(seconds), timeout: "the fake timed out", stopRequested: stopRequested)
            #expect(events.withLock { $0 } == ["progress", "ready"], "onEvent sees every line")
            return (name, .success((helper, ready)))
        } catch {
            return (name, .failure(error))
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func readyHoldsUntilTerminated() async throws {
        let (name, result) = try await Self.start("ready")
        let (helper, ready) = try result.get()
        #expect(ready.kind == "ready" && ready.double("held") == 42)
        #expect(helper.events.map(\.kind) == ["progress", "ready"])
        #expect(helper.logPath.hasSuffix("/run/fake.log"))
        #expect(Self.running(name) == [helper.child.pid], "it holds until terminated")
        let end = await helper.terminate(grace: .seconds(5))
        #expect(end.exitStatus == nil && end.description.contains("15"), "SIGTERM ended it: \(end.description)")
        #expect(Self.running(name).isEmpty)
    }

    @Test(
        .timeLimit(.minutes(1)),
        arguments: [
            ("error", "the fake failed: cannot hold: no memory"),
            ("exit", "the fake exited before reaching its target"),
            ("silent", "the fake timed out"),
        ])
    func aFailureBeforeReadyStopsItAndSaysWhy(mode: String, says: String) async throws {
        let (name, result) = try await Self.start(mode, seconds: 2)
        guard case .failure(let error) = result else {
            Issue.record("\(mode): reached ready")
            return
        }
        #expect(error.message.hasPrefix(says), "\(error.message)")
        #expect(error.message.contains("(in this machine; log: ") && error.message.contains("/run/fake.log)"), "\(error.message)")
        if mode == "exit" { #expect(error.message.contains("nb-fake: dying"), "its stderr's last lines: \(error.message)") }
        #expect(Self.running(name).isEmpty, "stopped: \(Self.running(name))")
    }

    /// A stop request (Ctrl-C) ends the wait at once, also for a helper no signal reaches (one in a
    /// guest): the helper is stopped, not waited for until its deadline.
    @Test(.timeLimit(.minutes(1)))
    func aStopRequestEndsTheWaitAndStopsIt() async throws {
        let started = ContinuousClock.now
        let (name, result) = try await Self.start("silent", seconds: 40, stopRequested: { true })
        guard case .failure(let error) = result else {
            Issue.record("reached ready")
            return
        }
        #expect(error.message.hasPrefix("interrupted before the fake reached its target"), "\(error.message)")
        #expect(ContinuousClock.now - started < .seconds(30), "not waited for until the deadline")
        #expect(Self.running(name).isEmpty, "stopped: \(Self.running(name))")
    }
}

/// A guest whose balloon answers with canned sizes, with MemAvailable 1000 MiB.
final class FakeBalloonPlace: BalloonPlace {
    let name = "G1"
    /// What each balloon call returns, in order (nil target: deflate).
    let answers: Mutex<[UInt64]>
    let calls = Mutex<[UInt64?]>([])
    init(answers: [UInt64]) { self.answers = Mutex(answers) }

    func balloon(to bytes: UInt64?) async throws(PlaceError) -> UInt64 {
        calls.withLock { $0.append(bytes) }
        return answers.withLock { $0.count > 1 ? $0.removeFirst() : $0[0] }
    }
    func read(_ path: String) async throws(PlaceError) -> String {
        guard path == "/proc/meminfo" else { throw .missing(place: name, path: path) }
        return "MemTotal: 2048000 kB\nMemAvailable: 1024000 kB\n"
    }
    func apply(_ knobs: [Knob], owner: String) async throws(PlaceError) -> [String: String] { [:] }
    func restoreKnobs() async -> [String] { [] }
    func dropCachesAndCompact() async throws(PlaceError) {}
    func launchMeasured(_ spec: ProcessSpec) async throws(ProcessError) -> MeasuredRun {
        throw ProcessError(program: spec.program, message: "not in this fake", errno: nil)
    }
    func startHelper(_ spec: ProcessSpec) async throws(ProcessError) -> any HelperProcess {
        throw ProcessError(program: spec.program, message: "not in this fake", errno: nil)
    }
    func runDirectory(_ tag: String) -> String { NSTemporaryDirectory() + "nestbench-fake-balloon-\(tag)" }
}

@Suite("Memory pressure by balloon")
struct BalloonPressureTests {
    static func inflate(_ place: FakeBalloonPlace, available: UInt64) async -> Result<PressureSession, FragmentationError> {
        let pressure = MemoryPressure(
            harness: HarnessLocator(harnessDirectory: "/nonexistent", cacheDirectory: "/nonexistent"),
            logger: Logger(label: "test"))
        do {
            return .success(
                try await pressure.inflate(MemoryPressureSpec(availableBytes: available), place: place))
        } catch {
            return .failure(error)
        }
    }

    @Test func takesWhatIsAboveTheTarget() async throws {
        let full: UInt64 = 2000 << 20
        let place = FakeBalloonPlace(answers: [full, full - (200 << 20)])
        let session = try await Self.inflate(place, available: 800 << 20).get()
        #expect(place.calls.withLock { $0 } == [nil, full - (1_024_000 * 1024 - (800 << 20))])
        #expect(session.ready.double("held") == Double(200 << 20))
    }

    /// MemAvailable already under the target: nothing is taken (held 0, measured), and a balloon
    /// still settling (more memory than the deflated reading) is an error, never a wrapped number.
    @Test func nothingToTakeAndAnUnsettledBalloon() async throws {
        let full: UInt64 = 2000 << 20
        let idle = FakeBalloonPlace(answers: [full])
        let session = try await Self.inflate(idle, available: 1200 << 20).get()
        #expect(idle.calls.withLock { $0 } == [nil], "not inflated")
        #expect(session.ready.double("held") == 0)

        let unsettled = FakeBalloonPlace(answers: [full, full + (2 << 20), full])
        let result = await Self.inflate(unsettled, available: (1_024_000 * 1024) - (1 << 20))
        guard case .failure(let error) = result else {
            Issue.record("an unsettled balloon was taken as holding memory")
            return
        }
        #expect(error.message.contains("the balloon had not settled"), "\(error.message)")
        #expect(unsettled.calls.withLock { $0 }.last == .some(nil), "deflated again after the failure")
    }
}
