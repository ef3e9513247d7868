import CoreMetrics
import Foundation
import MetricsTestKit
import XCTest
@testable import Tessera

/// Fair sharing, per-tenant limits, the prefix cache's boundaries, deadlines and metrics.
final class EngineSchedulingTests: XCTestCase {
    let model = try! LlamaModel.load(path: Fixtures.path("tiny/llama-untied/model.gguf"))
    static let metrics: TestMetrics = {
        let m = TestMetrics()
        MetricsSystem.bootstrap(m)
        return m
    }()

    func request(_ tenant: String, _ prompt: [Int32], max: Int = 8, adapter: String? = nil) -> EngineRequest {
        EngineRequest(tenant: tenant, adapter: adapter, prompt: .tokens(prompt), maxTokens: max, ignoreEOS: true)
    }

    /// One tenant sends 10× the load of another. With one running sequence at a time, the
    /// light tenant's requests alternate with the heavy tenant's instead of waiting behind all
    /// of them. Bound enforced by the virtual token counter: while both are backlogged, their
    /// weighted service differs by at most one request (prompt + max_tokens) plus one step.
    func testLightTenantIsNotStarvedByAHeavyOne() async throws {
        var config = EngineConfiguration()
        config.maxSequences = 1
        let engine = try Engine(model: model, tokenizer: nil, configuration: config)
        let order = Protected([String]())
        let prompt: [Int32] = Array(1...8)
        // Submitted here, in order (submit enqueues at once): the whole heavy backlog is queued
        // before the light requests arrive however fast the machine drains it.
        let heavy = (0..<30).map { _ in engine.submit(request("heavy", prompt)) }
        let light = (0..<3).map { _ in engine.submit(request("light", prompt)) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for stream in heavy { group.addTask { _ = await EngineTests.collect(stream); order.withLock { $0.append("heavy") } } }
            for stream in light { group.addTask { _ = await EngineTests.collect(stream); order.withLock { $0.append("light") } } }
            try await group.waitForAll()
        }
        let finished = order.withLock { $0 }
        let lastLight = try XCTUnwrap(finished.lastIndex(of: "light"))
        let firstLight = try XCTUnwrap(finished.firstIndex(of: "light"))
        let heavyBetween = finished[firstLight...lastLight].filter { $0 == "heavy" }.count
        // Equal requests, equal weights: at most one heavy request between consecutive light ones.
        XCTAssertLessThanOrEqual(heavyBetween, 3, "\(finished)")
        XCTAssertLessThan(lastLight, finished.count - 5, "light requests do not wait behind the heavy backlog: \(finished)")
        let service = engine.statistics.tenantService
        XCTAssertGreaterThan(service["light"] ?? 0, 0)
        engine.stop()
    }

