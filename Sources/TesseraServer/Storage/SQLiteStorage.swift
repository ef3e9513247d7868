import Foundation
import GRDB

/// The embedded default storage: one SQLite file in WAL mode through GRDB, with versioned
/// migrations. Several processes may open it at once (the server and `tessera tenants`):
/// writers wait for each other up to the busy timeout.
public final class SQLiteStorage: TesseraStorage {
    private let pool: DatabasePool

    /// Opens (creating if needed) `tessera.sqlite` in `directory` and migrates it.
    public init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.foreignKeysEnabled = true
        do {
            pool = try DatabasePool(path: (directory as NSString).appendingPathComponent("tessera.sqlite"), configuration: config)
            try Self.migrator.migrate(pool)
        } catch {
            throw StorageError.database("\(directory)/tessera.sqlite: \(error)")
        }
    }

    /// Every schema change is one more migration; applied migrations are never edited.
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1: tenants, keys, adapters") { db in
            try db.execute(sql: """
                CREATE TABLE tenants (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    name TEXT NOT NULL UNIQUE,
                    role TEXT NOT NULL CHECK (role IN ('tenant', 'admin')),
                    created_at DOUBLE NOT NULL
                );
                -- Keys: only their SHA-256. The hash index is the one index not led by the tenant:
                -- a key is how its tenant is found.
                CREATE TABLE api_keys (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                    key_hash BLOB NOT NULL UNIQUE,
                    key_prefix TEXT NOT NULL,
                    created_at DOUBLE NOT NULL,
                    revoked_at DOUBLE
                );
                CREATE INDEX api_keys_by_tenant ON api_keys(tenant_id, revoked_at);
                CREATE TABLE adapters (
                    name TEXT PRIMARY KEY,
                    owner_tenant_id INTEGER REFERENCES tenants(id) ON DELETE CASCADE,
                    version INTEGER NOT NULL,
                    path TEXT NOT NULL,
                    sha256 TEXT NOT NULL,
                    format TEXT NOT NULL,
                    ranks TEXT NOT NULL,
                    targets TEXT NOT NULL,
                    layers TEXT NOT NULL,
                    byte_count INTEGER NOT NULL,
                    created_at DOUBLE NOT NULL
                );
                CREATE INDEX adapters_by_owner ON adapters(owner_tenant_id, name);
                """)
        }
        m.registerMigration("v2: limits, soft delete, usage ledger, audit trail, prompt layers") { db in
            try db.execute(sql: """
                ALTER TABLE tenants ADD COLUMN deleted_at DOUBLE;
                ALTER TABLE tenants ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
                CREATE TABLE usage (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                    request_id TEXT NOT NULL UNIQUE,
                    key_id INTEGER NOT NULL,
                    adapter TEXT,
                    adapter_version INTEGER,
                    prompt_tokens INTEGER NOT NULL,
                    cached_prompt_tokens INTEGER NOT NULL,
                    completion_tokens INTEGER NOT NULL,
                    finish_reason TEXT NOT NULL,
                    status INTEGER NOT NULL,
                    queue_ms DOUBLE,
                    ttft_ms DOUBLE,
                    total_ms DOUBLE NOT NULL,
                    cached_response INTEGER NOT NULL,
                    prompt_layer_version INTEGER,
                    created_at DOUBLE NOT NULL
                );
                CREATE INDEX usage_by_tenant ON usage(tenant_id, created_at);
                -- Append-only, except that authentication failures add to their minute's row.
                CREATE TABLE audit (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    time DOUBLE NOT NULL,
                    actor TEXT NOT NULL,
                    action TEXT NOT NULL,
                    target TEXT NOT NULL,
                    result TEXT NOT NULL,
                    failures INTEGER
                );
                CREATE INDEX audit_by_time ON audit(time);
                CREATE UNIQUE INDEX audit_auth_failures ON audit(actor, time) WHERE action = 'auth.failed';
                CREATE TABLE prompt_layers (
                    tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                    version INTEGER NOT NULL,
                    system TEXT,
                    examples TEXT NOT NULL,
                    adapter TEXT,
                    created_at DOUBLE NOT NULL,
                    deleted_at DOUBLE,
                    PRIMARY KEY (tenant_id, version)
                );
                """)
        }
        return m
    }

    private func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.write(body) } catch let e as StorageError { throw e } catch { throw StorageError.database("\(error)") }
    }

    private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.read(body) } catch let e as StorageError { throw e } catch { throw StorageError.database("\(error)") }
    }

    private static func tenant(_ row: Row) -> TenantRecord {
        TenantRecord(id: row["id"], name: row["name"], role: TenantRole(rawValue: row["role"]) ?? .tenant,
                     createdAt: Date(timeIntervalSince1970: row["created_at"]),
                     deletedAt: (row["deleted_at"] as Double?).map { Date(timeIntervalSince1970: $0) },
                     limits: decodeLimits(row["limits"]))
    }

    private static func decodeLimits(_ text: String?) -> TenantLimits {
        guard let text, let l = try? JSONDecoder().decode(TenantLimits.self, from: Data(text.utf8)) else { return TenantLimits() }
        return l
    }

    /// A live (not removed) tenant's row, or tenantNotFound.
    private static func liveTenant(_ db: Database, _ name: String) throws -> TenantRecord {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM tenants WHERE name = ? AND deleted_at IS NULL", arguments: [name]) else {
            throw StorageError.tenantNotFound(name)
        }
        return tenant(row)
    }

    public func addTenant(name: String, role: TenantRole, keyHash: Data, keyPrefix: String) async throws -> TenantRecord {
        try await write { db in
            if try Row.fetchOne(db, sql: "SELECT id FROM tenants WHERE name = ?", arguments: [name]) != nil { throw StorageError.tenantExists(name) }
            let now = Date().timeIntervalSince1970
            try db.execute(sql: "INSERT INTO tenants (name, role, created_at) VALUES (?, ?, ?)", arguments: [name, role.rawValue, now])
            let id = db.lastInsertedRowID
            try db.execute(sql: "INSERT INTO api_keys (tenant_id, key_hash, key_prefix, created_at) VALUES (?, ?, ?, ?)",
                           arguments: [id, keyHash, keyPrefix, now])
            return TenantRecord(id: id, name: name, role: role, createdAt: Date(timeIntervalSince1970: now))
        }
    }

    /// Every tenant, removed ones included (``TenantRecord/deletedAt``).
    public func tenants() async throws -> [TenantRecord] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM tenants ORDER BY name").map(Self.tenant) }
    }

    /// A tenant by name, removed or not.
    public func tenant(named name: String) async throws -> TenantRecord? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM tenants WHERE name = ?", arguments: [name]).map(Self.tenant) }
    }

    public func removeTenant(name: String) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE tenants SET deleted_at = ? WHERE name = ? AND deleted_at IS NULL", arguments: [Date().timeIntervalSince1970, name])
            if db.changesCount == 0 { throw StorageError.tenantNotFound(name) }
        }
    }

    public func restoreTenant(name: String) async throws {
        try await write { db in
            guard try Row.fetchOne(db, sql: "SELECT id FROM tenants WHERE name = ?", arguments: [name]) != nil else { throw StorageError.tenantNotFound(name) }
            try db.execute(sql: "UPDATE tenants SET deleted_at = NULL WHERE name = ? AND deleted_at IS NOT NULL", arguments: [name])
            if db.changesCount == 0 { throw StorageError.tenantNotDeleted(name) }
        }
    }

    @discardableResult
    public func purgeTenant(name: String) async throws -> [String] {
        try await write { db in
            let paths = try String.fetchAll(db, sql: "SELECT a.path FROM adapters a JOIN tenants t ON t.id = a.owner_tenant_id WHERE t.name = ?",
                                            arguments: [name])
            // Keys, adapters, prompt layers and ledger rows go with it (ON DELETE CASCADE).
            try db.execute(sql: "DELETE FROM tenants WHERE name = ?", arguments: [name])
            if db.changesCount == 0 { throw StorageError.tenantNotFound(name) }
            return paths
        }
    }

    public func limits(tenant name: String) async throws -> TenantLimits {
        try await read { db in try Self.liveTenant(db, name).limits }
    }

    public func setLimits(tenant name: String, _ limits: TenantLimits) async throws {
        let text = String(decoding: try JSONEncoder().encode(limits), as: UTF8.self)
        try await write { db in
            try db.execute(sql: "UPDATE tenants SET limits = ? WHERE name = ? AND deleted_at IS NULL", arguments: [text, name])
            if db.changesCount == 0 { throw StorageError.tenantNotFound(name) }
        }
    }

    // MARK: Usage ledger

    public func recordUsage(_ rows: [UsageRecord]) async throws {
        guard !rows.isEmpty else { return }
        try await write { db in
            let statement = try db.cachedStatement(sql: """
                INSERT OR IGNORE INTO usage (tenant_id, request_id, key_id, adapter, adapter_version, prompt_tokens, cached_prompt_tokens,
                    completion_tokens, finish_reason, status, queue_ms, ttft_ms, total_ms, cached_response, prompt_layer_version, created_at)
                SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?)
                """)
            for r in rows {
                try statement.execute(arguments: [r.tenantId, r.requestId, r.keyId, r.adapter, r.adapterVersion, r.promptTokens, r.cachedPromptTokens,
                                                  r.completionTokens, r.finishReason, r.status, r.queueMs, r.ttftMs, r.totalMs, r.cachedResponse ? 1 : 0,
                                                  r.promptLayerVersion, r.createdAt.timeIntervalSince1970, r.tenantId])
            }
        }
    }

    public func usageReport(_ q: UsageQuery) async throws -> [UsageTotals] {
        try await read { db in
            let key: String
            switch q.by {
            case .tenant: key = "t.name"
            case .adapter: key = "u.adapter"
            case .day: key = "strftime('%Y-%m-%d', u.created_at, 'unixepoch')"
            }
            var conditions: [String] = []
            var arguments: [any DatabaseValueConvertible] = []
            if let t = q.tenant { conditions.append("t.name = ?"); arguments.append(t) }
            if let s = q.since { conditions.append("u.created_at >= ?"); arguments.append(s.timeIntervalSince1970) }
            if let u = q.until { conditions.append("u.created_at < ?"); arguments.append(u.timeIntervalSince1970) }
            let sql = """
                SELECT \(key) AS k, COUNT(*) AS requests, SUM(u.prompt_tokens) AS p, SUM(u.cached_prompt_tokens) AS cp,
                       SUM(u.completion_tokens) AS c, SUM(u.cached_response) AS cr
                FROM usage u JOIN tenants t ON t.id = u.tenant_id
                \(conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND "))
                GROUP BY k ORDER BY k
                """
            return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments)).map { row in
                UsageTotals(key: row["k"], requests: row["requests"], promptTokens: row["p"] ?? 0, cachedPromptTokens: row["cp"] ?? 0,
                            completionTokens: row["c"] ?? 0, cachedResponses: row["cr"] ?? 0)
            }
        }
    }

    public func tokensUsed(tenantId: Int64, since date: Date) async throws -> Int {
        try await read { db in
            try Int.fetchOne(db, sql: """
                SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage
                WHERE tenant_id = ? AND created_at >= ? AND cached_response = 0
                """, arguments: [tenantId, date.timeIntervalSince1970]) ?? 0
        }
    }

    // MARK: Audit trail

    public func appendAudit(_ entries: [AuditEntry]) async throws {
        guard !entries.isEmpty else { return }
        try await write { db in
            for e in entries {
                try db.execute(sql: "INSERT INTO audit (time, actor, action, target, result) VALUES (?, ?, ?, ?, ?)",
                               arguments: [e.time.timeIntervalSince1970, e.actor, e.action, e.target, e.result])
            }
        }
    }

    public func recordAuthFailures(actor: String, minute: Date, count: Int) async throws {
        try await write { db in
            let t = minute.timeIntervalSince1970
            try db.execute(sql: """
                INSERT INTO audit (time, actor, action, target, result, failures) VALUES (?, ?, 'auth.failed', '', ?, ?)
                ON CONFLICT (actor, time) WHERE action = 'auth.failed'
                DO UPDATE SET failures = failures + excluded.failures, result = (failures + excluded.failures) || ' failures'
                """, arguments: [t, actor, "\(count) failures", count])
        }
    }

    public func audit(limit: Int, since: Date?) async throws -> [AuditEntry] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM (SELECT * FROM audit WHERE time >= ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                             arguments: [since?.timeIntervalSince1970 ?? 0, limit]).map { row in
                AuditEntry(time: Date(timeIntervalSince1970: row["time"]), actor: row["actor"], action: row["action"], target: row["target"],
                           result: row["result"])
            }
        }
    }

    // MARK: Prompt layers

    private static func promptLayer(_ row: Row, tenant: String) -> PromptLayer {
        let examples = (try? JSONDecoder().decode([PromptLayer.Message].self, from: Data((row["examples"] as String? ?? "[]").utf8))) ?? []
        return PromptLayer(tenant: tenant, version: row["version"], system: row["system"], examples: examples, adapter: row["adapter"])
    }

    public func promptLayer(tenant name: String) async throws -> PromptLayer? {
        try await read { db in
            let t = try Self.liveTenant(db, name)
            return try Row.fetchOne(db, sql: "SELECT * FROM prompt_layers WHERE tenant_id = ? ORDER BY version DESC LIMIT 1", arguments: [t.id])
                .flatMap { ($0["deleted_at"] as Double?) == nil ? Self.promptLayer($0, tenant: name) : nil }
        }
    }

    public func setPromptLayer(tenant name: String, system: String?, examples: [PromptLayer.Message], adapter: String?) async throws -> PromptLayer {
        let text = String(decoding: try JSONEncoder().encode(examples), as: UTF8.self)
        return try await write { db in
            let t = try Self.liveTenant(db, name)
            let version = (try Int.fetchOne(db, sql: "SELECT MAX(version) FROM prompt_layers WHERE tenant_id = ?", arguments: [t.id]) ?? 0) + 1
            try db.execute(sql: "INSERT INTO prompt_layers (tenant_id, version, system, examples, adapter, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [t.id, version, system, text, adapter, Date().timeIntervalSince1970])
            return PromptLayer(tenant: name, version: version, system: system, examples: examples, adapter: adapter)
        }
    }

    public func deletePromptLayer(tenant name: String) async throws -> Bool {
        try await write { db in
            let t = try Self.liveTenant(db, name)
            // Versions are kept (the ledger names them); the newest is marked deleted.
            try db.execute(sql: """
                UPDATE prompt_layers SET deleted_at = ? WHERE tenant_id = ? AND deleted_at IS NULL
                AND version = (SELECT MAX(version) FROM prompt_layers WHERE tenant_id = ?)
                """, arguments: [Date().timeIntervalSince1970, t.id, t.id])
            return db.changesCount > 0
        }
    }

    public func rotateKey(tenant name: String, keyHash: Data, keyPrefix: String) async throws -> TenantRecord {
        try await write { db in
            let t = try Self.liveTenant(db, name)
            let now = Date().timeIntervalSince1970
            try db.execute(sql: "UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND revoked_at IS NULL", arguments: [now, t.id])
            try db.execute(sql: "INSERT INTO api_keys (tenant_id, key_hash, key_prefix, created_at) VALUES (?, ?, ?, ?)",
                           arguments: [t.id, keyHash, keyPrefix, now])
            return t
        }
    }

    public func principal(forKeyHash hash: Data) async throws -> Principal? {
        try await read { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT k.id AS key_id, k.key_hash, t.id AS tenant_id, t.name, t.role, t.limits FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                WHERE k.key_hash = ? AND k.revoked_at IS NULL AND t.deleted_at IS NULL
                """, arguments: [hash]) else { return nil }
            // The index found the row; compare the stored hash in constant time all the same.
            let stored: Data = row["key_hash"]
            guard APIKey.constantTimeEqual(stored, hash) else { return nil }
            return Principal(tenantId: row["tenant_id"], tenant: row["name"], role: TenantRole(rawValue: row["role"]) ?? .tenant, keyId: row["key_id"],
                             limits: Self.decodeLimits(row["limits"]))
        }
    }

    public func tenantCount() async throws -> Int {
        try await read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM tenants WHERE deleted_at IS NULL") ?? 0 }
    }

    public func saveAdapter(_ r: AdapterRecord) async throws {
        try await write { db in
            var owner: Int64?
            if let name = r.owner {
                guard let id = try Int64.fetchOne(db, sql: "SELECT id FROM tenants WHERE name = ? AND deleted_at IS NULL", arguments: [name]) else {
                    throw StorageError.ownerNotFound(name)
                }
                owner = id
            }
            func json<T: Encodable>(_ v: T) throws -> String { String(decoding: try JSONEncoder().encode(v), as: UTF8.self) }
            try db.execute(sql: """
                INSERT OR REPLACE INTO adapters (name, owner_tenant_id, version, path, sha256, format, ranks, targets, layers, byte_count, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [r.name, owner, r.version, r.path, r.sha256, r.format, try json(r.ranks), try json(r.targets), try json(r.layers),
                                 r.byteCount, r.createdAt.timeIntervalSince1970])
        }
    }

    public func removeAdapter(name: String) async throws {
        try await write { db in try db.execute(sql: "DELETE FROM adapters WHERE name = ?", arguments: [name]) }
    }

    public func adapterPaths() async throws -> Set<String> {
        try await read { db in Set(try String.fetchAll(db, sql: "SELECT path FROM adapters")) }
    }

    public func adapters() async throws -> [AdapterRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT a.*, t.name AS owner FROM adapters a LEFT JOIN tenants t ON t.id = a.owner_tenant_id "
                             + "WHERE a.owner_tenant_id IS NULL OR t.deleted_at IS NULL ORDER BY a.name").map { row in
                func decode<T: Decodable>(_ s: String) throws -> T { try JSONDecoder().decode(T.self, from: Data(s.utf8)) }
                return AdapterRecord(name: row["name"], version: row["version"], owner: row["owner"], path: row["path"], sha256: row["sha256"],
                                     format: row["format"], ranks: try decode(row["ranks"]), targets: try decode(row["targets"]),
                                     layers: try decode(row["layers"]), byteCount: row["byte_count"],
                                     createdAt: Date(timeIntervalSince1970: row["created_at"]))
            }
        }
    }
}
