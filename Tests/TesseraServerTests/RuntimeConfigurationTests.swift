import Foundation
import XCTest
import Tessera
import TesseraServer

/// One configuration, filled from a file (JSON or YAML, any subset of keys).
final class RuntimeConfigurationTests: XCTestCase {
    func write(_ text: String, ext: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-config-\(UUID().uuidString).\(ext)").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testYAMLSubsetKeepsTheOtherDefaults() throws {
        let path = try write("""
            server:
              port: 9000
              drain_seconds: 5
            engine:
              max_sequences: 8
              max_running_per_tenant: 2
              tenant_weights: {acme: 2}
            model:
              kv_precision: f32
              weight_memory_mib: 64
            """, ext: "yaml")
        let c = try RuntimeConfiguration.load(file: path)
        XCTAssertEqual(c.server.port, 9000)
        XCTAssertEqual(c.server.drainSeconds, 5)
        XCTAssertEqual(c.server.host, "127.0.0.1")
        XCTAssertEqual(c.engine.maxSequences, 8)
        XCTAssertEqual(c.engine.maxRunningPerTenant, 2)
        XCTAssertEqual(c.engine.tenantWeights, ["acme": 2])
        XCTAssertEqual(c.engine.maxBatchTokens, EngineConfiguration().maxBatchTokens)
        XCTAssertEqual(c.model.kvPrecision, .f32)
        XCTAssertEqual(c.model.weightMemoryMiB, 64)
    }

    func testJSONAndErrorsThatNameTheField() throws {
        let ok = try RuntimeConfiguration.load(file: try write(#"{"adapters": {"max_adapters": 3}}"#, ext: "json"))
        XCTAssertEqual(ok.adapters.maxAdapters, 3)
        func field(_ text: String, _ ext: String = "json") throws -> String? {
            do { _ = try RuntimeConfiguration.load(file: try write(text, ext: ext)); return nil } catch let e as ConfigurationError { return e.field }
        }
        XCTAssertEqual(try field(#"{"server": {"prot": 1}}"#), "server.prot")
        XCTAssertEqual(try field(#"{"serverx": {}}"#), "serverx")
        XCTAssertEqual(try field(#"{"server": {"port": "eighty"}}"#), "server.port")
        XCTAssertEqual(try field("engine:\n  max_sequences: 0\n", "yaml"), "engine")
        XCTAssertEqual(try field(#"{"model": {"kv_precision": "f8"}}"#), "model.kv_precision")
        XCTAssertEqual(try field(#"{"model": {"row_limits": {"stored": -1}}}"#), "model.row_limits.stored")
        XCTAssertEqual(try field(#"{"model": {"row_limits": {"few": 1}}}"#), "model.row_limits.few")
    }

    func testMatmulRowLimitsComeFromTheConfigurationNotAGlobal() throws {
        let c = try RuntimeConfiguration.load(file: try write(#"{"model": {"row_limits": {"few_rows": 4, "interleaved": 64}}}"#, ext: "json"))
        XCTAssertEqual(c.model.rowLimits, MatmulRowLimits(fewRows: 4, stored: MatmulRowLimits().stored, interleaved: 64))
        XCTAssertEqual(c.model.loadOptions.rowLimits, c.model.rowLimits)
        XCTAssertNil(RuntimeConfiguration().model.rowLimits.interleaved, "no limit for interleaved matrices by default")
    }
}
