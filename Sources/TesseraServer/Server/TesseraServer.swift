import Foundation
import Hummingbird
import Logging
import Prometheus
import Synchronization
import Tessera

/// The HTTP layer over one engine: OpenAI-compatible routes, keys and tenants, the adapter
/// registry and metrics. `tessera serve` runs it; a gateway mounts its routes on its own router
/// (``addRoutes(to:)``) or calls the ``Engine`` directly.
///
/// Lifecycle: `running` → `draining` (new requests get 503, in-flight ones finish) → `stopped`.
public final class TesseraServer: Sendable {
    public enum State: String, Sendable { case running, draining, stopped }

    public let configuration: RuntimeConfiguration
    public let engine: Engine
    public let adapters: AdapterStore
    public let storage: any TesseraStorage
    public let tokenizer: Tokenizer
    /// The name clients give as `model` for the base model.
    public let modelName: String
    let modelPath: String
    let createdAt = Int(Date().timeIntervalSince1970)
    let logger: Logger
    let metrics: ServerMetrics
    let limiter = TenantLimiter()
    let ledger: UsageLedger
    let auditor: Auditor
    let responseCache: ResponseCache

    struct Lifecycle {
        var state: State = .running
        var inFlight = 0
    }
    private let lifecycle = Mutex(Lifecycle())
    /// Serialises registry changes (register, swap, unregister) so the database and the store agree.
    let registryLock = AsyncLock()

    /// Serves `bundle` with `adapters`, keeping tenants, keys and the registry in `storage`.
    public init(configuration: RuntimeConfiguration, bundle: ModelBundle, modelPath: String, adapters: AdapterStore,
                storage: any TesseraStorage, metricsRegistry: PrometheusCollectorRegistry? = nil,
                logger: Logger = Logger(label: "tessera.server")) throws {
        guard let tokenizer = bundle.tokenizer else {
            throw ConfigurationError(file: modelPath, field: "model", why: "the model has no tokenizer; the server needs one")
        }
        self.configuration = configuration
        self.tokenizer = tokenizer
        self.adapters = adapters
        self.storage = storage
        self.modelPath = modelPath
        self.logger = logger
        modelName = configuration.server.modelName ?? ((modelPath as NSString).lastPathComponent as NSString).deletingPathExtension
        engine = try Engine(model: bundle.model, tokenizer: tokenizer, adapters: adapters, configuration: configuration.engine)
        metrics = ServerMetrics(registry: metricsRegistry)
        ledger = UsageLedger(storage: storage, logger: logger, committed: { _ in })
        auditor = Auditor(storage: storage, logger: logger)
        let auditor = self.auditor
        adapters.observe { event in
            switch event {
            case .loaded(let name, let version, let seconds):
                auditor.post(actor: "server", action: "adapter.load", target: name, result: String(format: "ok: version %d in %.0f ms", version, seconds * 1000))
            case .evicted(let name, let version):
                auditor.post(actor: "server", action: "adapter.evict", target: name, result: "ok: version \(version) left memory")
            case .loadFailed(let name, let version, let why):
                auditor.post(actor: "server", action: "adapter.load_failed", target: name, result: "failure: version \(version): \(why)")
            }
        }
        responseCache = ResponseCache(budgetBytes: configuration.server.responseCacheMemory << 20, ttlSeconds: configuration.server.responseCacheSeconds)
    }

    public var state: State { lifecycle.withLock { $0.state } }
    public var inFlight: Int { lifecycle.withLock { $0.inFlight } }

    /// Largest prompt plus completion a request may have: the context, or the KV pool if smaller.
    var contextLimit: Int {
        min(engine.model.config.contextLength, engine.statistics.kvBlocksTotal * configuration.engine.kvBlockSize)
    }

    /// Counts a request in flight; false (and nothing counted) once draining.
    func enter() -> Bool {
        lifecycle.withLock { s in
            guard s.state == .running else { return false }
            s.inFlight += 1
            return true
        }
    }

    func leave() { lifecycle.withLock { $0.inFlight -= 1 } }

