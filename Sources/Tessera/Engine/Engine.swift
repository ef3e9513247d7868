import Foundation

/// The only place that decides what runs. Requests of many tenants are batched into one
/// forward pass per step (iteration-level continuous batching: decode rows of running
/// sequences plus prefill chunks of new ones, under a token budget), admitted fairly across
/// tenants, each row with its own adapter and its own KV blocks.
///
/// Bookkeeping that callers touch (submissions, cancellations) sits behind a mutex; everything
/// else, the forward pass included, runs on one dedicated thread, never on the cooperative pool.
public final class Engine: Sendable {
    /// Lifecycle of the engine.
    public enum State: String, Sendable { case running, draining, stopped }

    /// A snapshot of the engine's counters (also exported through swift-metrics).
    public struct Statistics: Sendable, Equatable {
        public var queued = 0
        public var running = 0
        public var kvBlocksTotal = 0
        public var kvBlocksFree = 0
        public var prefixCacheBlocks = 0
        /// Prompt blocks taken from the prefix cache instead of being computed.
        public var prefixHitBlocks = 0
        public var steps = 0
        public var preemptions = 0
        public var rejections = 0
        public var promptTokens = 0
        public var generatedTokens = 0
        /// Service charged to each tenant by the fair scheduler (weighted tokens).
        public var tenantService: [String: Double] = [:]
        /// Adapters of the running sequences, and of the queued ones (distinct names, sorted).
        public var runningAdapters: [String] = []
        public var waitingAdapters: [String] = []
    }

    public let model: LlamaModel
    public let tokenizer: Tokenizer?
    public let adapters: AdapterStore?
    public let configuration: EngineConfiguration
    let metrics: EngineMetrics

    struct Inbox {
        var state: State = .running
        var arrivals: [EngineSequence] = []
        var cancelled: Set<UInt64> = []
        var queuedPerTenant: [String: Int] = [:]
        /// Per-tenant overrides of the queued limit and the fair-share weight (``setTenantPolicy``).
        var queuedLimits: [String: Int] = [:]
        var tenantWeights: [String: Double] = [:]
        var weightsChanged = false
        var nextID: UInt64 = 1
        var stats = Statistics()
    }
    private let inbox = Protected(Inbox())
    private let wakeup = NSCondition()
    private let core: EngineCore

    /// Starts an engine over a loaded model (and an adapter store for requests with adapters).
    public init(model: LlamaModel, tokenizer: Tokenizer?, adapters: AdapterStore? = nil,
                configuration: EngineConfiguration = EngineConfiguration()) throws {
        try configuration.validate()
        self.model = model
        self.tokenizer = tokenizer
        self.adapters = adapters
        self.configuration = configuration
        metrics = EngineMetrics(labelLimit: configuration.metricsLabelLimit)
        let pool = try KVBlockPool(config: model.config, blockSize: configuration.kvBlockSize, memoryBytes: configuration.kvCacheBytes,
                                   precision: model.kvPrecision)
        core = EngineCore(model: model, configuration: configuration, pool: pool, metrics: metrics)
        let (inbox, wakeup, core) = (self.inbox, self.wakeup, self.core)
        let thread = Thread { EngineCore.loop(core: core, inbox: inbox, wakeup: wakeup) }
        thread.name = "tessera.engine"
        thread.stackSize = 8 << 20
        inbox.withLock { $0.stats.kvBlocksTotal = pool.blockCount; $0.stats.kvBlocksFree = pool.freeCount }
        thread.start()
    }

    deinit { stop() }

    /// The lifecycle state.
    public var state: State { inbox.withLock { $0.state } }

    /// A snapshot of the counters.
    public var statistics: Statistics { inbox.withLock { $0.stats } }

    /// Requests of `tenant` waiting in the queue now (submitted, not yet admitted).
    public func queuedCount(tenant: String) -> Int { inbox.withLock { $0.queuedPerTenant[tenant, default: 0] } }

    /// Changes one tenant's fair-share weight and queued limit while the engine runs (nil: the
    /// configuration's). The next scheduling step uses the weight; the next submission, the limit.
    public func setTenantPolicy(tenant: String, weight: Double?, maxQueued: Int?) {
        inbox.withLock { s in
            if s.tenantWeights.isEmpty && !configuration.tenantWeights.isEmpty { s.tenantWeights = configuration.tenantWeights }
            let w = weight.flatMap { $0 > 0 && $0.isFinite ? $0 : nil } ?? configuration.tenantWeights[tenant]
            if s.tenantWeights[tenant] != w {
                s.tenantWeights[tenant] = w
                s.weightsChanged = true
            }
            s.queuedLimits[tenant] = maxQueued.map { max(0, $0) }
        }
    }

