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
}
