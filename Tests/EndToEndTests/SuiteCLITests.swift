import Foundation
import Testing

/// `nestbench lats`, `roi` and `suites` as a user runs them (read-only: no machine state).
@Suite("suite commands end to end") struct SuiteCLITests {
    static let fixtures = (CLI.packageRoot as NSString).deletingLastPathComponent + "/shared/fixtures"
    static var haveFixtures: Bool { FileManager.default.fileExists(atPath: fixtures) }

    @Test(
        .timeLimit(.minutes(1)), .enabled(if: haveFixtures, "needs ../shared/fixtures"),
        arguments: ["masstree-integrated-qps200", "masstree-integrated-qps1000", "silo-integrated-qps2000"])
    func latsJSONMatchesParselats(run: String) throws {
        let dir = "\(Self.fixtures)/tailbench/\(run)"
        let r = try CLI.run(["lats", dir + "/lats.bin", "--format", "json"], state: CLI.temporaryDirectory())
        #expect(r.status == 0)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let sojourn = try #require(json["sojourn_ms"] as? [String: Double])
        #expect(Set(sojourn.keys) == ["mean", "p50", "p95", "p99", "max"])
        #expect(json["service_ms"] != nil && json["queue_ms"] != nil && json["requests"] as? Int != nil)
        let reference = try String(contentsOfFile: dir + "/parselats.out", encoding: .utf8)
        #expect(
            reference.contains(
                String(format: "95th percentile latency %.3f ms | max latency %.3f ms", sojourn["p95"]!, sojourn["max"]!)))
    }

    @Test(.timeLimit(.minutes(1)), .enabled(if: haveFixtures, "needs ../shared/fixtures"))
    func roiOfFixtures() throws {
        let state = CLI.temporaryDirectory()
        let ok = try CLI.run(["roi", "\(Self.fixtures)/parsec/streamcluster-simsmall-n2.log"], state: state)
        #expect(ok.status == 0 && ok.stdout == "2.387\n")
        for log in ["canneal-simsmall-missing-input.log", "facesim-test-crash.log", "x264-simdev-crash.log"] {
            let r = try CLI.run(["roi", "\(Self.fixtures)/parsec/\(log)"], state: state)
            #expect(r.status == 3 && r.stdout.isEmpty)
            #expect(r.stderr.contains("no ROI time: the program crashed") && r.stderr.contains(log))
        }
        let fft = try CLI.run(["roi", "\(Self.fixtures)/parsec/splash2x-fft-simsmall-n2.log"], state: state)
        #expect(fft.status == 3 && fft.stderr.contains("does not print it"))
    }

    @Test(.timeLimit(.minutes(1)))
    func truncatedLatsFails() throws {
        let dir = CLI.temporaryDirectory()
        CLI.write(String(repeating: "x", count: 50), to: dir + "/lats.bin")
        let r = try CLI.run(["lats", dir + "/lats.bin"], state: dir)
        #expect(r.status == 1 && r.stdout.isEmpty)
        #expect(r.stderr.contains(dir + "/lats.bin") && r.stderr.contains("truncated"))
    }
}
