import Foundation
import PackagePlugin

/// Embeds the git commit NestBench is built from: before every build, `git log -1` writes
/// `GitInfo.swift` (commit, `git describe --tags`) into the plugin's work directory, which the
/// target compiles. Built outside a git checkout (a source archive), the commit is "unknown".
@main
struct BuildInfoPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) async throws -> [Command] {
        let output = context.pluginWorkDirectoryURL.appending(path: "GitInfo")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        let file = output.appending(path: "GitInfo.swift")
        let package = context.package.directoryURL
        let git = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
            .map { URL(fileURLWithPath: String($0)).appending(path: "git") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
        guard let git, FileManager.default.fileExists(atPath: package.appending(path: ".git").path) else {
            let unknown = """
                // Built outside a git checkout: the commit is not known.
                let gitCommit = "unknown"
                let gitDescribe = ""

                """
            if (try? String(contentsOf: file, encoding: .utf8)) != unknown {
                try unknown.write(to: file, atomically: true, encoding: .utf8)
            }
            return [
                .prebuildCommand(
                    displayName: "NestBench build info (no git checkout)", executable: URL(fileURLWithPath: "/usr/bin/env"),
                    arguments: ["true"], outputFilesDirectory: output)
            ]
        }
        let format = [
            "// Generated before the build by `git log -1` (Plugins/BuildInfoPlugin).",
            "let gitCommit = \"%H\"", "let gitDescribe = \"%(describe:tags=true)\"", "",
        ].joined(separator: "%n")
        return [
            .prebuildCommand(
                displayName: "NestBench build info from git", executable: git,
                arguments: [
                    "-c", "safe.directory=*", "-C", package.path, "log", "-1", "--no-show-signature", "--format=" + format,
                    "--output=" + file.path,
                ], outputFilesDirectory: output)
        ]
    }
}
