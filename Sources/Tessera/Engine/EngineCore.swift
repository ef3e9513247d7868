import Foundation

/// The engine's step loop and all state it owns: queues, running sequences, the KV pool, the
/// prefix cache. Touched only by the engine thread.
final class EngineCore: @unchecked Sendable {
    let model: LlamaModel
    let configuration: EngineConfiguration
    let pool: KVBlockPool
    let metrics: EngineMetrics
    private let scratch: ForwardScratch
    private var queues: FairQueues<EngineSequence>
    private var running: [EngineSequence] = []
    private var runningPerTenant: [String: Int] = [:]
    private var prefixCache = PrefixCache()
    private var cancelled: Set<UInt64> = []
    private var step: UInt64 = 0
    private var batch = ForwardBatch()
    private var logitsCopy: [Float] = []
    /// Per tenant: requests that left the queue this step (admitted or dropped).
    private var leftQueue: [String: Int] = [:]
    private var counters = Engine.Statistics()

    init(model: LlamaModel, configuration: EngineConfiguration, pool: KVBlockPool, metrics: EngineMetrics) {
        self.model = model
        self.configuration = configuration
        self.pool = pool
        self.metrics = metrics
        scratch = model.makeScratch()
        scratch.deterministic = configuration.deterministic
        queues = FairQueues(weights: configuration.tenantWeights)
    }

    static func loop(core: EngineCore, inbox: Protected<Engine.Inbox>, wakeup: NSCondition) {
        while true {
            let (arrivals, cancelled, state, weights) = inbox.withLock { s in
                defer { s.arrivals.removeAll(); s.cancelled.removeAll(); s.weightsChanged = false }
                return (s.arrivals, s.cancelled, s.state, s.weightsChanged ? s.tenantWeights : nil)
            }
            if let weights { core.queues.weights = weights }
            core.cancelled.formUnion(cancelled)
            for seq in arrivals { core.queues.enqueue(seq, tenant: seq.request.tenant) }
            if state == .stopped {
                core.cancelEverything()
                core.publish(inbox)
                return
            }
            core.dropCancelledAndExpired()
            if core.running.isEmpty && core.queues.isEmpty {
                core.publish(inbox)
                wakeup.lock()
                let idle = inbox.withLock { $0.arrivals.isEmpty && $0.cancelled.isEmpty && $0.state != .stopped }
                if idle { _ = wakeup.wait(until: Date().addingTimeInterval(0.05)) }
                wakeup.unlock()
                continue
            }
            core.runStep()
            core.publish(inbox)
        }
    }

    // MARK: One step

