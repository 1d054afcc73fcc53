import Foundation
import NestBenchCollectors

/// Cost of one FMFI sample (read + parse /proc/buddyinfo), against the reference of only reading
/// the file — what a monitor pays per sample beyond the kernel's own work.
enum FMFIParseBenchmark {
    static func run() async throws {
        let iterations = 2000
        let read = measure(iterations: iterations) { _ = KernelFile.read("/proc/buddyinfo") }
        var sink = 0.0
        let parse = try measure(iterations: iterations) {
            sink += try Buddyinfo.live().machineFMFI(order: 9)
        }
        print(describe("read /proc/buddyinfo (reference)", read))
        print(describe("read + parse + FMFI(9)", parse))
        print(String(format: "ratio to reference: %.2fx (sink %.1f)", median(parse) / median(read), sink))
    }
}
