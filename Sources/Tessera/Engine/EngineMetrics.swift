import Metrics
import Synchronization

/// The engine's metrics through swift-metrics, per tenant and adapter, so a server can export
/// them (Prometheus) with whatever backend it bootstraps. Names follow the inference-gateway
/// conventions where one exists.
struct EngineMetrics: Sendable {
    private let tenants: LabelLimiter
    private let adapters: LabelLimiter

    init(labelLimit: Int = 100) {
        tenants = LabelLimiter(limit: labelLimit)
        adapters = LabelLimiter(limit: labelLimit)
    }

    private func dims(_ tenant: String, _ adapter: String?) -> [(String, String)] {
        [("tenant", tenants.label(tenant)), ("adapter", adapter.map { adapters.label($0) } ?? "")]
    }

    func rejected(tenant: String) {
        Counter(label: "tessera_requests_rejected_total", dimensions: [("tenant", tenants.label(tenant))]).increment()
    }

    func admitted(tenant: String, adapter: String?) {
        Counter(label: "tessera_requests_admitted_total", dimensions: dims(tenant, adapter)).increment()
    }

    func finished(tenant: String, adapter: String?, reason: EngineFinishReason) {
        Counter(label: "tessera_requests_finished_total", dimensions: dims(tenant, adapter) + [("reason", reason.rawValue)]).increment()
    }

    func tokens(tenant: String, adapter: String?, prompt: Int, generated: Int) {
        if prompt > 0 { Counter(label: "tessera_prompt_tokens_total", dimensions: dims(tenant, adapter)).increment(by: prompt) }
        if generated > 0 { Counter(label: "tessera_generation_tokens_total", dimensions: dims(tenant, adapter)).increment(by: generated) }
    }

    func timeToFirstToken(tenant: String, adapter: String?, nanoseconds: Int64) {
        Timer(label: "tessera_time_to_first_token_seconds", dimensions: dims(tenant, adapter)).recordNanoseconds(nanoseconds)
    }

    func timePerOutputToken(tenant: String, adapter: String?, nanoseconds: Int64) {
        Timer(label: "tessera_time_per_output_token_seconds", dimensions: dims(tenant, adapter)).recordNanoseconds(nanoseconds)
    }

    func occupancy(queued: [String: Int], running: [String: Int], kvUtilization: Double) {
        for (t, n) in fold(queued) { Gauge(label: "tessera_queued_requests", dimensions: [("tenant", t)]).record(n) }
        for (t, n) in fold(running) { Gauge(label: "tessera_running_requests", dimensions: [("tenant", t)]).record(n) }
        Gauge(label: "tessera_kv_cache_utilization").record(kvUtilization)
    }

    private func fold(_ perTenant: [String: Int]) -> [String: Int] {
        var out: [String: Int] = [:]
        for (t, n) in perTenant { out[tenants.label(t), default: 0] += n }
        return out
    }
}

/// Caps a label's distinct values: the first `limit` values seen keep their name, later ones
/// become `other`, so one tenant per request id cannot blow up a scrape.
final class LabelLimiter: Sendable {
    static let overflow = "other"
    private let limit: Int
    private let seen = Mutex<Set<String>>([])

    init(limit: Int) { self.limit = limit }

    func label(_ value: String) -> String {
        seen.withLock { s in
            if s.contains(value) { return value }
            guard s.count < limit else { return Self.overflow }
            s.insert(value)
            return value
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (s, a) = components
        return s * 1_000_000_000 + a / 1_000_000_000
    }
}