    private func runStep() {
        step += 1
        let budget = configuration.maxBatchTokens
        var plan: [(seq: EngineSequence, rows: Int)] = []
        var used = 0

        // 1. Decode rows, then prefill chunks, of sequences already running.
        for seq in running.sorted(by: { ($0.pending == 1 ? 0 : 1, $0.admittedStep) < ($1.pending == 1 ? 0 : 1, $1.admittedStep) }) {
            guard used < budget, seq.cache != nil else { continue }
            let rows = min(seq.pending, budget - used)
            guard reserve(seq, positions: seq.cache!.count + rows, plan: &plan) else { continue }
            plan.append((seq, rows))
            used += rows
        }
        // 2. Admit new sequences, fairly across tenants, while there is room.
        while used < budget && running.count < configuration.maxSequences {
            guard let (tenant, seq) = queues.dequeue(eligible: { self.runningPerTenant[$0, default: 0] < self.configuration.maxRunningPerTenant })
            else { break }
            leftQueue[tenant, default: 0] += 1
            if seq.maxTokens == 0 {
                finish(seq, .length, wasRunning: false)
                continue
            }
            let cache = KVCache(pool: pool)
            seq.cache = cache
            if configuration.prefixCaching {
                let limit = (seq.tokens.count - 1) / pool.blockSize
                let shared = prefixCache.lookup(tenant: tenant, adapter: adapterKey(seq), tokens: seq.tokens, blockSize: pool.blockSize, limit: limit)
                if !shared.isEmpty {
                    cache.adopt(sharedBlocks: shared, positions: shared.count * pool.blockSize)
                    counters.prefixHitBlocks += shared.count
                    if seq.firstAdmittedAt == nil { seq.cachedPromptTokens = min(shared.count * pool.blockSize, seq.promptCount) }
                }
            }
            let rows = min(seq.pending, budget - used)
            guard reserve(seq, positions: cache.count + rows, plan: &plan, mayPreempt: false) else {
                cache.releaseAll()
                seq.cache = nil
                leftQueue[tenant, default: 0] -= 1
                queues.enqueue(seq, tenant: tenant, front: true)
                break
            }
            seq.admittedStep = step
            if seq.firstAdmittedAt == nil { seq.firstAdmittedAt = .now }
            running.append(seq)
            runningPerTenant[tenant, default: 0] += 1
            metrics.admitted(tenant: tenant, adapter: seq.request.adapter)
            plan.append((seq, rows))
            used += rows
        }
        guard !plan.isEmpty else { return }

        // 3. One forward pass: rows grouped by adapter so each adapter is one segment.
        var adapters: [LoRAAdapter] = []
        var adapterIndex: [ObjectIdentifier: Int] = [:]
        for (seq, _) in plan {
            if let a = seq.lease?.adapter, adapterIndex[ObjectIdentifier(a)] == nil {
                adapterIndex[ObjectIdentifier(a)] = adapters.count
                adapters.append(a)
            }
        }
        let ordered = plan.sorted { a, b in
            let ia = a.seq.lease.map { adapterIndex[ObjectIdentifier($0.adapter)]! } ?? -1
            let ib = b.seq.lease.map { adapterIndex[ObjectIdentifier($0.adapter)]! } ?? -1
            return (ia, a.seq.id) < (ib, b.seq.id)
        }
        batch.removeAll()
        var caches: [KVCache] = []
        var sampled: [EngineSequence] = []
        for (i, (seq, rows)) in ordered.enumerated() {
            let cache = seq.cache!
            caches.append(cache)
            let start = cache.count
            let adapter = seq.lease.map { adapterIndex[ObjectIdentifier($0.adapter)]! }
            for j in 0..<rows {
                let last = start + j == seq.tokens.count - 1
                batch.append(token: seq.tokens[start + j], position: start + j, sequence: i, wantLogits: last, adapter: adapter)
                if last { sampled.append(seq) }
            }
            queues.charge(seq.request.tenant, tokens: rows)
            if start < seq.promptCount {
                let promptRows = min(rows, seq.promptCount - start)
                counters.promptTokens += promptRows
                metrics.tokens(tenant: seq.request.tenant, adapter: seq.request.adapter, prompt: promptRows, generated: 0)
            }
        }
        let logits: Logits
        do {
            logits = try model.forward(batch, caches: caches, adapters: adapters, scratch: scratch)
        } catch {
            // Only a bug or memory exhaustion gets here: fail this step's sequences, keep serving.
            for (seq, _) in ordered { fail(seq, EngineError.internalFailure("\(error)")) }
            return
        }
        counters.steps += 1

        // 4. Sample, stream, and finish.
        let vocab = model.config.vocabularySize
        for (j, seq) in sampled.enumerated() {
            let row = logits.row(j)
            var logprob: Float?
            var top: [TokenAlternative]?
            if seq.request.logprobs {
                let lse = Self.logNormalizer(row)  // log-sum-exp, before the sampler edits the row
                logprob = Float(lse)
                if seq.request.topLogprobs > 0 { top = Self.mostLikely(row, count: seq.request.topLogprobs, logNormalizer: lse) }
            }
            let rawRow = seq.request.logprobs && seq.sampler.editsLogits ? Array(row) : nil
            let token = seq.sampler.sample(logits: row.baseAddress!, count: vocab)
            if let lse = logprob { logprob = Float(Double(rawRow?[Int(token)] ?? row[Int(token)]) - Double(lse)) }
            emit(seq, token: token, logprob: logprob, top: top)
        }
        for (seq, _) in ordered where seq.cache != nil { publishPrefix(seq) }
    }