    /// Stops taking requests, waits up to `seconds` for those in flight, then stops the engine.
    public func drain(seconds: Double) async {
        lifecycle.withLock { if $0.state == .running { $0.state = .draining } }
        logger.info("draining", metadata: ["in_flight": "\(inFlight)", "grace_seconds": "\(seconds)"])
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while inFlight > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        engine.stop()
        lifecycle.withLock { $0.state = .stopped }
        logger.info("drained", metadata: ["unfinished": "\(inFlight)"])
    }

    // MARK: Keys and models

    /// The caller behind `Authorization: Bearer <key>`, or a 401.
    func authenticate(_ request: Request) async throws -> Principal {
        guard let header = request.headers[.authorization] else { auditor.authenticationFailed(presentedKey: nil); throw APIError.missingKey }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { auditor.authenticationFailed(presentedKey: nil); throw APIError.missingKey }
        let key = parts[1].trimmingCharacters(in: .whitespaces)
        guard let principal = try await storage.principal(forKeyHash: APIKey.hash(key)) else {
            auditor.authenticationFailed(presentedKey: key)
            throw APIError.invalidKey
        }
        return principal
    }

    func requireAdmin(_ request: Request) async throws -> Principal {
        let p = try await authenticate(request)
        guard p.role == .admin else { throw APIError.adminOnly }
        return p
    }

    /// What `model` names for this caller: nil for the base model, else an adapter it may use.
    /// Another tenant's private adapter is answered exactly as a name that does not exist.
    func resolveModel(_ name: String, for principal: Principal) throws(APIError) -> String? {
        if name == modelName { return nil }
        // The caller's own uploads come first: they live in its namespace.
        if let r = adapters.registration(Self.uploadedName(name, tenant: principal.tenant)) { return r.name }
        guard let r = adapters.registration(name), visible(r, to: principal) else { throw APIError.modelNotFound(name) }
        return r.name
    }

    /// The registry name of a tenant's self-service adapter: `@tenant/name`, which no
    /// administrator-registered name can be (those start with a letter or digit).
    static func uploadedName(_ name: String, tenant: String) -> String { "@\(tenant)/\(name)" }

    /// The name a tenant uses for `registryName` (its uploads without the namespace).
    static func publicName(_ registryName: String, for tenant: String) -> String {
        let prefix = "@\(tenant)/"
        return registryName.hasPrefix(prefix) ? String(registryName.dropFirst(prefix.count)) : registryName
    }

    func visible(_ r: AdapterStore.Registration, to principal: Principal) -> Bool {
        principal.role == .admin || r.owner == nil || r.owner == principal.tenant
    }

    // MARK: Budgets

    private static let alerted = Mutex(Set<String>())

    /// Counts a computed response's tokens against the tenant's month and raises the budget
    /// alert (an audit entry and a gauge) once a month when the threshold is crossed.
    func noteMonthlyUsage(_ p: Principal, tokens: Int) async {
        guard let budget = p.limits.monthlyTokens, let used = limiter.addUsed(p.tenantId, tokens: tokens) else { return }
        guard Double(used) >= p.limits.alertThreshold * Double(budget) else { return }
        let month = TenantLimiter.monthStart()
        let key = "\(p.tenantId)@\(month.timeIntervalSince1970)"
        guard Self.alerted.withLock({ $0.insert(key).inserted }) else { return }
        metrics.budgetAlert(tenant: p.tenant)
        // Once a month, across restarts too.
        let earlier = (try? await storage.audit(limit: 100_000, since: month)) ?? []
        guard !earlier.contains(where: { $0.action == "budget.alert" && $0.target == p.tenant }) else { return }
        await auditor.record(actor: "server", action: "budget.alert", target: p.tenant,
                             result: "\(used) of \(budget) monthly tokens used (alert at \(Int(p.limits.alertThreshold * 100))%)")
        logger.warning("budget alert", metadata: ["tenant": "\(p.tenant)", "used": "\(used)", "budget": "\(budget)"])
    }

    // MARK: Registry

    /// Registers again, without loading, every adapter the database records (after a restart).
    public func restoreRegistry() async throws {
        for record in try await storage.adapters() { adapters.restore(record.registration) }
    }

