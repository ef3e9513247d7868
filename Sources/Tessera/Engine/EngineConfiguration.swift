/// The engine's limits and policies. Configuration is data: the CLI flags, the server config
/// and library callers all fill this one struct.
public struct EngineConfiguration: Sendable, Codable, Equatable {
    /// Rows (prefill tokens plus decode tokens) per forward pass (`--max-batch-tokens`).
    public var maxBatchTokens: Int = 512
    /// Sequences running at once (`--max-seqs`).
    public var maxSequences: Int = 64
    /// Bytes of KV cache in the shared block pool.
    public var kvCacheBytes: Int = 256 << 20
    /// Positions per KV block.
    public var kvBlockSize: Int = 16
    /// Running sequences one tenant may have.
    public var maxRunningPerTenant: Int = 32
    /// Requests one tenant may have waiting; past it, submissions are refused at once.
    public var maxQueuedPerTenant: Int = 256
    /// Relative service weights per tenant (default 1): a weight-2 tenant gets twice the tokens.
    public var tenantWeights: [String: Double] = [:]
    /// Fixed summation order: each row is computed alone (matrix-vector products, per-row
    /// attention), so a row's numbers are bitwise the same whatever shares its batch. Slower.
    public var deterministic: Bool = false
    /// Keep the KV blocks of finished prompts for reuse by the same tenant and adapter version.
    public var prefixCaching: Bool = true
    /// Distinct tenant values, and adapter values, a metric's labels take; beyond them a new
    /// tenant or adapter is counted under `other`, so a scrape stays small.
    public var metricsLabelLimit: Int = 100

    public init() {}

    /// Checks the limits; the error names the field.
    public func validate() throws(EngineError) {
        for (name, value) in [("max_batch_tokens", maxBatchTokens), ("max_seqs", maxSequences), ("kv_block_size", kvBlockSize),
                              ("max_running_per_tenant", maxRunningPerTenant), ("max_queued_per_tenant", maxQueuedPerTenant),
                              ("metrics_label_limit", metricsLabelLimit)] where value < 1 {
            throw .invalidParameter("\(name) must be at least 1, got \(value)")
        }
        guard kvCacheBytes > 0 else { throw .invalidParameter("kv_cache_bytes must be positive, got \(kvCacheBytes)") }
        for (tenant, w) in tenantWeights where !(w > 0 && w.isFinite) {
            throw .invalidParameter("weight of tenant '\(tenant)' must be positive, got \(w)")
        }
    }
}
