import Foundation
import NestBenchFuzz

// A bounded mutation fuzzer (`make fuzz`): nestbench-fuzz TARGET SECONDS CORPUS_DIR [SEED_FILE…]
// Mutates the target's seeds, the corpus and the given files (bit flips, byte and
// interesting-number insertions, duplications, splices) for SECONDS. A trap in the parser is
// caught by a signal handler that writes the input to CORPUS_DIR/crash-<n> (a regression input
// that `make test` replays) and exits 1.

nonisolated(unsafe) var currentInput = UnsafeMutablePointer<UInt8>.allocate(capacity: 1 << 22)
nonisolated(unsafe) var currentCount = 0
nonisolated(unsafe) var crashPath: UnsafeMutablePointer<CChar>? = nil

let arguments = CommandLine.arguments
guard arguments.count >= 4, let target = FuzzTarget.named(arguments[1]), let seconds = Double(arguments[2]) else {
    FileHandle.standardError.write(
        Data("usage: nestbench-fuzz TARGET SECONDS CORPUS_DIR [FILE…]; targets: \(FuzzTarget.all.map(\.name))\n".utf8))
    exit(2)
}
let corpusDirectory = arguments[3]
try? FileManager.default.createDirectory(atPath: corpusDirectory, withIntermediateDirectories: true)
crashPath = strdup("\(corpusDirectory)/crash-\(getpid())")

for sig in [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGABRT, SIGFPE] {
    signal(sig) { s in
        // Async-signal-safe: open, write, _exit.
        let fd = open(crashPath!, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if fd >= 0 {
            _ = write(fd, currentInput, currentCount)
            close(fd)
        }
        let message = "nestbench-fuzz: the target trapped (signal \(s)); input kept\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        _exit(1)
    }
}

var pool: [[UInt8]] = target.seeds
for path in (try? FileManager.default.contentsOfDirectory(atPath: corpusDirectory)) ?? [] {
    if let data = FileManager.default.contents(atPath: "\(corpusDirectory)/\(path)") { pool.append(Array(data)) }
}
for path in arguments.dropFirst(4) {
    if let data = FileManager.default.contents(atPath: path) { pool.append(Array(data.prefix(1 << 20))) }
}
if pool.isEmpty { pool = [Array("{}".utf8)] }

var rng = SystemRandomNumberGenerator()
let interesting: [[UInt8]] = [
    Array("0".utf8), Array("-1".utf8), Array("9223372036854775807".utf8), Array("9223372036854775808".utf8),
    Array("18446744073709551615".utf8), Array("1152921504606846976".utf8), Array("1e308".utf8), Array("nan".utf8),
    Array("-0-9223372036854775807".utf8), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], [0, 0, 0, 0, 0, 0, 0, 0x80],
    Array("\r\n".utf8), Array(": ".utf8), Array("\n".utf8), Array(" 4294967296".utf8),
]

@MainActor func mutate(_ input: [UInt8]) -> [UInt8] {
    var data = input
    for _ in 0..<Int.random(in: 1...4, using: &rng) {
        switch Int.random(in: 0..<7, using: &rng) {
        case 0 where !data.isEmpty:
            let i = Int.random(in: 0..<data.count, using: &rng)
            data[i] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
        case 1:
            let i = Int.random(in: 0...data.count, using: &rng)
            data.insert(contentsOf: interesting.randomElement(using: &rng)!, at: i)
        case 2 where !data.isEmpty:
            let i = Int.random(in: 0..<data.count, using: &rng)
            let n = Int.random(in: 1...Swift.min(64, data.count - i), using: &rng)
            data.removeSubrange(i..<(i + n))
        case 3 where !data.isEmpty:
            let i = Int.random(in: 0..<data.count, using: &rng)
            let n = Int.random(in: 1...Swift.min(256, data.count - i), using: &rng)
            let at = Int.random(in: 0...data.count, using: &rng)
            data.insert(contentsOf: data[i..<(i + n)], at: at)
        case 4:
            let other = pool.randomElement(using: &rng)!
            if !other.isEmpty {
                let cut = Int.random(in: 0...data.count, using: &rng)
                let from = Int.random(in: 0..<other.count, using: &rng)
                data = Array(data[..<cut]) + other[from...]
            }
        case 5 where !data.isEmpty:
            let i = Int.random(in: 0..<data.count, using: &rng)
            data[i] = UInt8.random(in: 0...255, using: &rng)
        default:
            let i = Int.random(in: 0...data.count, using: &rng)
            data.insert(UInt8.random(in: 0x20...0x7e, using: &rng), at: i)
        }
    }
    return Array(data.prefix(1 << 22))
}

let deadline = Date().addingTimeInterval(seconds)
var executions = 0
while Date() < deadline {
    let input = mutate(pool.randomElement(using: &rng)!)
    input.withUnsafeBufferPointer { currentInput.update(from: $0.baseAddress!, count: $0.count) }
    currentCount = input.count
    target.run(input)
    executions += 1
    if executions % 64 == 0 && pool.count < 512 { pool.append(input) }
}
print("nestbench-fuzz \(target.name): \(executions) inputs in \(Int(seconds))s, no crash")
