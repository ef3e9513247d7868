import Foundation

/// A tenant's role: what its keys may do.
public enum TenantRole: String, Sendable, Codable {
    /// Uses the OpenAI routes with its own and shared adapters.
    case tenant
    /// Also manages tenants and adapters (the admin routes).
    case admin
}

/// One tenant, as stored.
public struct TenantRecord: Sendable, Equatable, Codable {
    public var id: Int64
    public var name: String
    public var role: TenantRole
    public var createdAt: Date
    /// Set by a soft delete (`tessera tenants remove`): its keys stop working, its rows stay.
    public var deletedAt: Date?
    public var limits = TenantLimits()
}

/// A tenant's limits, quotas and budget, changeable while the server runs (nil = unlimited).
public struct TenantLimits: Sendable, Equatable, Codable {
    /// Requests per minute (a token bucket: a burst of `rpm`, refilled at rpm/60 a second).
    public var rpm: Int?
    /// Tokens per minute, prompt plus `max_tokens` charged at admission, the unused part refunded.
    public var tpm: Int?
    /// Requests in flight at once.
    public var concurrency: Int?
    /// Requests waiting in the engine's queue.
    public var queued: Int?
    /// Largest `max_tokens` a request may ask for (and the default when it asks for none).
    public var maxTokens: Int?
    /// Prompt plus completion tokens per calendar month (UTC), computed responses only.
    public var monthlyTokens: Int?
    /// Fraction of `monthlyTokens` at which a budget alert is raised, once a month.
    public var alertThreshold: Double = 0.8
    /// Fair-share weight in the engine's scheduler.
    public var weight: Double = 1
    /// Whether deterministic requests may be answered from the response cache.
    public var cache = true
    /// Self-service adapters: how many, and how many bytes in all.
    public var maxAdapters: Int?
    public var adapterBytes: Int?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case rpm, tpm, concurrency, queued, maxTokens = "max_tokens", monthlyTokens = "monthly_tokens", alertThreshold = "alert_threshold"
        case weight, cache, maxAdapters = "max_adapters", adapterBytes = "adapter_bytes"
    }

    public func encode(to encoder: Encoder) throws {
        // Every key, null for unlimited, so a reader sees the whole set.
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(rpm, forKey: .rpm)
        try c.encode(tpm, forKey: .tpm)
        try c.encode(concurrency, forKey: .concurrency)
        try c.encode(queued, forKey: .queued)
        try c.encode(maxTokens, forKey: .maxTokens)
        try c.encode(monthlyTokens, forKey: .monthlyTokens)
        try c.encode(alertThreshold, forKey: .alertThreshold)
        try c.encode(weight, forKey: .weight)
        try c.encode(cache, forKey: .cache)
        try c.encode(maxAdapters, forKey: .maxAdapters)
        try c.encode(adapterBytes, forKey: .adapterBytes)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rpm = try c.decodeIfPresent(Int.self, forKey: .rpm)
        tpm = try c.decodeIfPresent(Int.self, forKey: .tpm)
        concurrency = try c.decodeIfPresent(Int.self, forKey: .concurrency)
        queued = try c.decodeIfPresent(Int.self, forKey: .queued)
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
        monthlyTokens = try c.decodeIfPresent(Int.self, forKey: .monthlyTokens)
        alertThreshold = try c.decodeIfPresent(Double.self, forKey: .alertThreshold) ?? 0.8
        weight = try c.decodeIfPresent(Double.self, forKey: .weight) ?? 1
        cache = try c.decodeIfPresent(Bool.self, forKey: .cache) ?? true
        maxAdapters = try c.decodeIfPresent(Int.self, forKey: .maxAdapters)
        adapterBytes = try c.decodeIfPresent(Int.self, forKey: .adapterBytes)
    }

    /// The first value out of range, named: (field, why).
    public func invalidField() -> (String, String)? {
        for (name, v) in [("rpm", rpm), ("tpm", tpm), ("concurrency", concurrency), ("queued", queued), ("max_tokens", maxTokens),
                          ("monthly_tokens", monthlyTokens), ("max_adapters", maxAdapters), ("adapter_bytes", adapterBytes)] {
            if let v, v < 1 { return (name, "must be at least 1 (or null for no limit), got \(v)") }
        }
        if !(alertThreshold > 0 && alertThreshold <= 1) { return ("alert_threshold", "must be in (0, 1], got \(alertThreshold)") }
        if !(weight > 0 && weight.isFinite && weight <= 1000) { return ("weight", "must be in (0, 1000], got \(weight)") }
        return nil
    }
}

