import Foundation

/// Paths of the shared fixtures (../shared beside the project).
enum Fixtures {
    static let root: String = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { dir.deleteLastPathComponent() }
        return dir.deletingLastPathComponent().appendingPathComponent("shared/fixtures").path
    }()

    static var available: Bool { FileManager.default.fileExists(atPath: root) }

    static func path(_ relative: String) -> String { root + "/" + relative }

    static func text(_ relative: String) throws -> String {
        try String(contentsOfFile: path(relative), encoding: .utf8)
    }

    static let procfsStates = ["idle", "frag16g-stride2", "frag12g-stride8", "after"]

    /// A fresh temporary directory.
    static func temporaryDirectory() -> String {
        let dir = NSTemporaryDirectory() + "nestbench-test-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}
