import Foundation
import Synchronization
import Testing

/// SIGINT/SIGTERM at random moments of `nestbench run`, then every knob the experiment sets is
/// checked against its value before. The knobs are two printk rate-limit sysctls that nothing
/// else in NestBench (or its other tests) touches and that are harmless to flip; the state
/// directory (knob journal) and the result store are private to each trial.
///
/// `make test`: NESTBENCH_STRESS_TRIALS (default 200) trials or NESTBENCH_STRESS_SECONDS (default
/// 240), whichever comes first (`make check`: 40 trials or 60 s); `make stress` runs 1,000 trials.
extension MachineSuite {
    @Suite("InterruptStress")
    struct InterruptStress {
        static let knobs = ["/proc/sys/kernel/printk_ratelimit", "/proc/sys/kernel/printk_ratelimit_burst"]

        static var canWriteKnobs: Bool {
            getuid() == 0 && knobs.allSatisfy { FileManager.default.isWritableFile(atPath: $0) }
        }

        static func read(_ path: String) -> String {
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        }

        /// Two configurations that each move both knobs away from their current values.
        static func experiment(originals: [String]) -> String {
            let base = originals.map { Int($0) ?? 0 }
            return """
                name: stress
                baseline: a
                seed: 3
                configurations:
                  a:
                    host: {sysctl: {kernel.printk_ratelimit: "\(base[0] + 1)", kernel.printk_ratelimit_burst: "\(base[1] + 1)"}}
                  b:
                    host: {sysctl: {kernel.printk_ratelimit: "\(base[0] + 2)", kernel.printk_ratelimit_burst: "\(base[1] + 2)"}}
                workloads:
                  - {name: random-access, suite: micro, params: {size: 4MiB, ops: 20000}, timeout: 30s}
                repetitions: {min: 2, max: 2}
                """
        }

        struct Trial {
            var status: Int32
            var signaled: Bool
            var stderr: String
        }

        static func trial(dir: String, delay: Duration?, signal: Int32) throws -> Trial {
            let (p, out, err) = try CLI.start(
                ["run", dir + "/e.yaml", "--results", dir + "/res", "--fixed-repetitions"], state: dir + "/state")
            let errData = Mutex(Data())
            let reader = Thread {
                let d = err.fileHandleForReading.readDataToEndOfFile()
                errData.withLock { $0 = d }
            }
            reader.start()
            if let delay {
                Thread.sleep(forTimeInterval: Double(delay.components.attoseconds) / 1e18 + Double(delay.components.seconds))
                kill(p.processIdentifier, signal)
            }
            _ = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            while !reader.isFinished { Thread.sleep(forTimeInterval: 0.005) }
            return Trial(
                status: p.terminationStatus, signaled: p.terminationReason == .uncaughtSignal,
                stderr: String(decoding: errData.withLock { $0 }, as: UTF8.self))
        }

        @Test(.timeLimit(.minutes(30)), .enabled(if: canWriteKnobs, "writes /proc/sys/kernel/printk_ratelimit*: needs root"))
        func randomInterruptsAlwaysRestoreEveryKnob() throws {
            let env = ProcessInfo.processInfo.environment
            // `make check` (NESTBENCH_SKIP_VM=1) is the quick loop: fewer trials by default.
            let quick = env["NESTBENCH_SKIP_VM"] == "1"
            let maxTrials = env["NESTBENCH_STRESS_TRIALS"].flatMap(Int.init) ?? (quick ? 40 : 200)
            let budget = Double(env["NESTBENCH_STRESS_SECONDS"].flatMap(Int.init) ?? (quick ? 60 : 240))
            let originals = Self.knobs.map(Self.read)
            let root = CLI.temporaryDirectory()
            // One uninterrupted run: how long a whole experiment takes (the range of signal times).
            let calibrate = root + "/calibrate"
            try FileManager.default.createDirectory(atPath: calibrate, withIntermediateDirectories: true)
            CLI.write(Self.experiment(originals: originals), to: calibrate + "/e.yaml")
            let started = Date()
            let full = try Self.trial(dir: calibrate, delay: nil, signal: 0)
            try #require(full.status == 0, "an uninterrupted run passes: \(full.stderr)")
            // A second one: the first may have compiled the harness.
            let again = Date()
            _ = try Self.trial(dir: calibrate, delay: nil, signal: 0)
            let span = Date().timeIntervalSince(again) * 0.9
            #expect(Self.knobs.map(Self.read) == originals)

            let deadline = Date().addingTimeInterval(budget)
            var trials = 0
            var outcomes: [String: Int] = [:]
            var failures: [String] = []
            while trials < maxTrials && Date() < deadline && failures.count < 5 {
                let dir = root + "/t\(trials)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                CLI.write(Self.experiment(originals: originals), to: dir + "/e.yaml")
                let signal = Bool.random() ? SIGINT : SIGTERM
                let delayMillis = Int.random(in: 0...Int(span * 1000))
                let t = try Self.trial(dir: dir, delay: .milliseconds(delayMillis), signal: signal)
                trials += 1
                let now = Self.knobs.map(Self.read)
                let journalLeft = FileManager.default.fileExists(atPath: dir + "/state/knob-journal.json")
                let list = try CLI.run(["list", "--results", dir + "/res"], state: dir + "/other")
                let statuses = list.stdout.split(separator: "\n").map { $0.split(separator: "\t") }.compactMap {
                    $0.count > 3 ? String($0[3]) : nil
                }
                let outcome = t.signaled ? "killed by signal \(t.status) before the trap" : "exit \(t.status)"
                outcomes["\(outcome) \(statuses.joined(separator: ","))", default: 0] += 1
                var problems: [String] = []
                if now != originals { problems.append("knobs \(now) != \(originals)") }
                if journalLeft { problems.append("the knob journal was left behind") }
                if statuses.contains("running") { problems.append("an experiment run was left running") }
                if t.signaled {
                    // Before the handlers are installed the default action ends nestbench: nothing
                    // had been changed or stored yet.
                    if !statuses.isEmpty { problems.append("died of signal \(t.status) after storing \(statuses)") }
                } else if t.status == 128 + signal {
                    if !(statuses.allSatisfy { $0 == "interrupted" || $0 == "completed" }) {
                        problems.append("exit \(t.status) with statuses \(statuses)")
                    }
                } else if t.status == 0 {
                    if statuses != ["completed"] { problems.append("exit 0 with statuses \(statuses)") }
                } else {
                    problems.append("unexpected exit \(t.status)")
                }
                if !problems.isEmpty {
                    failures.append(
                        "trial \(trials) (signal \(signal) at \(delayMillis) ms): \(problems); stderr: \(t.stderr.suffix(600))")
                    // Put the knobs back for the next trial and the rest of the machine.
                    for (path, value) in zip(Self.knobs, originals) {
                        if let h = FileHandle(forWritingAtPath: path) {
                            h.write(Data(value.utf8))
                            try? h.close()
                        }
                    }
                }
                try? FileManager.default.removeItem(atPath: dir)
            }
            print("interrupt stress: \(trials) trials in \(Int(Date().timeIntervalSince(started)))s; outcomes: \(outcomes)")
            #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
            #expect(
                trials >= Swift.min(maxTrials, quick ? 20 : 100),
                "ran \(trials) trials (wanted \(maxTrials) within \(Int(budget))s)")
            let interrupted = outcomes.filter { $0.key.hasPrefix("exit 130") || $0.key.hasPrefix("exit 143") }.values.reduce(0, +)
            #expect(interrupted > 0, "some trials were interrupted mid-experiment: \(outcomes)")
        }
    }
}
