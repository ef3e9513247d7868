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
}

/// Who a key belongs to: what the server knows of a request once its key is checked.
public struct Principal: Sendable, Equatable {
    public var tenantId: Int64
    public var tenant: String
    public var role: TenantRole
    public var keyId: Int64
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
    case database(String)

    public var description: String {
        switch self {
        case .tenantExists(let n): "tenant '\(n)' already exists"
        case .tenantNotFound(let n): "no tenant named '\(n)'"
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
    /// Removes a tenant: its keys stop working at once, and adapters it owns are unregistered.
    func removeTenant(name: String) async throws
    /// Revokes every key of the tenant and stores a new one.
    func rotateKey(tenant name: String, keyHash: Data, keyPrefix: String) async throws -> TenantRecord
    /// The live (not revoked) key with this hash, and whose it is.
    func principal(forKeyHash hash: Data) async throws -> Principal?
    func tenantCount() async throws -> Int

    /// Records a registration (a new version of a name replaces the old row).
    func saveAdapter(_ record: AdapterRecord) async throws
    func removeAdapter(name: String) async throws
    func adapters() async throws -> [AdapterRecord]
}
