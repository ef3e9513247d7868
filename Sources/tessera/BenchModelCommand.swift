import ArgumentParser
import Foundation
import Tessera
#if canImport(Glibc)
import Glibc
#endif

struct BenchModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-model",
        abstract: "Prefill and decode speed of the base model on fixed prompt tokens (see bench/model_bench.py).")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "A JSON list of prompt token ids (bench/prompt_tokens_512.json).")
    var promptTokensFile: String

    @Option(help: "Tokens to decode greedily after the prompt (end-of-sequence ignored).")
    var genTokens = 128

    @Option(help: "Measured runs (after one warm-up run).")
    var runs = 3

    @Option(help: "Sequences decoded together (batch > 1: each gets the prompt, then greedy decode steps of one row per sequence); decode tok/s counts every sequence's tokens.")
    var batch = 1

    @Flag(help: "Print one JSON object (the contract bench/model_bench.py reads).")
    var json = false

    struct Output: Encodable {
        let engine = "tessera"
        let threads: Int
        let batch: Int
        let prefill_tokens_per_s: [Double]
        let decode_tokens_per_s: [Double]
        let peak_rss_bytes: Int
        /// KV-cache bytes one decode step reads per cached position (keys and values, at the
        /// cache's precision).
        let kv_bytes_per_position: Int
        /// The run's settings: activations (q8x2, q8, f32) and KV cache precision (f32, f16).
        let activations: String
        let kv_cache: String
        let system_info: String
    }

    func validate() throws {
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1 (got \(runs))") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1 (got \(batch))") }
        guard genTokens >= 1 else { throw ValidationError("--gen-tokens must be at least 1 (got \(genTokens))") }
    }

    func run() async throws {
        try await reportingErrors {
            guard let data = FileManager.default.contents(atPath: promptTokensFile),
                  let prompt = try? JSONDecoder().decode([Int32].self, from: data), !prompt.isEmpty else {
                throw ValidationError("--prompt-tokens-file \(promptTokensFile) is not a non-empty JSON list of token ids")
            }
            let modelOptions = self.modelOptions
            let bundle = try await onComputeThread { try modelOptions.load() }
            let generator = Generator(model: bundle.model, tokenizer: nil)
            generator.prefillChunk = prompt.count
            let request = GenerationRequest(promptTokens: prompt, maxTokens: genTokens + 1, ignoreEOS: true)
            let (runs, genTokens, batch) = (self.runs, self.genTokens, self.batch)
            let (prefill, decode) = try await onComputeThread {
                var prefill: [Double] = [], decode: [Double] = []
                for run in 0...runs {
                    if batch > 1 {
                        let (p, d) = try Self.batchedRun(model: bundle.model, prompt: prompt, batch: batch, steps: genTokens)
                        if run > 0 { prefill.append(p); decode.append(d) }
                        continue
                    }
                    let result = try generator.generate(request)
                    // The first generated token comes from the prefill logits; decode covers the rest.
                    if run > 0 {
                        prefill.append(Double(prompt.count) / result.prefillSeconds)
                        decode.append(Double(genTokens) / result.decodeSeconds)
                    }
                }
                return (prefill, decode)
            }
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            let output = Output(threads: ComputeThreads.current, batch: batch, prefill_tokens_per_s: prefill, decode_tokens_per_s: decode,
                                peak_rss_bytes: Int(usage.ru_maxrss) * 1024,
                                kv_bytes_per_position: KVBlockPool.bytesPerBlock(config: bundle.model.config, blockSize: 1, precision: bundle.model.kvPrecision),
                                activations: bundle.model.activations.rawValue, kv_cache: bundle.model.kvPrecision.rawValue,
                                system_info: ComputeThreads.report)
            if json {
                try printJSON(output)
            } else {
                let median = { (xs: [Double]) in xs.sorted()[xs.count / 2] }
                print(ComputeThreads.report)
                print(String(format: "prefill %d tokens: %.1f tok/s (median of %d)", prompt.count, median(prefill), runs))
                print(String(format: "decode %d tokens: %.1f tok/s (median of %d)", genTokens, median(decode), runs))
                print(String(format: "peak RSS: %.0f MB", Double(output.peak_rss_bytes) / 1e6))
            }
        }
    }

    /// Prefills `batch` sequences (one after another) and decodes `steps` greedy tokens for all of
    /// them together, one row per sequence per step. Returns (prefill tok/s, decode tok/s).
    static func batchedRun(model: LlamaModel, prompt: [Int32], batch: Int, steps: Int) throws -> (Double, Double) {
        let scratch = model.makeScratch()
        let caches = try (0..<batch).map { _ in try model.makeCache(capacity: prompt.count + steps + 1) }
        var forward = ForwardBatch()
        var next = [Int32](repeating: 0, count: batch)
        let start = DispatchTime.now().uptimeNanoseconds
        for s in 0..<batch {
            forward.removeAll()
            for (i, t) in prompt.enumerated() { forward.append(token: t, position: i, sequence: s, wantLogits: i == prompt.count - 1) }
            let logits = try model.forward(forward, caches: caches, scratch: scratch)
            next[s] = Int32(logits.row(0).indices.max { logits.row(0)[$0] < logits.row(0)[$1] } ?? 0)
        }
        let mid = DispatchTime.now().uptimeNanoseconds
        for step in 0..<steps {
            forward.removeAll()
            for s in 0..<batch { forward.append(token: next[s], position: prompt.count + step, sequence: s, wantLogits: true) }
            let logits = try model.forward(forward, caches: caches, scratch: scratch)
            for s in 0..<batch {
                let row = logits.row(s)
                var best = 0
                for i in 1..<row.count where row[i] > row[best] { best = i }
                next[s] = Int32(best)
            }
        }
        let end = DispatchTime.now().uptimeNanoseconds
        return (Double(batch * prompt.count) / (Double(mid - start) / 1e9), Double(batch * steps) / (Double(end - mid) / 1e9))
    }
}
