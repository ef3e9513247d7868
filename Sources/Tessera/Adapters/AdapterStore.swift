import Crypto
import Dispatch
import Foundation
import Synchronization

/// Every registered adapter and the resident ones: loads on demand off the compute thread,
/// keeps resident adapters within a byte budget and a count limit, evicts the least recently
/// used adapter that no sequence leases, and hot-swaps versions without disturbing sequences
/// already running.
///
/// A lease pins one version of one adapter for a sequence's whole life; the old version of a
/// hot-swapped or unregistered adapter is freed when its last lease ends.
public final class AdapterStore: Sendable {
    /// Limits of the store. One struct shared by CLI flags, server config and library callers.
    public struct Configuration: Sendable, Codable, Equatable {
        /// Bytes of adapter weights that may be resident at once (`--adapter-memory`).
        public var memoryBudgetBytes: Int
        /// Adapters that may be resident at once (`--max-adapters`).
        public var maxAdapters: Int
        /// Largest rank accepted.
        public var maxRank: Int
        /// Precision adapters are held in (`--adapter-precision`): f16 (the default) halves their
        /// memory and the bytes a step of many adapters reads; f32 keeps PEFT's numbers.
        public var precision: AdapterPrecision

        public init(memoryBudgetBytes: Int = 1 << 30, maxAdapters: Int = 64, maxRank: Int = 256, precision: AdapterPrecision = .f16) {
            self.memoryBudgetBytes = memoryBudgetBytes
            self.maxAdapters = maxAdapters
            self.maxRank = maxRank
            self.precision = precision
        }
    }

    /// Where one registered adapter stands.
    public enum ResidencyState: String, Sendable, Codable {
        /// Registered, never loaded since (it loads on first use).
        case registered
        /// Being loaded for a request.
        case loading
        /// In memory.
        case resident
        /// Was resident, evicted to make room; loads again on next use.
        case evicted
        /// The last load of this version failed (it is tried again on next use).
        case failed
    }

    /// What the registry knows of one version of an adapter.
    public struct Registration: Sendable, Equatable, Codable {
        public let name: String
        /// 1 for the first registration of a name, then one more per hot swap.
        public let version: Int
        /// The tenant that owns it; nil means any tenant may use it.
        public let owner: String?
        public let path: String
        /// sha256 of the weights file, hex.
        public let sha256: String
        public let format: LoRAAdapter.Format
        public let ranks: [Int]
        public let targets: [LoRATarget]
        public let layers: [Int]
        /// Resident size in bytes (f32 weights).
        public let byteCount: Int

        /// A registration as recorded elsewhere (a database), to restore it without loading.
        public init(name: String, version: Int, owner: String?, path: String, sha256: String, format: LoRAAdapter.Format,
                    ranks: [Int], targets: [LoRATarget], layers: [Int], byteCount: Int) {
            self.name = name
            self.version = version
            self.owner = owner
            self.path = path
            self.sha256 = sha256
            self.format = format
            self.ranks = ranks
            self.targets = targets
            self.layers = layers
            self.byteCount = byteCount
        }
    }

    /// Counters for metrics.
    public struct Statistics: Sendable, Equatable {
        public var residentBytes = 0
        public var residentCount = 0
        public var activeLeases = 0
        public var loads = 0
        public var loadFailures = 0
        public var evictions = 0
        /// Seconds of the last load, and of all loads together.
        public var lastLoadSeconds: Double = 0
        public var totalLoadSeconds: Double = 0
    }

    struct Key: Hashable {
        let name: String
        let version: Int
    }

    struct Resident {
        let adapter: LoRAAdapter
        let bytes: Int
        var leases: Int
        var lastUse: UInt64
    }

    struct State {
        var registry: [String: Registration] = [:]
        var resident: [Key: Resident] = [:]
        var loading: [Key: Task<LoRAAdapter, Error>] = [:]
        var everResident: Set<Key> = []
        var failed: Set<Key> = []
        var clock: UInt64 = 0
        var stats = Statistics()
        /// Events not yet handed to the observer (delivered outside the lock).
        var events: [Event] = []
    }

