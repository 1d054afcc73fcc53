import Foundation
import Testing

/// An experiment none of whose cells can run is an error before anything changes; one where some
/// cannot says so up front and exits 3.
@Suite("availability end to end") struct AvailabilityTests {
    static func experiment(root: String, extraWorkload: String = "", knobs: Bool) -> String {
        let host = knobs ? "\n    host: {thp: {enabled: always}}" : ""
        return """
            name: availability
            baseline: a
            configurations:
              a:
                platform: local\(host)
              b:
                platform: local\(host)
            workloads:
              - {name: canneal, suite: parsec, params: {size: test, root: \(root)}, timeout: 60s}
            \(extraWorkload)
            conditions:
              clean: {}
            repetitions: {min: 2, max: 2}
            """
    }

    @Test(.timeLimit(.minutes(1)))
    func nothingToRunFailsBeforeAnyChange() throws {
        let dir = CLI.temporaryDirectory()
        CLI.write(Self.experiment(root: dir + "/no-parsec", knobs: true), to: dir + "/e.yaml")
        let before = CLI.thp()
        let r = try CLI.run(["run", dir + "/e.yaml", "--results", dir + "/results"], state: dir + "/state")
        #expect(r.status == 1)
        #expect(r.stderr.contains("no cell of the experiment can run here"), "\(r.stderr)")
        #expect(r.stderr.contains("canneal") && r.stderr.contains("not built"), "\(r.stderr)")
        #expect(CLI.thp() == before, "THP untouched")
        let list = try CLI.run(["list", "--results", dir + "/results"], state: dir + "/state")
        #expect(!list.stdout.contains("availability"), "no experiment run stored: \(list.stdout)")
        let dry = try CLI.run(["run", dir + "/e.yaml", "--dry-run"], state: dir + "/state")
        #expect(dry.status == 1 && dry.stderr.contains("cannot run here"))
    }

    @Test(.timeLimit(.minutes(2)))
    func someUnavailableSaidUpFrontAndExit3() throws {
        let dir = CLI.temporaryDirectory()
        let micro =
            "  - {name: random-access, suite: micro, label: micro, params: {size: 16MiB, ops: 200000}, timeout: 60s}"
        CLI.write(Self.experiment(root: dir + "/no-parsec", extraWorkload: micro, knobs: false), to: dir + "/e.yaml")
        let dry = try CLI.run(["run", dir + "/e.yaml", "--dry-run"], state: dir + "/state")
        #expect(dry.status == 3 && dry.stderr.contains("workload canneal cannot run here"), "\(dry.stderr)")
        let r = try CLI.run(
            ["run", dir + "/e.yaml", "--results", dir + "/results", "--fixed-repetitions"], state: dir + "/state")
        #expect(r.status == 3, "\(r.stderr)")
        let upFront = try #require(r.stderr.range(of: "workload canneal cannot run here"))
        let firstRun = r.stderr.range(of: "experiment run started")
        #expect(firstRun == nil || upFront.lowerBound < firstRun!.lowerBound, "said before the runs")
    }
}
