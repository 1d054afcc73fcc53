import Foundation
import NestBenchModel
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

    @Test func pinnedCompactionKnobs() {
        let knobs = FragmentationSpec(targetFMFI: 0.9).knobs
        #expect(knobs.map(\.path) == ["/proc/sys/vm/compact_unevictable_allowed", "/proc/sys/vm/compaction_proactiveness"])
        #expect(knobs.allSatisfy { $0.value == "0" })
    }
}
