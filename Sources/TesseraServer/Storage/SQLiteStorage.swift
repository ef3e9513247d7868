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
                     createdAt: Date(timeIntervalSince1970: row["created_at"]))
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

    public func tenants() async throws -> [TenantRecord] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM tenants ORDER BY name").map(Self.tenant) }
    }

    public func tenant(named name: String) async throws -> TenantRecord? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM tenants WHERE name = ?", arguments: [name]).map(Self.tenant) }
    }

    public func removeTenant(name: String) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM tenants WHERE name = ?", arguments: [name])
            if db.changesCount == 0 { throw StorageError.tenantNotFound(name) }
        }
    }

    public func rotateKey(tenant name: String, keyHash: Data, keyPrefix: String) async throws -> TenantRecord {
        try await write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM tenants WHERE name = ?", arguments: [name]) else {
                throw StorageError.tenantNotFound(name)
            }
            let t = Self.tenant(row)
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
                SELECT k.id AS key_id, k.key_hash, t.id AS tenant_id, t.name, t.role FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                WHERE k.key_hash = ? AND k.revoked_at IS NULL
                """, arguments: [hash]) else { return nil }
            // The index found the row; compare the stored hash in constant time all the same.
            let stored: Data = row["key_hash"]
            guard APIKey.constantTimeEqual(stored, hash) else { return nil }
            return Principal(tenantId: row["tenant_id"], tenant: row["name"], role: TenantRole(rawValue: row["role"]) ?? .tenant, keyId: row["key_id"])
        }
    }

    public func tenantCount() async throws -> Int {
        try await read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM tenants") ?? 0 }
    }

    public func saveAdapter(_ r: AdapterRecord) async throws {
        try await write { db in
            var owner: Int64?
            if let name = r.owner {
                guard let id = try Int64.fetchOne(db, sql: "SELECT id FROM tenants WHERE name = ?", arguments: [name]) else {
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

    public func adapters() async throws -> [AdapterRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT a.*, t.name AS owner FROM adapters a LEFT JOIN tenants t ON t.id = a.owner_tenant_id ORDER BY a.name").map { row in
                func decode<T: Decodable>(_ s: String) throws -> T { try JSONDecoder().decode(T.self, from: Data(s.utf8)) }
                return AdapterRecord(name: row["name"], version: row["version"], owner: row["owner"], path: row["path"], sha256: row["sha256"],
                                     format: row["format"], ranks: try decode(row["ranks"]), targets: try decode(row["targets"]),
                                     layers: try decode(row["layers"]), byteCount: row["byte_count"],
                                     createdAt: Date(timeIntervalSince1970: row["created_at"]))
            }
        }
    }
}