    func testTenantWeightsScaleTheShare() async throws {
        var config = EngineConfiguration()
        config.maxSequences = 1
        config.tenantWeights = ["gold": 3]
        let engine = try Engine(model: model, tokenizer: nil, configuration: config)
        let order = Protected([String]())
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<24 {
                let tenant = i % 2 == 0 ? "gold" : "basic"
                let r = request(tenant, Array(1...8))
                group.addTask { _ = await EngineTests.collect(engine.submit(r)); order.withLock { $0.append(tenant) } }
            }
            try await group.waitForAll()
        }
        let firstHalf = order.withLock { Array($0.prefix(12)) }
        XCTAssertGreaterThanOrEqual(firstHalf.filter { $0 == "gold" }.count, 8, "weight 3 gets about 3 of every 4 slots: \(firstHalf)")
        engine.stop()
    }

    func testQueueLimitRejectsAtOnceAndOthersAreUnaffected() async throws {
        var config = EngineConfiguration()
        config.maxSequences = 1
        config.maxQueuedPerTenant = 2
        let engine = try Engine(model: model, tokenizer: nil, configuration: config)
        // Each flood request decodes 100 tokens (the tiny model's context is 128), so none can
        // finish and free a slot while the six are submitted back to back (20 could, on a fast
        // host with the submitting thread descheduled).
        let streams = (0..<6).map { _ in engine.submit(request("flood", Array(1...20), max: 100)) }
        let other = engine.submit(request("calm", [1, 2, 3], max: 4))
        var rejected = 0
        for s in streams {
            let o = await EngineTests.collect(s)
            if let e = o.error {
                XCTAssertTrue(e.contains("'flood' already has 2 queued requests"), e)
                rejected += 1
            } else {
                XCTAssertEqual(o.reason, .length)
            }
        }
        XCTAssertGreaterThanOrEqual(rejected, 3)
        let otherOutcome = await EngineTests.collect(other)
        XCTAssertEqual(otherOutcome.reason, .length)
        XCTAssertEqual(engine.statistics.rejections, rejected)
        engine.stop()
    }

    func testPrefixCacheIsReusedWithinATenantAndAdapterOnly() async throws {
        let store = AdapterStore(base: model.config)
        try await store.register(name: "qv", path: Fixtures.path("lora/qv-rslora"))
        let engine = try Engine(model: model, tokenizer: nil, adapters: store)
        let prompt: [Int32] = (0..<40).map { Int32(($0 * 7 + 3) % 512) }
        let first = await EngineTests.collect(engine.submit(request("a", prompt)))
        XCTAssertEqual(engine.statistics.prefixHitBlocks, 0)
        let again = await EngineTests.collect(engine.submit(request("a", prompt)))
        XCTAssertEqual(engine.statistics.prefixHitBlocks, 2, "(40 - 1) / 16 full blocks reused")
        XCTAssertEqual(again.tokens, first.tokens)
        _ = await EngineTests.collect(engine.submit(request("b", prompt)))
        XCTAssertEqual(engine.statistics.prefixHitBlocks, 2, "another tenant never shares a block")
        let withAdapter = await EngineTests.collect(engine.submit(request("a", prompt, adapter: "qv")))
        XCTAssertEqual(engine.statistics.prefixHitBlocks, 2, "another adapter never shares a block")
        XCTAssertNotEqual(withAdapter.tokens, first.tokens)
        engine.stop()
    }

    func testDeadlineAndBadRequestsFailAlone() async throws {
        let engine = try Engine(model: model, tokenizer: nil)
        var late = request("t", [1, 2, 3], max: 50)
        late.deadline = .now - .seconds(1)
        let lateOutcome = await EngineTests.collect(engine.submit(late))
        XCTAssertEqual(lateOutcome.reason, .deadline)
        let badToken = await EngineTests.collect(engine.submit(request("t", [1, 9999])))
        XCTAssertTrue(badToken.error?.contains("outside the vocabulary") ?? false)
        let empty = await EngineTests.collect(engine.submit(request("t", [])))
        XCTAssertTrue(empty.error?.contains("no tokens") ?? false)
        var badSampling = request("t", [1])
        badSampling.sampling.temperature = -1
        let badSamplingOutcome = await EngineTests.collect(engine.submit(badSampling))
        XCTAssertTrue(badSamplingOutcome.error?.contains("temperature") ?? false)
        let unknownAdapter = await EngineTests.collect(engine.submit(request("t", [1], adapter: "nope")))
        XCTAssertNotNil(unknownAdapter.error)
        let stillServing = await EngineTests.collect(engine.submit(request("t", [1, 2])))
        XCTAssertEqual(stillServing.reason, .length, "the engine still serves")
        XCTAssertEqual(engine.statistics.queued, 0)
        engine.stop()
    }

    func testMetricsArePerTenantAndAdapter() async throws {
        let metrics = Self.metrics
        let engine = try Engine(model: model, tokenizer: nil)
        _ = await EngineTests.collect(engine.submit(request("metered", [1, 2, 3, 4], max: 5)))
        XCTAssertEqual(metrics.counterTotal(label: "tessera_generation_tokens_total", dimensions: [("tenant", "metered"), ("adapter", "")]), 5)
        XCTAssertEqual(metrics.counterTotal(label: "tessera_prompt_tokens_total", dimensions: [("tenant", "metered"), ("adapter", "")]), 4)
        XCTAssertEqual(try metrics.expectTimer("tessera_time_to_first_token_seconds", [("tenant", "metered"), ("adapter", "")]).values.count, 1)
        XCTAssertEqual(try metrics.expectTimer("tessera_time_per_output_token_seconds", [("tenant", "metered"), ("adapter", "")]).values.count, 4)
        engine.stop()
    }
}

final class EngineConfigurationTests: XCTestCase {
    func testBadLimitsAreRefusedByName() throws {
        let model = try LlamaModel.load(path: Fixtures.path("tiny/llama-tied/model.gguf"))
        var c = EngineConfiguration()
        c.kvBlockSize = 0
        XCTAssertThrowsError(try Engine(model: model, tokenizer: nil, configuration: c)) { XCTAssertTrue("\($0)".contains("kv_block_size")) }
        c = EngineConfiguration()
        c.tenantWeights = ["x": -1]
        XCTAssertThrowsError(try Engine(model: model, tokenizer: nil, configuration: c)) { XCTAssertTrue("\($0)".contains("'x'")) }
    }
}