    /// Makes the store agree with the database (changes made by `tessera tenants remove`, or
    /// another process): restores new versions, unregisters removed names.
    public func reconcileRegistry() async {
        await registryLock.withLock {
            guard let records = try? await storage.adapters() else { return }
            let byName = Dictionary(records.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            for r in adapters.registrations where byName[r.name] == nil { adapters.unregister(name: r.name) }
            for record in records where adapters.registration(record.name)?.version != record.version || adapters.registration(record.name)?.owner != record.owner {
                adapters.restore(record.registration)
            }
        }
    }

    /// Registers every sub-folder of `directory` as a shared adapter named by its folder,
    /// unless the same file is already registered under that name.
    public func registerDirectory(_ directory: String) async throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        for name in names where !name.hasPrefix(".") {
            let path = (directory as NSString).appendingPathComponent(name)
            _ = try await register(name: name, path: path, owner: nil, skipIfUnchanged: true)
        }
    }

    /// Loads and checks `path`, points `name` at it once resident, and records it.
    func register(name: String, path: String, owner: String?, skipIfUnchanged: Bool = false, actor: String = "server",
                  action: String = "adapter.register") async throws -> AdapterStore.Registration {
        try await registryLock.withLock {
            let previous = adapters.registration(name)
            let verb = previous == nil ? action : "adapter.swap"
            let r: AdapterStore.Registration
            do { r = try await adapters.register(name: name, path: path, owner: owner) } catch {
                let why = (error as? AdapterError).map { "\($0.reason)" } ?? "\(type(of: error))"
                await auditor.record(actor: actor, action: verb, target: name, result: "failure: \(why)")
                throw error
            }
            if skipIfUnchanged, let previous, previous.sha256 == r.sha256, previous.owner == owner {
                adapters.restore(previous)
                return previous
            }
            do { try await storage.saveAdapter(AdapterRecord(r)) } catch {
                // Keep the store and the database in agreement: the old version keeps serving.
                if let previous { adapters.restore(previous) } else { adapters.unregister(name: name) }
                await auditor.record(actor: actor, action: verb, target: name, result: "failure: the registry could not be saved")
                throw error
            }
            await auditor.record(actor: actor, action: verb, target: name,
                                 result: "ok: version \(r.version)\(owner.map { ", owner \($0)" } ?? ", shared")")
            logger.info("adapter registered", metadata: ["adapter": "\(name)", "version": "\(r.version)", "owner": "\(owner ?? "shared")"])
            return r
        }
    }

    /// Registers an adapter for `tessera serve --demo`.
    public func registerForDemo(name: String, path: String, owner: String?) async throws -> AdapterStore.Registration {
        try await register(name: name, path: path, owner: owner)
    }

    func unregister(name: String, actor: String = "server", action: String = "adapter.unregister") async throws -> Bool {
        try await registryLock.withLock {
            guard adapters.registration(name) != nil else { return false }
            try await storage.removeAdapter(name: name)
            adapters.unregister(name: name)
            logger.info("adapter unregistered", metadata: ["adapter": "\(name)"])
            await auditor.record(actor: actor, action: action, target: name, result: "ok")
            return true
        }
    }
}

extension AdapterRecord {
    init(_ r: AdapterStore.Registration) {
        self.init(name: r.name, version: r.version, owner: r.owner, path: r.path, sha256: r.sha256, format: r.format.rawValue,
                  ranks: r.ranks, targets: r.targets.map(\.rawValue), layers: r.layers, byteCount: r.byteCount, createdAt: Date())
    }

    var registration: AdapterStore.Registration {
        AdapterStore.Registration(name: name, version: version, owner: owner, path: path, sha256: sha256,
                                  format: LoRAAdapter.Format(rawValue: format) ?? .peft, ranks: ranks,
                                  targets: targets.compactMap(LoRATarget.init(rawValue:)), layers: layers, byteCount: byteCount)
    }
}

/// A mutual-exclusion lock that can be held across `await` (an actor alone does not give
/// exclusive access across suspension points).
final class AsyncLock: Sendable {
    private struct State {
        var locked = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    func withLock<T: Sendable>(_ body: () async throws -> T) async rethrows -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = state.withLock { s in
                if !s.locked { s.locked = true; return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    private func release() {
        let next: CheckedContinuation<Void, Never>? = state.withLock { s in
            if s.waiters.isEmpty { s.locked = false; return nil }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}
