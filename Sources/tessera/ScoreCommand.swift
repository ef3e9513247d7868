import ArgumentParser
import Foundation
import Tessera

struct ScoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Teacher-forced log-probabilities of a text: logprobs[i] = log p(token[i+1] | tokens[0...i]).")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var textOptions: TextOptions

    @Flag(help: "Print {\"token_ids\": [...], \"logprobs\": [...]}.")
    var json = false

    struct Output: Encodable {
        let token_ids: [Int32]
        let logprobs: [Float]
    }

    func run() async throws {
        try await reportingErrors {
            let bytes = try textOptions.utf8Bytes()
            let modelOptions = self.modelOptions
            let (bundle, adapter) = try await onComputeThread { try modelOptions.loadWithAdapter() }
            guard let tokenizer = bundle.tokenizer else { throw ValidationError("\(bundle.model.source) has no tokenizer") }
            let ids = try tokenizer.encode(utf8: bytes)
            let logprobs = try await onComputeThread { try Generator(model: bundle.model, tokenizer: tokenizer).score(ids, adapter: adapter) }
            if json {
                try printJSON(Output(token_ids: ids, logprobs: logprobs))
            } else {
                var total: Double = 0
                for (i, lp) in logprobs.enumerated() {
                    total += Double(lp)
                    let piece = (try? tokenizer.decode([ids[i + 1]])) ?? "?"
                    print(String(format: "%6d  %10.4f  %@", ids[i + 1], lp, piece.debugDescription))
                }
                print(String(format: "total %.4f over %d tokens", total, logprobs.count))
            }
        }
    }
}
