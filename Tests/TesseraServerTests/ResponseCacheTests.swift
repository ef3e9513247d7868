import Foundation
import NIOCore
import XCTest
@testable import TesseraServer

/// The response cache's bookkeeping: keys, the byte budget in LRU order, the TTL, multipart parsing.
final class ResponseCacheTests: XCTestCase {
    func result(_ text: String) -> TesseraServer.ChoiceResult {
        var r = TesseraServer.ChoiceResult()
        r.text = text
        r.complete = true
        return r
    }

    func put(_ cache: ResponseCache, _ key: String, bytes: Int) {
        cache.insert(key, body: Data(repeating: 65, count: bytes), results: [result(key)], id: "id-\(key)", created: 1)
    }

    func testKeysDifferByTenantAndEveryPart() {
        let a = ResponseCache.key(tenantId: 1, parts: ["adapter", "1", "1,2,3"])
        XCTAssertEqual(a, ResponseCache.key(tenantId: 1, parts: ["adapter", "1", "1,2,3"]))
        XCTAssertNotEqual(a, ResponseCache.key(tenantId: 2, parts: ["adapter", "1", "1,2,3"]), "another tenant")
        XCTAssertNotEqual(a, ResponseCache.key(tenantId: 1, parts: ["adapter", "2", "1,2,3"]), "another adapter version")
        // Parts are separated: moving a boundary changes the key.
        XCTAssertNotEqual(ResponseCache.key(tenantId: 1, parts: ["ab", "c"]), ResponseCache.key(tenantId: 1, parts: ["a", "bc"]))
    }

    func testTheBudgetEvictsTheLeastRecentlyUsed() throws {
        let cache = ResponseCache(budgetBytes: 3000, ttlSeconds: 60)
        put(cache, "a", bytes: 700)
        put(cache, "b", bytes: 700)
        put(cache, "c", bytes: 700)
        XCTAssertEqual(cache.statistics.entries, 3)
        XCTAssertNotNil(cache.lookup("a"), "a is now the most recently used")
        put(cache, "d", bytes: 700)  // past 3000 bytes with the overheads: b goes, not a
        XCTAssertNil(cache.lookup("b"))
        XCTAssertEqual(try XCTUnwrap(cache.lookup("a")).body.count, 700)
        XCTAssertNotNil(cache.lookup("c"))
        XCTAssertNotNil(cache.lookup("d"))
        XCTAssertLessThanOrEqual(cache.statistics.bytes, 3000)
        XCTAssertEqual(cache.statistics.evictions, 1)
        // Larger than the whole budget: not kept, nothing else lost.
        put(cache, "huge", bytes: 5000)
        XCTAssertNil(cache.lookup("huge"))
        XCTAssertEqual(cache.statistics.entries, 3)
    }

    func testEntriesExpireAfterTheirTTL() throws {
        let cache = ResponseCache(budgetBytes: 1 << 20, ttlSeconds: 0.05)
        put(cache, "a", bytes: 10)
        XCTAssertNotNil(cache.lookup("a"))
        Thread.sleep(forTimeInterval: 0.1)
        XCTAssertNil(cache.lookup("a"))
        XCTAssertEqual(cache.statistics.entries, 0)
        XCTAssertEqual(cache.statistics.bytes, 0)
    }

    func testAZeroBudgetKeepsNothing() {
        let cache = ResponseCache(budgetBytes: 0, ttlSeconds: 60)
        XCTAssertFalse(cache.enabled)
        put(cache, "a", bytes: 10)
        XCTAssertNil(cache.lookup("a"))
    }

    func testMultipartPartsByName() throws {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nmy-style\r\n"
            + "--XyZ\r\nContent-Disposition: form-data; name=\"adapter_config.json\"; filename=\"adapter_config.json\"\r\n"
            + "Content-Type: application/json\r\n\r\n{\"r\": 8}\r\n--XyZ--\r\n"
        XCTAssertEqual(TesseraServer.multipartBoundary("multipart/form-data; boundary=XyZ"), "XyZ")
        XCTAssertEqual(TesseraServer.multipartBoundary("multipart/form-data; boundary=\"XyZ\""), "XyZ")
        XCTAssertNil(TesseraServer.multipartBoundary("multipart/form-data"))
        let parts = try TesseraServer.multipartParts(.init(string: body), boundary: "XyZ")
        XCTAssertEqual(parts["name"].map { String(buffer: $0) }, "my-style")
        XCTAssertEqual(parts["adapter_config.json"].map { String(buffer: $0) }, "{\"r\": 8}")
        XCTAssertNil(parts["adapter_model.safetensors"])
        // No boundary at all: no parts (the upload then names the missing field).
        XCTAssertEqual(try TesseraServer.multipartParts(.init(string: "garbage without a boundary"), boundary: "XyZ").count, 0)
    }
}