/// Who a key belongs to: what the server knows of a request once its key is checked.
public struct Principal: Sendable, Equatable {
    public var tenantId: Int64
    public var tenant: String
    public var role: TenantRole
    public var keyId: Int64
    /// The tenant's limits as of this request (read with the key, so a change applies at once).
    public var limits = TenantLimits()
}

/// One request's row in the usage ledger, written when the request ends.
public struct UsageRecord: Sendable, Equatable {
    public var requestId: String
    public var tenantId: Int64
    public var keyId: Int64
    public var adapter: String?
    public var adapterVersion: Int?
    public var promptTokens: Int
    public var cachedPromptTokens: Int
    public var completionTokens: Int
    /// stop, length, cancelled, disconnected or error.
    public var finishReason: String
    public var status: Int
    public var queueMs: Double?
    public var ttftMs: Double?
    public var totalMs: Double
    /// Answered from the response cache (no compute).
    public var cachedResponse: Bool
    public var promptLayerVersion: Int?
    public var createdAt: Date

    public init(requestId: String, tenantId: Int64, keyId: Int64, adapter: String?, adapterVersion: Int?, promptTokens: Int,
                cachedPromptTokens: Int, completionTokens: Int, finishReason: String, status: Int, queueMs: Double?, ttftMs: Double?,
                totalMs: Double, cachedResponse: Bool, promptLayerVersion: Int?, createdAt: Date = Date()) {
        self.requestId = requestId
        self.tenantId = tenantId
        self.keyId = keyId
        self.adapter = adapter
        self.adapterVersion = adapterVersion
        self.promptTokens = promptTokens
        self.cachedPromptTokens = cachedPromptTokens
        self.completionTokens = completionTokens
        self.finishReason = finishReason
        self.status = status
        self.queueMs = queueMs
        self.ttftMs = ttftMs
        self.totalMs = totalMs
        self.cachedResponse = cachedResponse
        self.promptLayerVersion = promptLayerVersion
        self.createdAt = createdAt
    }
}

/// How usage is grouped for a report.
public enum UsageGrouping: String, Sendable, CaseIterable {
    case tenant, adapter, day
}

/// Which rows a usage report covers.
public struct UsageQuery: Sendable {
    public var tenant: String?
    public var since: Date?
    public var until: Date?
    public var by: UsageGrouping = .tenant
    /// A day as YYYY-MM-DD (UTC) at its first second; nil if the text is not one.
    public static func day(_ text: String) -> Date? {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd"
        return f.date(from: text)
    }

    public init(tenant: String? = nil, since: Date? = nil, until: Date? = nil, by: UsageGrouping = .tenant) {
        self.tenant = tenant
        self.since = since
        self.until = until
        self.by = by
    }
}

/// One group's totals.
public struct UsageTotals: Sendable, Equatable {
    /// The tenant's name, the adapter (nil: the base model) or the day (YYYY-MM-DD, UTC).
    public var key: String?
    public var requests: Int
    public var promptTokens: Int
    public var cachedPromptTokens: Int
    public var completionTokens: Int
    public var cachedResponses: Int
}

/// One entry of the audit trail. Never holds a key or a prompt.
public struct AuditEntry: Sendable, Equatable {
    public var time: Date
    /// Who: a tenant's name, `cli`, `server`, or `key:<prefix>` for an unknown key.
    public var actor: String
    public var action: String
    public var target: String
    public var result: String
    public init(time: Date = Date(), actor: String, action: String, target: String, result: String) {
        self.time = time
        self.actor = actor
        self.action = action
        self.target = target
        self.result = result
    }
}

/// A tenant's prompt layer: a system prompt and few-shot messages put before its chat
/// requests' messages, optionally only for one of its adapters. Versioned.
public struct PromptLayer: Sendable, Equatable {
    public struct Message: Sendable, Equatable, Codable {
        public var role: String
        public var content: String
        public init(role: String, content: String) { self.role = role; self.content = content }
    }
    public var tenant: String
    public var version: Int
    public var system: String?
    public var examples: [Message]
    public var adapter: String?
    public init(tenant: String, version: Int, system: String?, examples: [Message], adapter: String?) {
        self.tenant = tenant
        self.version = version
        self.system = system
        self.examples = examples
        self.adapter = adapter
    }
}

