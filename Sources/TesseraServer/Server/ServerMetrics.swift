import Foundation
import Metrics
import Prometheus
import Synchronization
import Tessera

/// `/metrics`: the swift-metrics series (the engine's per-tenant and per-adapter counters,
/// histograms and gauges, bootstrapped into `registry` by `tessera serve`) plus the gauges that
/// Kubernetes inference gateways route by, in vLLM's names, rendered from in-memory snapshots
/// (never the database).
final class ServerMetrics: Sendable {
    /// The registry swift-metrics writes to, when the process bootstrapped one.
    let registry: PrometheusCollectorRegistry?

    init(registry: PrometheusCollectorRegistry?) { self.registry = registry }

    /// Tenants past their budget's alert threshold this month.
    private let alerts = Mutex(Set<String>())
    func budgetAlert(tenant: String) { alerts.withLock { _ = $0.insert(tenant) } }

    /// Response-cache lookups per tenant (`result`: hit or miss), into swift-metrics.
    func responseCache(hit: Bool, tenant: String) {
        Counter(label: "tessera_response_cache_requests_total", dimensions: [("tenant", tenant), ("result", hit ? "hit" : "miss")]).increment()
    }

    func render(engine: Engine.Statistics, configuration: RuntimeConfiguration, resident: [(name: String, rank: Int)],
                cache: ResponseCache.Statistics) -> String {
        var out = registry?.emitToString() ?? ""
        func gauge(_ name: String, _ help: String, _ value: String, labels: [(String, String)] = []) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n"
            let l = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
            out += "\(name)\(l) \(value)\n"
        }
        gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.", "\(engine.queued)")
        gauge("vllm:num_requests_running", "Requests running in the engine.", "\(engine.running)")
        let usage = engine.kvBlocksTotal > 0 ? Double(engine.kvBlocksTotal - engine.kvBlocksFree) / Double(engine.kvBlocksTotal) : 0
        gauge("vllm:kv_cache_usage_perc", "KV cache usage, 0 to 1.", "\(usage)")
        gauge("vllm:lora_requests_info", "Running and waiting LoRA adapters; the value is the time of the snapshot.",
              String(format: "%.3f", Date().timeIntervalSince1970),
              labels: [("max_lora", "\(configuration.adapters.maxAdapters)"), ("running_lora_adapters", engine.runningAdapters.joined(separator: ",")),
                       ("waiting_lora_adapters", engine.waitingAdapters.joined(separator: ","))])
        gauge("vllm:cache_config_info", "KV cache configuration.", "1",
              labels: [("block_size", "\(configuration.engine.kvBlockSize)"), ("num_gpu_blocks", "\(engine.kvBlocksTotal)")])
        out += "# HELP tessera_lora_adapter_loaded Adapters resident in memory (level: where they are held).\n# TYPE tessera_lora_adapter_loaded gauge\n"
        for a in resident {
            out += "tessera_lora_adapter_loaded{adapter_name=\"\(Self.escape(a.name))\",level=\"cpu\",rank=\"\(a.rank)\"} 1\n"
        }
        gauge("tessera_response_cache_bytes", "Bytes held by the response cache.", "\(cache.bytes)")
        gauge("tessera_response_cache_entries", "Responses held by the response cache.", "\(cache.entries)")
        gauge("tessera_response_cache_hits", "Response cache hits since start.", "\(cache.hits)")
        gauge("tessera_response_cache_evictions", "Responses evicted from the cache since start (budget).", "\(cache.evictions)")
        let alerted = alerts.withLock { $0.sorted() }
        out += "# HELP tessera_tenant_budget_alert 1 when the tenant crossed its monthly budget's alert threshold.\n# TYPE tessera_tenant_budget_alert gauge\n"
        for t in alerted { out += "tessera_tenant_budget_alert{tenant=\"\(Self.escape(t))\"} 1\n" }
        return out
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}
