import XCTest
@testable import Tessera

/// The adapter store's rules: LRU eviction of unleased adapters only, a budget never exceeded,
/// hot swaps that leave running sequences on their version, owners, counters back to zero.
final class AdapterStoreTests: XCTestCase {
    let small = Fixtures.path("lora/qv-rslora")
    let big = Fixtures.path("lora/all-targets")
    lazy var base: LlamaConfig = try! LlamaModel.load(path: Fixtures.path("tiny/llama-untied/hf")).config
    lazy var smallBytes: Int = try! LoRAAdapter.load(path: small, base: base).byteCount

    func store(slots: Int = 8, budget: Int? = nil) -> AdapterStore {
        AdapterStore(base: base, configuration: .init(memoryBudgetBytes: budget ?? 1 << 30, maxAdapters: slots, maxRank: 128))
    }

    func testLeastRecentlyUsedUnleasedAdapterIsEvicted() async throws {
        let s = store(slots: 2)
        for n in ["a", "b", "c"] { try await s.register(name: n, path: small) }
        XCTAssertTrue(s.isResident("a", version: 1))
        XCTAssertTrue(s.isResident("b", version: 1))
        XCTAssertFalse(s.isResident("c", version: 1), "registration keeps weights only when they fit without evicting")
        try await s.lease("b").release()
        try await s.lease("a").release()   // a is now more recent than b
        try await s.lease("c").release()   // must evict b
        XCTAssertTrue(s.isResident("a", version: 1))
        XCTAssertFalse(s.isResident("b", version: 1))
        XCTAssertTrue(s.isResident("c", version: 1))
        XCTAssertEqual(s.statistics.evictions, 1)
        XCTAssertEqual(s.statistics.loads, 1)
    }

    func testLeasedAdapterIsNeverEvicted() async throws {
        let s = store(slots: 2)
        for n in ["a", "b", "c"] { try await s.register(name: n, path: small) }
        let a = try await s.lease("a"), b = try await s.lease("b")
        do {
            _ = try await s.lease("c")
            XCTFail("leased c with both slots pinned")
        } catch let e as AdapterError {
            XCTAssertEqual(e.reason, .noFreeSlot(maximum: 2))
        }
        XCTAssertTrue(s.isResident("a", version: 1) && s.isResident("b", version: 1))
        b.release()
        let c = try await s.lease("c")
        XCTAssertTrue(s.isResident("a", version: 1), "a is leased: never evicted")
        XCTAssertFalse(s.isResident("b", version: 1))
        a.release(); c.release()
    }

    func testBudgetIsNeverExceededUnderConcurrentUse() async throws {
        let budget = smallBytes * 5 / 2
        let s = store(slots: 100, budget: budget)
        let names = (0..<6).map { "adapter-\($0)" }
        for n in names { try await s.register(name: n, path: small) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<48 {
                group.addTask {
                    do {
                        let lease = try await s.lease(names[i % names.count])
                        XCTAssertLessThanOrEqual(s.statistics.residentBytes, budget)
                        try await Task.sleep(nanoseconds: UInt64.random(in: 0...2_000_000))
                        lease.release()
                    } catch let e as AdapterError {
                        // With at most two resident, a third concurrent adapter may find no room: a clean refusal.
                        guard case .overBudget = e.reason else { throw e }
                    }
                    XCTAssertLessThanOrEqual(s.statistics.residentBytes, budget)
                }
            }
            try await group.waitForAll()
        }
        XCTAssertLessThanOrEqual(s.statistics.residentCount, 2)
        XCTAssertEqual(s.statistics.activeLeases, 0)
    }

    func testHotSwapKeepsRunningSequencesOnTheirVersion() async throws {
        let s = store()
        try await s.register(name: "x", path: small, owner: "t")
        let running = try await s.lease("x", tenant: "t")
        XCTAssertEqual(running.version, 1)
        let r2 = try await s.register(name: "x", path: big, owner: "t")
        XCTAssertEqual(r2.version, 2)
        let fresh = try await s.lease("x", tenant: "t")
        XCTAssertEqual(fresh.version, 2)
        XCTAssertEqual(running.adapter.targets, [.q, .v], "the running sequence keeps version 1's weights")
        XCTAssertEqual(fresh.adapter.targets.count, 7)
        XCTAssertTrue(s.isResident("x", version: 1))
        running.release()
        XCTAssertFalse(s.isResident("x", version: 1), "the old version is freed with its last lease")
        fresh.release()
        XCTAssertTrue(s.isResident("x", version: 2))
    }

    func testFailedRegistrationKeepsThePreviousVersion() async throws {
        let s = store()
        try await s.register(name: "x", path: small)
        do {
            try await s.register(name: "x", path: Fixtures.path("lora/bad/nan-weights"))
            XCTFail("registered NaN weights")
        } catch is AdapterError {}
        XCTAssertEqual(s.registration("x")?.version, 1)
        let lease = try await s.lease("x")
        XCTAssertEqual(lease.version, 1)
        lease.release()
    }

    func testAnotherTenantsAdapterIsInvisible() async throws {
        let s = store()
        try await s.register(name: "private", path: small, owner: "alice")
        do {
            _ = try await s.lease("private", tenant: "bob")
            XCTFail("bob leased alice's adapter")
        } catch let e as AdapterError {
            XCTAssertEqual(e.reason, .unknownAdapter)
        }
        try await s.lease("private", tenant: "alice").release()
    }

    func testConcurrentLeasesShareOneLoad() async throws {
        let s = store(slots: 1)
        try await s.register(name: "a", path: small)
        try await s.register(name: "b", path: small)   // not resident: a holds the only slot
        let leases = try await withThrowingTaskGroup(of: AdapterLease.self) { group in
            for _ in 0..<16 { group.addTask { try await s.lease("b") } }
            return try await group.reduce(into: [AdapterLease]()) { $0.append($1) }
        }
        XCTAssertEqual(s.statistics.loads, 1)
        XCTAssertTrue(leases.allSatisfy { $0.adapter === leases[0].adapter })
        XCTAssertEqual(s.statistics.activeLeases, 16)
        leases.forEach { $0.release() }
    }

    func testCountersReturnToZero() async throws {
        let s = store()
        for n in ["a", "b"] { try await s.register(name: n, path: small) }
        let r = try await s.register(name: "c", path: big)
        XCTAssertEqual(r.sha256.count, 64)
        XCTAssertEqual(r.ranks, [8])
        let leases = [try await s.lease("a"), try await s.lease("c"), try await s.lease("c")]
        XCTAssertEqual(s.statistics.activeLeases, 3)
        s.unregister(name: "c")
        XCTAssertTrue(s.isResident("c", version: 1), "leased: stays until released")
        leases.forEach { $0.release() }
        leases[0].release() // idempotent
        for n in ["a", "b"] { s.unregister(name: n) }
        let stats = s.statistics
        XCTAssertEqual(stats.residentBytes, 0)
        XCTAssertEqual(stats.residentCount, 0)
        XCTAssertEqual(stats.activeLeases, 0)
    }

    func testUnknownAdapter() async {
        do {
            _ = try await store().lease("nope")
            XCTFail("leased an unknown adapter")
        } catch let e as AdapterError {
            XCTAssertEqual(e.reason, .unknownAdapter)
        } catch { XCTFail("\(error)") }
    }
}
