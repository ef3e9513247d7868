import Foundation
import XCTest
@testable import TesseraServer

/// The embedded SQLite storage, on a real file.
final class StorageTests: XCTestCase {
    func makeStorage() throws -> (SQLiteStorage, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-storage-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return (try SQLiteStorage(directory: dir), dir)
    }

    func testAKeyFindsItsTenantAndOnlyItsHashIsStored() async throws {
        let (s, dir) = try makeStorage()
        let k = APIKey.generate()
        XCTAssertTrue(k.key.hasPrefix("tsr_"))
        XCTAssertEqual(k.hash.count, 32)
        let t = try await s.addTenant(name: "acme", role: .tenant, keyHash: k.hash, keyPrefix: k.displayPrefix)
        let p = try await s.principal(forKeyHash: APIKey.hash(k.key))
        XCTAssertEqual(p?.tenant, "acme")
        XCTAssertEqual(p?.tenantId, t.id)
        XCTAssertEqual(p?.role, .tenant)
        let nobody = try await s.principal(forKeyHash: APIKey.hash(k.key + "x"))
        XCTAssertNil(nobody)
        let bytes = try FileManager.default.contentsOfDirectory(atPath: dir).compactMap { FileManager.default.contents(atPath: "\(dir)/\($0)") }
        for b in bytes { XCTAssertNil(b.range(of: Data(k.key.utf8)), "the key itself is never written") }
    }

    func testDuplicateTenantIsRefusedByName() async throws {
        let (s, _) = try makeStorage()
        _ = try await s.addTenant(name: "acme", role: .tenant, keyHash: APIKey.generate().hash, keyPrefix: "tsr_")
        do {
            _ = try await s.addTenant(name: "acme", role: .admin, keyHash: APIKey.generate().hash, keyPrefix: "tsr_")
            XCTFail("expected tenantExists")
        } catch let e as StorageError { XCTAssertEqual(e, .tenantExists("acme")) }
    }

    func testRotationRevokesTheOldKeyAndRemovalEverything() async throws {
        let (s, _) = try makeStorage()
        let old = APIKey.generate(), new = APIKey.generate()
        _ = try await s.addTenant(name: "acme", role: .tenant, keyHash: old.hash, keyPrefix: "tsr_")
        _ = try await s.rotateKey(tenant: "acme", keyHash: new.hash, keyPrefix: "tsr_")
        let stale = try await s.principal(forKeyHash: old.hash)
        XCTAssertNil(stale)
        let fresh = try await s.principal(forKeyHash: new.hash)
        XCTAssertEqual(fresh?.tenant, "acme")
        try await s.saveAdapter(AdapterRecord(name: "a", version: 3, owner: "acme", path: "/x", sha256: "ab", format: "peft", ranks: [8],
                                              targets: ["q_proj"], layers: [0], byteCount: 10, createdAt: Date()))
        try await s.saveAdapter(AdapterRecord(name: "shared", version: 1, owner: nil, path: "/y", sha256: "cd", format: "peft", ranks: [8],
                                              targets: ["q_proj"], layers: [0], byteCount: 10, createdAt: Date()))
        let saved = try await s.adapters()
        XCTAssertEqual(saved.map(\.name), ["a", "shared"])
        XCTAssertEqual(saved[0].version, 3)
        XCTAssertEqual(saved[0].owner, "acme")
        try await s.removeTenant(name: "acme")
        let afterRemoval = try await s.principal(forKeyHash: new.hash)
        XCTAssertNil(afterRemoval)
        let left = try await s.adapters()
        XCTAssertEqual(left.map(\.name), ["shared"], "a removed tenant's adapters go with it")
    }

    func testAnAdapterOwnerMustExist() async throws {
        let (s, _) = try makeStorage()
        do {
            try await s.saveAdapter(AdapterRecord(name: "a", version: 1, owner: "ghost", path: "/x", sha256: "ab", format: "peft", ranks: [8],
                                                  targets: [], layers: [], byteCount: 1, createdAt: Date()))
            XCTFail("expected ownerNotFound")
        } catch let e as StorageError { XCTAssertEqual(e, .ownerNotFound("ghost")) }
    }

