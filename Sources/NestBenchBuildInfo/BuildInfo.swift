/// What NestBench was built from: the git commit (embedded at build time by
/// Plugins/BuildInfoPlugin) and a version derived from it.
public enum BuildInfo {
    /// The full commit hash, or "unknown" when built outside a git checkout.
    public static var commit: String { gitCommit }

    /// `git describe --tags` when the checkout has tags (`v1.2-3-gabc1234`), else the short
    /// commit (`gabc1234`, as `git describe --always` names it), else "unknown".
    public static var version: String {
        if !gitDescribe.isEmpty { return gitDescribe }
        return gitCommit == "unknown" ? "unknown" : "g" + gitCommit.prefix(7)
    }

    /// The automatic tags `nestbench.version` and `nestbench.commit`.
    public static var tags: [String: String] { ["nestbench.version": version, "nestbench.commit": commit] }
}
