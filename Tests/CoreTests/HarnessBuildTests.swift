import Foundation
import NestBenchProcess
import Testing

/// The C harness is compiled on first use into a cache keyed by the source's hash.
@Suite("Harness build cache")
struct HarnessBuildTests {
    /// Tests (and an experiment's places) of one process may ask for the same program at once
    /// on a fresh cache, as in a fresh clone's CI: every caller gets the installed program, and
    /// no build's temporary file or log is left behind.
    @Test func concurrentBuildsOfOneProgramAllSucceed() async throws {
        let dir = Fixtures.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/harness/t", withIntermediateDirectories: true)
        try "int main(void) { return 7; }\n".write(toFile: dir + "/harness/t/nb-t.c", atomically: true, encoding: .utf8)
        let harness = HarnessLocator(harnessDirectory: dir + "/harness", cacheDirectory: dir + "/cache")
        let paths = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<6 { group.addTask { try await harness.program("t/nb-t.c", name: "nb-t") } }
            var all: [String] = []
            for try await p in group { all.append(p) }
            return all
        }
        #expect(Set(paths).count == 1, "\(paths)")
        let binary = try #require(paths.first)
        let outcome = try await ProcessRunner.run(ProcessSpec(program: binary, arguments: []))
        #expect(outcome.exitStatus == 7)
        let left = try FileManager.default.contentsOfDirectory(atPath: (binary as NSString).deletingLastPathComponent)
        #expect(left == ["nb-t"], "\(left)")
    }
}