    /// Makes room for `positions` in a sequence's cache: free blocks, else evict prefix-cache
    /// blocks, else preempt the most recently admitted other sequence (recompute later).
    private func reserve(_ seq: EngineSequence, positions: Int, plan: inout [(seq: EngineSequence, rows: Int)], mayPreempt: Bool = true) -> Bool {
        guard let cache = seq.cache else { return false }
        while !cache.reserve(positions: positions) {
            if let block = prefixCache.evictOne(isUnshared: { self.pool.referenceCount($0) == 1 }) {
                pool.release(block)
                continue
            }
            guard mayPreempt, let victim = running.filter({ $0 !== seq && $0.cache != nil }).max(by: { $0.admittedStep < $1.admittedStep }) else {
                return false
            }
            plan.removeAll { $0.seq === victim }
            preempt(victim)
        }
        return true
    }

    /// Frees a sequence's blocks and puts it back at the head of its tenant's queue; it is
    /// prefilled again (prompt and what it generated) when readmitted. Its sampler keeps its state.
    private func preempt(_ seq: EngineSequence) {
        seq.cache?.releaseAll()
        seq.cache = nil
        running.removeAll { $0 === seq }
        runningPerTenant[seq.request.tenant, default: 1] -= 1
        leftQueue[seq.request.tenant, default: 0] -= 1
        queues.enqueue(seq, tenant: seq.request.tenant, front: true)
        counters.preemptions += 1
    }

    private func emit(_ seq: EngineSequence, token: Int32, logprob: Float?, top: [TokenAlternative]?) {
        let now = ContinuousClock.now
        let tenant = seq.request.tenant, adapter = seq.request.adapter
        if seq.firstTokenAt == nil {
            seq.firstTokenAt = now
            metrics.timeToFirstToken(tenant: tenant, adapter: adapter, nanoseconds: (now - seq.submittedAt).nanoseconds)
        } else if let last = seq.lastTokenAt {
            metrics.timePerOutputToken(tenant: tenant, adapter: adapter, nanoseconds: (now - last).nanoseconds)
        }
        seq.lastTokenAt = now
        seq.tokens.append(token)
        counters.generatedTokens += 1
        metrics.tokens(tenant: tenant, adapter: adapter, prompt: 0, generated: 1)
        let lps = logprob.map { [$0] }
        let tops = top.map { [$0] }
        if seq.endTokens.contains(token) {
            seq.continuation.yield(.delta(text: "", tokenIds: [token], logprobs: lps, top: tops))
            finish(seq, .stop)
            return
        }
        var text = ""
        var stopped = false
        if seq.decoder != nil {
            let piece = (try? seq.decoder!.append(token)) ?? ""
            (text, stopped) = seq.stops.feed(piece)
        }
        seq.continuation.yield(.delta(text: text, tokenIds: [token], logprobs: lps, top: tops))
        if stopped { finish(seq, .stop); return }
        if seq.generatedCount >= seq.maxTokens { finish(seq, .length) }
    }

    private func finish(_ seq: EngineSequence, _ reason: EngineFinishReason, wasRunning: Bool = true) {
        if seq.decoder != nil && !(reason == .stop && seq.stops.stopped) {
            var rest = seq.stops.feed(seq.decoder!.finish()).0
            rest += seq.stops.flush()
            if !rest.isEmpty { seq.continuation.yield(.delta(text: rest, tokenIds: [], logprobs: nil, top: nil)) }
        }
        release(seq, wasRunning: wasRunning)
        metrics.finished(tenant: seq.request.tenant, adapter: seq.request.adapter, reason: reason)
        seq.continuation.yield(.finished(reason: reason, usage: seq.usage))
        seq.continuation.finish()
    }

    private func fail(_ seq: EngineSequence, _ error: Error) {
        release(seq, wasRunning: seq.cache != nil)
        seq.continuation.finish(throwing: error)
    }

    /// Returns everything a sequence holds: KV blocks, its adapter lease, its running slot.
    private func release(_ seq: EngineSequence, wasRunning: Bool) {
        if running.contains(where: { $0 === seq }) {
            running.removeAll { $0 === seq }
            runningPerTenant[seq.request.tenant, default: 1] -= 1
        }
        seq.cache?.releaseAll()
        seq.cache = nil
        seq.lease?.release()
        cancelled.remove(seq.id)
    }