    /// Submits a request; its events arrive on the returned stream. Cancelling the task that
    /// consumes the stream (or dropping the stream) cancels the request. A request refused at
    /// once (a full tenant queue, a bad prompt, an unknown adapter) ends the stream with an
    /// ``EngineError`` and changes nothing else.
    public func submit(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error> {
        let (stream, continuation) = AsyncThrowingStream<EngineEvent, Error>.makeStream()
        let admission: Result<UInt64, EngineError> = inbox.withLock { s in
            guard s.state == .running else { return .failure(.notRunning) }
            let queued = s.queuedPerTenant[request.tenant, default: 0]
            let limit = s.queuedLimits[request.tenant] ?? configuration.maxQueuedPerTenant
            guard queued < limit else {
                s.stats.rejections += 1
                return .failure(.tenantQueueFull(tenant: request.tenant, limit: limit))
            }
            s.queuedPerTenant[request.tenant] = queued + 1
            s.stats.queued += 1
            defer { s.nextID += 1 }
            return .success(s.nextID)
        }
        let id: UInt64
        switch admission {
        case .failure(let e):
            metrics.rejected(tenant: request.tenant)
            continuation.finish(throwing: e)
            return stream
        case .success(let i): id = i
        }
        let task = Task { [self] in
            do {
                let sequence = try await prepare(request, id: id, continuation: continuation)
                inbox.withLock { $0.arrivals.append(sequence) }
                signal()
            } catch {
                inbox.withLock { s in
                    s.queuedPerTenant[request.tenant, default: 1] -= 1
                    s.stats.queued -= 1
                    s.stats.rejections += 1
                }
                metrics.rejected(tenant: request.tenant)
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination {
                task.cancel()
                self?.inbox.withLock { _ = $0.cancelled.insert(id) }
                self?.signal()
            }
        }
        return stream
    }

    /// Checks and tokenizes a request and leases its adapter (waiting for it to load without
    /// holding up anyone's steps).
    private func prepare(_ r: EngineRequest, id: UInt64, continuation: AsyncThrowingStream<EngineEvent, Error>.Continuation) async throws -> EngineSequence {
        do { try r.sampling.validate() } catch { throw EngineError.invalidParameter(error.description) }
        guard r.maxTokens >= 0 else { throw EngineError.invalidParameter("max_tokens must be >= 0, got \(r.maxTokens)") }
        let tokens: [Int32]
        switch r.prompt {
        case .tokens(let t): tokens = t
        case .text(let text):
            guard let tokenizer else { throw EngineError.invalidPrompt("the model has no tokenizer; send token ids") }
            tokens = tokenizer.encode(text)
        case .chat(let messages):
            guard let tokenizer else { throw EngineError.invalidPrompt("the model has no tokenizer; send token ids") }
            do { tokens = tokenizer.encode(try tokenizer.makeChatTemplate().render(messages, addGenerationPrompt: true)) } catch {
                throw EngineError.invalidPrompt("\(error)")
            }
        }
        let c = model.config
        guard !tokens.isEmpty else { throw EngineError.invalidPrompt("no tokens") }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= c.vocabularySize }) {
            throw EngineError.invalidPrompt("token id \(bad) is outside the vocabulary (0..<\(c.vocabularySize))")
        }
        let poolPositions = core.pool.blockCount * core.pool.blockSize
        let limit = min(c.contextLength, poolPositions)
        guard tokens.count < limit else { throw EngineError.invalidPrompt("\(tokens.count) tokens do not fit the context (\(limit))") }
        let maxTokens = min(r.maxTokens, limit - tokens.count)
        var lease: AdapterLease?
        if let name = r.adapter {
            guard let adapters else { throw EngineError.adapter(AdapterError(adapter: name, file: "", reason: .unknownAdapter)) }
            do { lease = try await adapters.lease(name, tenant: r.tenant, anyOwner: r.mayUseAnyAdapter) } catch let e as AdapterError { throw EngineError.adapter(e) }
        }
        return EngineSequence(id: id, request: r, promptTokens: tokens, maxTokens: maxTokens, lease: lease,
                              tokenizer: tokenizer, continuation: continuation)
    }

    private func signal() {
        wakeup.lock()
        wakeup.signal()
        wakeup.unlock()
    }

    /// Stops taking requests and waits until every admitted one has finished.
    public func drain() async {
        inbox.withLock { if $0.state == .running { $0.state = .draining } }
        signal()
        while inbox.withLock({ $0.stats.queued + $0.stats.running }) > 0 {
            try? await Task.sleep(nanoseconds: 2_000_000)
        }
        stop()
    }

    /// Stops the engine: requests still queued or running finish with `.cancelled`.
    public func stop() {
        inbox.withLock { $0.state = .stopped }
        signal()
    }
}

/// A value behind a lock, shareable across threads.
final class Protected<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
