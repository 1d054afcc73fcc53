import Foundation
import Logging
import NestBenchModel
import Testing

@testable import NestBenchPlatforms

/// Uses ordinary files as stand-ins for sysfs knobs: activate/restore logic is the same.
@Suite("Local platform knobs")
struct PlatformTests {
    func knobFile(_ dir: String, _ name: String, _ content: String) -> String {
        let path = "\(dir)/\(name)"
        FileManager.default.createFile(atPath: path, contents: Data(content.utf8))
        return path
    }

    @Test func activateSwitchesAndRestores() throws {
        let dir = Fixtures.temporaryDirectory()
        let enabled = knobFile(dir, "enabled", "orig-enabled\n")
        let extra = knobFile(dir, "extra", "orig-extra\n")
        let journal = KnobJournal(path: dir + "/journal.json")
        let platform = LocalPlatform(journal: journal, logger: Logger(label: "test"))
        let a = Configuration(name: "a", host: LayerSettings(sysfs: [enabled: "A", extra: "X"]))
        let b = Configuration(name: "b", host: LayerSettings(sysfs: [enabled: "B"]))

        try platform.activate(a)
        #expect(KnobWriter.read(enabled) == "A" && KnobWriter.read(extra) == "X")
        #expect(Set(try journal.entries().map(\.original)) == ["orig-enabled", "orig-extra"])
        // b does not set `extra`: it goes back to its original value.
        try platform.activate(b)
        #expect(KnobWriter.read(enabled) == "B" && KnobWriter.read(extra) == "orig-extra")
        try platform.restoreAll()
        #expect(KnobWriter.read(enabled) == "orig-enabled" && KnobWriter.read(extra) == "orig-extra")
        #expect(try journal.entries().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: journal.path))
    }

    @Test func journalRecoversAfterAKilledOwner() throws {
        let dir = Fixtures.temporaryDirectory()
        let knob = knobFile(dir, "enabled", "never\n")
        let path = dir + "/journal.json"
        // A journal left by a process that no longer exists (pid 2^22 − 1 is above pid_max here).
        let stale =
            #"{"ownerPID":4194303,"ownerStart":1,"entries":[{"path":"\#(knob)","original":"madvise"}],"processGroups":[]}"#
        FileManager.default.createFile(atPath: path, contents: Data(stale.utf8))
        let restored = try KnobJournal(path: path).recover()
        #expect(restored.map(\.path) == [knob])
        #expect(KnobWriter.read(knob) == "madvise")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func missingKnobIsNamed() {
        let platform = LocalPlatform(
            journal: KnobJournal(path: Fixtures.temporaryDirectory() + "/j.json"), logger: Logger(label: "t"))
        let c = Configuration(name: "c", host: LayerSettings(sysfs: ["/sys/nonexistent/knob": "1"]))
        do {
            try platform.activate(c)
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .missingKnob)
            #expect(error.description.contains("/sys/nonexistent/knob"))
        }
        #expect(LocalPlatform.preflight([c]).first?.contains("/sys/nonexistent/knob") == true)
    }
}