    /// What happened to an adapter's weights, for an audit trail.
    public enum Event: Sendable, Equatable {
        /// Read, checked and made resident (at registration, or on first use).
        case loaded(name: String, version: Int, seconds: Double)
        /// Dropped from memory to make room; it loads again on next use.
        case evicted(name: String, version: Int)
        /// Could not be loaded on use.
        case loadFailed(name: String, version: Int, why: String)
    }

    private let observer = Mutex<(@Sendable (Event) -> Void)?>(nil)

    /// Calls `handler` for every load, eviction and load failure from now on (one observer).
    public func observe(_ handler: @escaping @Sendable (Event) -> Void) { observer.withLock { $0 = handler } }

    private func deliverEvents() {
        let events = state.withLock { s in
            defer { s.events.removeAll() }
            return s.events
        }
        guard !events.isEmpty, let handler = observer.withLock({ $0 }) else { return }
        for e in events { handler(e) }
    }

    public let configuration: Configuration
    public let base: LlamaConfig
    private let state = Mutex(State())
    private let loader = DispatchQueue(label: "tessera.adapter-loader")

    public init(base: LlamaConfig, configuration: Configuration = Configuration()) {
        self.base = base
        self.configuration = configuration
    }

    // MARK: Registry

    /// Registers `path` under `name` (a new version if the name exists: a hot swap). The adapter
    /// is loaded and checked completely first, so a bad file never replaces a good version, and
    /// the name then moves to the new version. Its weights stay resident when they fit without
    /// evicting another adapter; otherwise it loads (evicting the least recently used) on first use.
    /// `version` sets the version number (restoring a registry); by default it is one more
    /// than the name's current one.
    @discardableResult
    public func register(name: String, path: String, owner: String? = nil, version: Int? = nil) async throws -> Registration {
        let started = DispatchTime.now().uptimeNanoseconds
        let (adapter, digest) = try await onLoader { [base, configuration] in
            let adapter = try LoRAAdapter.load(path: path, name: name, base: base, maxRank: configuration.maxRank, precision: configuration.precision)
            return (adapter, try Self.sha256(of: adapter.source))
        }
        defer { deliverEvents() }
        return state.withLock { s in
            let version = version ?? ((s.registry[name]?.version ?? 0) + 1)
            let r = Registration(name: name, version: version, owner: owner, path: path, sha256: digest, format: adapter.format,
                                 ranks: adapter.ranks, targets: adapter.targets, layers: adapter.layers, byteCount: adapter.byteCount)
            let key = Key(name: name, version: version)
            Self.remove(key, in: &s)
            // Unleased older versions of this name go first, so a hot swap of a resident adapter
            // stays resident; other tenants' adapters are never evicted by a registration.
            Self.dropUnleased(name: name, except: version, in: &s)
            if Self.fits(bytes: r.byteCount, configuration: configuration, in: s) {
                s.clock += 1
                s.resident[key] = Resident(adapter: adapter, bytes: r.byteCount, leases: 0, lastUse: s.clock)
                s.stats.residentBytes += r.byteCount
                s.stats.residentCount += 1
                s.everResident.insert(key)
                s.events.append(.loaded(name: name, version: version, seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9))
            }
            s.failed.remove(key)
            s.registry[name] = r
            Self.dropUnleased(name: name, except: version, in: &s)
            return r
        }
    }

    /// Restores a registration recorded earlier (after a restart) without reading the file:
    /// it loads, and its sha256 is checked, on first use.
    public func restore(_ registration: Registration) {
        state.withLock { s in
            s.registry[registration.name] = registration
            Self.dropUnleased(name: registration.name, except: registration.version, in: &s)
        }
    }

    /// Where the current version of `name` stands (nil: not registered).
    public func residency(of name: String) -> ResidencyState? {
        state.withLock { s in
            guard let r = s.registry[name] else { return nil }
            let key = Key(name: name, version: r.version)
            if s.resident[key] != nil { return .resident }
            if s.loading[key] != nil { return .loading }
            if s.failed.contains(key) { return .failed }
            return s.everResident.contains(key) ? .evicted : .registered
        }
    }