/// One registered adapter version, as stored (the registry survives restarts).
public struct AdapterRecord: Sendable, Equatable, Codable {
    public var name: String
    public var version: Int
    /// Owner tenant's name; nil = shared with every tenant.
    public var owner: String?
    public var path: String
    public var sha256: String
    public var format: String
    public var ranks: [Int]
    public var targets: [String]
    public var layers: [Int]
    public var byteCount: Int
    public var createdAt: Date
}

/// A storage operation refused: a typed error the routes and the CLI turn into a message.
public enum StorageError: Error, Equatable, CustomStringConvertible {
    case tenantExists(String)
    case tenantNotFound(String)
    case ownerNotFound(String)
    case tenantNotDeleted(String)
    case database(String)

    public var description: String {
        switch self {
        case .tenantExists(let n): "tenant '\(n)' already exists"
        case .tenantNotFound(let n): "no tenant named '\(n)'"
        case .tenantNotDeleted(let n): "tenant '\(n)' is not removed (remove it first)"
        case .ownerNotFound(let n): "owner: no tenant named '\(n)'"
        case .database(let s): "database: \(s)"
        }
    }
}

/// Tenants, key hashes and the adapter registry. The routes see only this protocol, so a
/// PostgreSQL implementation drops in beside the embedded SQLite one.
///
/// Keys are never stored: only their SHA-256. Every tenant-owned lookup is scoped by tenant.
public protocol TesseraStorage: Sendable {
    /// Creates a tenant with its first key (stored as `keyHash`).
    func addTenant(name: String, role: TenantRole, keyHash: Data, keyPrefix: String) async throws -> TenantRecord
    func tenants() async throws -> [TenantRecord]
    func tenant(named name: String) async throws -> TenantRecord?
    /// Removes a tenant (a soft delete): its keys stop working at once; its adapters, prompt
    /// layers and ledger rows are kept (its adapters are no longer served).
    func removeTenant(name: String) async throws
    /// Revokes every key of the tenant and stores a new one.
    func rotateKey(tenant name: String, keyHash: Data, keyPrefix: String) async throws -> TenantRecord
    /// The live (not revoked) key with this hash, and whose it is.
    func principal(forKeyHash hash: Data) async throws -> Principal?
    func tenantCount() async throws -> Int
    /// Brings back a removed tenant (its keys work again); purging erases it and every row it owns.
    func restoreTenant(name: String) async throws
    /// Erases the tenant and everything it owns; returns the file paths of the adapters it owned.
    @discardableResult
    func purgeTenant(name: String) async throws -> [String]

    func limits(tenant name: String) async throws -> TenantLimits
    func setLimits(tenant name: String, _ limits: TenantLimits) async throws

    /// Appends ledger rows in one transaction (a group commit); a request id already present is skipped.
    func recordUsage(_ rows: [UsageRecord]) async throws
    func usageReport(_ query: UsageQuery) async throws -> [UsageTotals]
    /// Prompt plus completion tokens of computed (not cached) responses of a tenant since `date`.
    func tokensUsed(tenantId: Int64, since date: Date) async throws -> Int

    func appendAudit(_ entries: [AuditEntry]) async throws
    /// Adds `count` failures to the entry of this actor and minute (aggregated, so a flood of bad keys stays one row).
    func recordAuthFailures(actor: String, minute: Date, count: Int) async throws
    func audit(limit: Int, since: Date?) async throws -> [AuditEntry]

    /// The tenant's current prompt layer; setting one makes a new version.
    func promptLayer(tenant name: String) async throws -> PromptLayer?
    func setPromptLayer(tenant name: String, system: String?, examples: [PromptLayer.Message], adapter: String?) async throws -> PromptLayer
    /// False when the tenant had none.
    func deletePromptLayer(tenant name: String) async throws -> Bool

    /// Records a registration (a new version of a name replaces the old row).
    func saveAdapter(_ record: AdapterRecord) async throws
    func removeAdapter(name: String) async throws
    /// Every registered adapter of tenants not removed.
    func adapters() async throws -> [AdapterRecord]
    /// The file path of every registered adapter, soft-deleted tenants' included.
    func adapterPaths() async throws -> Set<String>
}
