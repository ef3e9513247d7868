import ArgumentParser
import Foundation
import Tessera

struct GenerateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "Generate text from a prompt, streaming it to stdout.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var engineOptions: EngineOptions

    @Option(help: "The prompt.")
    var prompt: String

    @Flag(help: "Wrap the prompt as a user message in the model's chat template.")
    var chat = false

    @Option(help: "Most tokens to generate.")
    var maxTokens = 128

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(help: "Nucleus sampling: keep the most likely tokens up to this total probability.")
    var topP: Float = 1

    @Option(help: "Keep only the k most likely tokens (0 = off).")
    var topK = 0

    @Option(help: "Drop tokens less likely than min-p times the most likely one (0 = off).")
    var minP: Float = 0

    @Option(help: "Penalty for tokens already seen (1 = off).")
    var repetitionPenalty: Float = 1

    @Option(help: "Seed of the sampler's random generator.")
    var seed: UInt64 = 0

    @Option(help: "Stop when the text contains this string (repeatable).")
    var stop: [String] = []

    @Flag(help: "Keep generating past end-of-sequence tokens, up to --max-tokens.")
    var ignoreEos = false

    @Flag(help: "Print one JSON object {\"token_ids\": [...], \"text\": \"...\"} with only the generated tokens.")
    var json = false

    struct Output: Encodable {
        let token_ids: [Int32]
        let text: String
    }

    func run() async throws {
        try await reportingErrors {
            let modelOptions = self.modelOptions
            let (bundle, adapter) = try await onComputeThread { try modelOptions.loadWithAdapter() }
            guard let tokenizer = bundle.tokenizer else {
                throw ValidationError("\(bundle.model.source) has no tokenizer; generate needs one")
            }
            let store = AdapterStore(base: bundle.model.config, configuration: engineOptions.storeConfiguration(precision: modelOptions.adapterPrecision))
            var adapterName: String?
            if let adapter, let path = modelOptions.adapter {
                // Already loaded and checked once; the engine leases it from the store.
                try await store.register(name: adapter.name, path: path)
                adapterName = adapter.name
            }
            let engine = try Engine(model: bundle.model, tokenizer: tokenizer, adapters: store, configuration: engineOptions.engineConfiguration)
            defer { engine.stop() }
            let request = EngineRequest(
                tenant: "cli", adapter: adapterName,
                prompt: chat ? .chat([ChatMessage(role: "user", content: prompt)]) : .text(prompt),
                sampling: SamplingParameters(temperature: temperature, topK: topK, topP: topP, minP: minP,
                                             repetitionPenalty: repetitionPenalty, seed: seed),
                maxTokens: maxTokens, stopStrings: stop, ignoreEOS: ignoreEos)
            var tokenIds: [Int32] = []
            var text = ""
            for try await event in engine.submit(request) {
                guard case .delta(let piece, let ids, _, _) = event else { continue }
                tokenIds += ids
                text += piece
                if !json { FileHandle.standardOutput.write(Data(piece.utf8)) }
            }
            let result = (tokenIds: tokenIds, text: text)
            if json {
                try printJSON(Output(token_ids: result.tokenIds, text: result.text))
            } else {
                FileHandle.standardOutput.write(Data("\n".utf8))
            }
        }
    }
}