    /// Names and ranks of the resident adapters (current versions), for metrics.
    public var residentAdapters: [(name: String, rank: Int)] {
        state.withLock { s in
            s.resident.keys.compactMap { k in
                guard let r = s.registry[k.name], r.version == k.version else { return nil }
                return (k.name, r.ranks.max() ?? 0)
            }.sorted { $0.name < $1.name }
        }
    }

    /// Removes `name`; sequences that lease it finish on it, then it is freed.
    public func unregister(name: String) {
        state.withLock { s in
            s.registry[name] = nil
            Self.dropUnleased(name: name, except: nil, in: &s)
        }
    }

    /// The current registration of `name`.
    public func registration(_ name: String) -> Registration? { state.withLock { $0.registry[name] } }

    /// All current registrations, by name.
    public var registrations: [Registration] { state.withLock { $0.registry.values.sorted { $0.name < $1.name } } }

    /// A snapshot of the counters.
    public var statistics: Statistics { state.withLock { $0.stats } }

    /// Whether a version is resident (for tests and metrics).
    public func isResident(_ name: String, version: Int) -> Bool {
        state.withLock { $0.resident[Key(name: name, version: version)] != nil }
    }

    // MARK: Leases

    /// Pins the current version of `name` for one sequence, loading it first if needed.
    /// `tenant` must be the owner when the adapter has one, unless `anyOwner` (an administrator).
    public func lease(_ name: String, tenant: String? = nil, anyOwner: Bool = false) async throws -> AdapterLease {
        while true {
            let step: LeaseStep = try state.withLock { s in
                guard let r = s.registry[name] else { throw AdapterError(adapter: name, file: "", reason: .unknownAdapter) }
                if let owner = r.owner, owner != tenant, !anyOwner {
                    // Another tenant's adapter does not exist as far as this tenant can tell.
                    throw AdapterError(adapter: name, file: "", reason: .unknownAdapter)
                }
                let key = Key(name: name, version: r.version)
                if var res = s.resident[key] {
                    s.clock += 1
                    res.leases += 1
                    res.lastUse = s.clock
                    s.resident[key] = res
                    s.stats.activeLeases += 1
                    return .leased(AdapterLease(store: self, key: key, adapter: res.adapter))
                }
                if let task = s.loading[key] { return .wait(task) }
                let task = Task<LoRAAdapter, Error> { [base, configuration] in
                    let started = DispatchTime.now().uptimeNanoseconds
                    do {
                        let adapter = try await self.onLoader {
                            let adapter = try LoRAAdapter.load(path: r.path, name: name, base: base, maxRank: configuration.maxRank, precision: configuration.precision)
                            let digest = try Self.sha256(of: adapter.source)
                            guard digest == r.sha256 else {
                                throw AdapterError(adapter: name, file: adapter.source,
                                                   reason: .changedOnDisk(expected: r.sha256, actual: digest))
                            }
                            return adapter
                        }
                        defer { self.deliverEvents() }
                        try self.admit(adapter, key: key, seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
                        return adapter
                    } catch {
                        self.state.withLock { s in
                            s.loading[key] = nil
                            s.failed.insert(key)
                            s.stats.loadFailures += 1
                            let why = (error as? AdapterError).map { "\($0.reason)" } ?? "\(type(of: error))"
                            s.events.append(.loadFailed(name: key.name, version: key.version, why: why))
                        }
                        self.deliverEvents()
                        throw error
                    }
                }
                s.loading[key] = task
                return .wait(task)
            }
            switch step {
            case .leased(let lease): return lease
            case .wait(let task): _ = try await task.value  // then lease it on the next pass
            }
        }
    }

    private enum LeaseStep {
        case leased(AdapterLease)
        case wait(Task<LoRAAdapter, Error>)
    }

    /// Makes room (evicting least recently used unleased adapters) and inserts a loaded adapter.
    private func admit(_ adapter: LoRAAdapter, key: Key, seconds: Double) throws {
        try state.withLock { s in
            s.loading[key] = nil
            let bytes = adapter.byteCount
            let budget = configuration.memoryBudgetBytes, slots = configuration.maxAdapters
            if bytes > budget { throw AdapterError(adapter: key.name, file: adapter.source, reason: .overBudget(needed: bytes, budget: budget)) }
            guard Self.makeRoom(bytes: bytes, configuration: configuration, in: &s) else {
                if s.stats.residentCount + 1 > slots { throw AdapterError(adapter: key.name, file: adapter.source, reason: .noFreeSlot(maximum: slots)) }
                throw AdapterError(adapter: key.name, file: adapter.source, reason: .overBudget(needed: bytes, budget: budget))
            }
            s.everResident.insert(key)
            s.failed.remove(key)
            s.clock += 1
            s.resident[key] = Resident(adapter: adapter, bytes: bytes, leases: 0, lastUse: s.clock)
            s.stats.residentBytes += bytes
            s.stats.residentCount += 1
            s.stats.loads += 1
            s.stats.lastLoadSeconds = seconds
            s.stats.totalLoadSeconds += seconds
            s.events.append(.loaded(name: key.name, version: key.version, seconds: seconds))
        }
    }

    func release(_ key: Key) {
        state.withLock { s in
            guard var res = s.resident[key] else { return }
            res.leases -= 1
            s.resident[key] = res
            s.stats.activeLeases -= 1
            // A superseded or unregistered version goes as soon as nobody uses it.
            if res.leases == 0 && s.registry[key.name]?.version != key.version { Self.remove(key, in: &s) }
        }
    }

    /// Whether `bytes` more fit in the budget and the slots as they stand.
    private static func fits(bytes: Int, configuration: Configuration, in s: State) -> Bool {
        s.stats.residentBytes + bytes <= configuration.memoryBudgetBytes && s.stats.residentCount + 1 <= configuration.maxAdapters
    }

    /// Evicts least recently used unleased adapters until `bytes` more fit; false if they cannot.
    private static func makeRoom(bytes: Int, configuration: Configuration, in s: inout State) -> Bool {
        guard bytes <= configuration.memoryBudgetBytes else { return false }
        while s.stats.residentBytes + bytes > configuration.memoryBudgetBytes || s.stats.residentCount + 1 > configuration.maxAdapters {
            guard let victim = s.resident.filter({ $0.value.leases == 0 }).min(by: { $0.value.lastUse < $1.value.lastUse })?.key else {
                return false
            }
            remove(victim, in: &s)
            s.stats.evictions += 1
            s.events.append(.evicted(name: victim.name, version: victim.version))
        }
        return true
    }

    private static func remove(_ key: Key, in s: inout State) {
        guard let res = s.resident.removeValue(forKey: key) else { return }
        s.stats.residentBytes -= res.bytes
        s.stats.residentCount -= 1
    }

    private static func dropUnleased(name: String, except version: Int?, in s: inout State) {
        for (key, res) in s.resident where key.name == name && key.version != version && res.leases == 0 {
            remove(key, in: &s)
        }
    }

    /// Runs blocking file work on the loader queue, off the compute thread and the cooperative pool.
    private func onLoader<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            loader.async { continuation.resume(with: Result { try body() }) }
        }
    }

    /// sha256 of the weights file (PEFT: adapter_model.safetensors; GGUF: the file).
    static func sha256(of path: String) throws -> String {
        let file = try MappedFile(path: path)
        return SHA256.hash(data: file.bytes).map { String(format: "%02x", $0) }.joined()
    }
}

/// One sequence's hold on one version of an adapter. Release it when the sequence ends
/// (it is released automatically when the lease is deallocated).
public final class AdapterLease: Sendable {
    public let adapter: LoRAAdapter
    let key: AdapterStore.Key
    private let store: AdapterStore
    private let released = Mutex(false)

    init(store: AdapterStore, key: AdapterStore.Key, adapter: LoRAAdapter) {
        self.store = store
        self.key = key
        self.adapter = adapter
    }

    /// The version leased.
    public var version: Int { key.version }

    /// Ends the lease (idempotent).
    public func release() {
        let first = released.withLock { r in
            defer { r = true }
            return !r
        }
        if first { store.release(key) }
    }

    deinit { release() }
}