    private func dropCancelledAndExpired() {
        let now = ContinuousClock.now
        func expired(_ s: EngineSequence) -> Bool { s.request.deadline.map { now > $0 } ?? false }
        for seq in queues.removeAll(where: { self.cancelled.contains($0.id) || expired($0) }) {
            leftQueue[seq.request.tenant, default: 0] += 1
            finish(seq, cancelled.contains(seq.id) ? .cancelled : .deadline, wasRunning: false)
        }
        for seq in running where cancelled.contains(seq.id) || expired(seq) {
            finish(seq, cancelled.contains(seq.id) ? .cancelled : .deadline)
        }
    }

    private func cancelEverything() {
        for seq in queues.removeAll(where: { _ in true }) {
            leftQueue[seq.request.tenant, default: 0] += 1
            finish(seq, .cancelled, wasRunning: false)
        }
        for seq in running { finish(seq, .cancelled) }
        for block in prefixCache.removeAll() { pool.release(block) }
    }

    /// Offers a sequence's full prompt blocks to the prefix cache once its prompt is cached.
    private func publishPrefix(_ seq: EngineSequence) {
        guard configuration.prefixCaching, !seq.prefixPublished, let cache = seq.cache, cache.count >= seq.promptCount else { return }
        seq.prefixPublished = true
        let full = seq.promptCount / pool.blockSize
        guard full > 0 else { return }
        let added = prefixCache.insert(tenant: seq.request.tenant, adapter: adapterKey(seq), tokens: Array(seq.tokens[0..<(full * pool.blockSize)]),
                                       blocks: Array(cache.blocks.prefix(full)), blockSize: pool.blockSize)
        for b in added { pool.retain(b) }
    }

    private func adapterKey(_ seq: EngineSequence) -> String {
        seq.lease.map { "\($0.adapter.name)#\($0.version)" } ?? ""
    }

    private func publish(_ inbox: Protected<Engine.Inbox>) {
        let left = leftQueue
        leftQueue.removeAll()
        var perTenantQueued: [String: Int] = [:]
        let stats: Engine.Statistics = inbox.withLock { s in
            for (t, n) in left {
                s.queuedPerTenant[t, default: 0] -= n
                s.stats.queued -= n
            }
            s.stats.running = running.count
            s.stats.kvBlocksFree = pool.freeCount
            s.stats.prefixCacheBlocks = prefixCache.count
            s.stats.steps = counters.steps
            s.stats.preemptions = counters.preemptions
            s.stats.prefixHitBlocks = counters.prefixHitBlocks
            s.stats.promptTokens = counters.promptTokens
            s.stats.generatedTokens = counters.generatedTokens
            s.stats.tenantService = queues.counters
            s.stats.runningAdapters = Set(running.compactMap(\.request.adapter)).sorted()
            s.stats.waitingAdapters = Set(queues.allItems.compactMap(\.request.adapter)).sorted()
            perTenantQueued = s.queuedPerTenant
            return s.stats
        }
        metrics.occupancy(queued: perTenantQueued, running: runningPerTenant,
                          kvUtilization: 1 - Double(stats.kvBlocksFree) / Double(max(stats.kvBlocksTotal, 1)))
    }

    static func logNormalizer(_ row: UnsafeMutableBufferPointer<Float>) -> Double {
        var m = row[0]
        for v in row where v > m { m = v }
        var sum = 0.0
        for v in row { sum += exp(Double(v - m)) }
        return Double(m) + log(sum)
    }

    /// The `count` highest-probability tokens of a raw logits row, most likely first (ties: lower id).
    static func mostLikely(_ row: UnsafeMutableBufferPointer<Float>, count: Int, logNormalizer: Double) -> [TokenAlternative] {
        var best: [(id: Int32, logit: Float)] = []
        best.reserveCapacity(count + 1)
        for (i, v) in row.enumerated() where best.count < count || v > best[best.count - 1].logit {
            var j = best.count
            while j > 0 && best[j - 1].logit < v { j -= 1 }
            best.insert((Int32(i), v), at: j)
            if best.count > count { best.removeLast() }
        }
        return best.map { TokenAlternative(tokenId: $0.id, logprob: Float(Double($0.logit) - logNormalizer)) }
    }
}
