import Foundation
import XCTest
@testable import Tessera

/// Fixture locations and tolerance helpers shared by the tests.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }
    static func path(_ relative: String) -> String { url(relative).path }

    static func json(_ relative: String) throws -> [String: Any] {
        let data = try Data(contentsOf: url(relative))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func floats(_ relative: String) throws -> [Float] {
        let data = try Data(contentsOf: url(relative))
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// The default model, fetched if missing (the test command pulls it first).
    static func defaultModelPath() throws -> String { try DefaultModel.ensure().path }

    /// A fresh temporary directory inside this test process's own root, which is removed when
    /// the test bundle finishes (a run leaves nothing behind in the system's temporary folder).
    static func temporaryDirectory() throws -> URL {
        let dir = TemporaryRoot.shared.url.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// The test process's temporary root, created on first use and removed at the end of the bundle.
final class TemporaryRoot: NSObject, XCTestObservation, @unchecked Sendable {  // only immutable state
    static let shared: TemporaryRoot = {
        let root = TemporaryRoot()
        XCTestObservationCenter.shared.addTestObserver(root)
        return root
    }()

    let url = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-tests-\(UUID().uuidString)")

    func testBundleDidFinish(_ testBundle: Bundle) {
        try? FileManager.default.removeItem(at: url)
    }
}

/// Largest |a[i] - b[i]|.
func maxAbsDifference(_ a: some Collection<Float>, _ b: some Collection<Float>) -> Float {
    precondition(a.count == b.count)
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// Asserts the two arrays have equal length and differ by at most `tolerance` anywhere.
func assertClose(_ actual: [Float], _ expected: [Float], tolerance: Float, _ message: String = "",
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "length \(message)", file: file, line: line)
    guard actual.count == expected.count else { return }
    let diff = maxAbsDifference(actual, expected)
    XCTAssertLessThanOrEqual(diff, tolerance, "max |Δ| \(diff) > \(tolerance) \(message)", file: file, line: line)
}

/// Runs a whole sequence through the model and returns the logits of every position.
func allLogits(_ model: LlamaModel, tokens: [Int32], rowLimits: MatmulRowLimits? = nil) throws -> [[Float]] {
    let cache = try model.makeCache(capacity: tokens.count)
    let scratch = model.makeScratch()
    if let rowLimits { scratch.rowLimits = rowLimits }
    var batch = ForwardBatch()
    for (i, t) in tokens.enumerated() { batch.append(token: t, position: i, sequence: 0, wantLogits: true) }
    let logits = try model.forward(batch, caches: [cache], scratch: scratch)
    return (0..<tokens.count).map { logits.array($0) }
}

extension Array where Element == Any {
    var int32s: [Int32] { compactMap { ($0 as? NSNumber)?.int32Value } }
    var floats: [Float] { compactMap { ($0 as? NSNumber)?.floatValue } }
}

/// One run of the built `tessera` binary.
struct CLIRun {
    let status: Int32
    let stdout: Data
    let stderr: String
    var json: [String: Any]? { try? JSONSerialization.jsonObject(with: stdout) as? [String: Any] }
}

var tesseraBinary: URL {
    let candidates = [
        Bundle(for: CLIContractTests.self).bundleURL.deletingLastPathComponent().appendingPathComponent("tessera"),
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/tessera"),
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]
}

/// Runs the built `tessera` with `arguments`, capturing its output.
func runTessera(_ arguments: [String]) throws -> CLIRun {
    let p = Process()
    p.executableURL = tesseraBinary
    p.arguments = arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return CLIRun(status: p.terminationStatus, stdout: o, stderr: String(decoding: e, as: UTF8.self))
}


/// Logits of a whole sequence with one adapter on every row.
func loraLogits(_ model: LlamaModel, _ adapter: LoRAAdapter?, _ tokens: [Int32], kernel: LoRAKernel = .automatic) throws -> [[Float]] {
    let cache = try model.makeCache(capacity: tokens.count)
    let scratch = model.makeScratch()
    scratch.loraKernel = kernel
    var batch = ForwardBatch()
    for (i, t) in tokens.enumerated() {
        batch.append(token: t, position: i, sequence: 0, wantLogits: true, adapter: adapter == nil ? nil : 0)
    }
    let out = try model.forward(batch, caches: [cache], adapters: adapter.map { [$0] } ?? [], scratch: scratch)
    return (0..<tokens.count).map { out.array($0) }
}


/// A fixture's list of top logits, `[[id, value], ...]`.
func topLogits(_ entries: Any?) throws -> [(id: Int, value: Float)] {
    try XCTUnwrap(entries as? [[Any]]).map { entry in
        (try XCTUnwrap((entry.first as? NSNumber)?.intValue), try XCTUnwrap((entry.last as? NSNumber)?.floatValue))
    }
}