    func testConstantTimeCompare() {
        XCTAssertTrue(APIKey.constantTimeEqual(Data([1, 2, 3]), Data([1, 2, 3])))
        XCTAssertFalse(APIKey.constantTimeEqual(Data([1, 2, 3]), Data([1, 2, 4])))
        XCTAssertFalse(APIKey.constantTimeEqual(Data([1, 2, 3]), Data([1, 2])))
    }

    func testLedgerRowsAreWrittenOnceAndReportedPerTenantAdapterAndDay() async throws {
        let (s, _) = try makeStorage()
        let a = try await s.addTenant(name: "a", role: .tenant, keyHash: APIKey.generate().hash, keyPrefix: "tsr_a")
        let b = try await s.addTenant(name: "b", role: .tenant, keyHash: APIKey.generate().hash, keyPrefix: "tsr_b")
        func row(_ id: String, _ t: TenantRecord, adapter: String?, p: Int, c: Int, cached: Bool = false) -> UsageRecord {
            UsageRecord(requestId: id, tenantId: t.id, keyId: 1, adapter: adapter, adapterVersion: adapter == nil ? nil : 1, promptTokens: p,
                        cachedPromptTokens: 0, completionTokens: c, finishReason: "stop", status: 200, queueMs: 1, ttftMs: 2, totalMs: 3,
                        cachedResponse: cached, promptLayerVersion: nil)
        }
        try await s.recordUsage([row("r1", a, adapter: nil, p: 10, c: 5), row("r2", a, adapter: "x", p: 7, c: 3), row("r3", b, adapter: "x", p: 1, c: 1, cached: true)])
        try await s.recordUsage([row("r1", a, adapter: nil, p: 10, c: 5)])  // the same request again: kept once
        let byTenant = try await s.usageReport(UsageQuery(by: .tenant))
        XCTAssertEqual(byTenant.map(\.key), ["a", "b"])
        XCTAssertEqual(byTenant.map(\.requests), [2, 1])
        XCTAssertEqual(byTenant.map(\.promptTokens), [17, 1])
        XCTAssertEqual(byTenant.map(\.cachedResponses), [0, 1])
        let byAdapter = try await s.usageReport(UsageQuery(by: .adapter))
        XCTAssertEqual(byAdapter.map(\.key), [nil, "x"])
        let dayB = try await s.usageReport(UsageQuery(tenant: "b", by: .day))
        XCTAssertEqual(dayB.map(\.requests), [1])
        let usedA = try await s.tokensUsed(tenantId: a.id, since: Date(timeIntervalSince1970: 0))
        let usedB = try await s.tokensUsed(tenantId: b.id, since: Date(timeIntervalSince1970: 0))
        XCTAssertEqual(usedA, 25)
        XCTAssertEqual(usedB, 0, "cached responses cost no compute")
    }

    func testRemoveIsSoftLimitsPersistAndPurgeErases() async throws {
        let (s, _) = try makeStorage()
        let k = APIKey.generate()
        _ = try await s.addTenant(name: "t", role: .tenant, keyHash: k.hash, keyPrefix: k.displayPrefix)
        var l = TenantLimits()
        l.rpm = 5
        l.monthlyTokens = 1000
        try await s.setLimits(tenant: "t", l)
        let limited = try await s.principal(forKeyHash: k.hash)
        XCTAssertEqual(limited?.limits, l)
        try await s.removeTenant(name: "t")
        let removed = try await s.principal(forKeyHash: k.hash)
        XCTAssertNil(removed)
        try await s.restoreTenant(name: "t")
        let back = try await s.principal(forKeyHash: k.hash)
        XCTAssertEqual(back?.limits.rpm, 5)
        try await s.purgeTenant(name: "t")
        let gone = try await s.tenant(named: "t")
        XCTAssertNil(gone)
        l.rpm = 0
        XCTAssertEqual(l.invalidField()?.0, "rpm")
    }

    func testAuthFailuresAddUpInOneRowPerActorAndMinute() async throws {
        let (s, _) = try makeStorage()
        let minute = Date(timeIntervalSince1970: 1_800_000_000)
        for _ in 0..<3 { try await s.recordAuthFailures(actor: "key:tsr_abcd", minute: minute, count: 2) }
        try await s.recordAuthFailures(actor: "key:tsr_abcd", minute: minute.addingTimeInterval(60), count: 1)
        let entries = try await s.audit(limit: 10, since: nil)
        XCTAssertEqual(entries.map(\.result), ["6 failures", "1 failures"])
    }
}
