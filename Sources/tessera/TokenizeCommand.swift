import ArgumentParser
import Foundation
import Tessera

struct TokenizeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenize", abstract: "Text to token ids.")

    @Option(help: "A GGUF file, a Hugging Face model directory, or a tokenizer.json. Default: the default model.")
    var model: String?
    @OptionGroup var textOptions: TextOptions

    @Flag(help: "Print {\"token_ids\": [...]}.")
    var json = false

    struct Output: Encodable { let token_ids: [Int32] }

    func run() async throws {
        try await reportingErrors {
            let bytes = try textOptions.utf8Bytes()
            let tokenizer = try loadTokenizer(model)
            let ids = try tokenizer.encode(utf8: bytes)
            if json { try printJSON(Output(token_ids: ids)) } else { print(ids.map(String.init).joined(separator: " ")) }
        }
    }
}

struct DetokenizeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "detokenize", abstract: "Token ids to text.")

    @Option(help: "A GGUF file, a Hugging Face model directory, or a tokenizer.json. Default: the default model.")
    var model: String?

    @Argument(help: "Token ids (space or comma separated, or a JSON list).")
    var ids: [String]

    @Flag(help: "Print {\"text\": \"...\"}.")
    var json = false

    struct Output: Encodable { let text: String }

    func run() async throws {
        try await reportingErrors {
            let tokens = try ids.joined(separator: " ")
                .split(whereSeparator: { " ,[]\n\t".contains($0) })
                .map { (s: Substring) throws -> Int32 in
                    guard let v = Int32(s) else { throw ValidationError("'\(s)' is not a token id") }
                    return v
                }
            let text = try loadTokenizer(model).decode(tokens)
            if json { try printJSON(Output(text: text)) } else { print(text) }
        }
    }
}

/// Loads only the tokenizer: from tokenizer.json directly, or from a model file or directory.
func loadTokenizer(_ path: String?) throws -> Tokenizer {
    let resolved = try path ?? DefaultModel.ensure(log: { printError($0) }).path
    if resolved.hasSuffix(".json") { return try Tokenizer(tokenizerJSON: URL(fileURLWithPath: resolved)) }
    guard let tokenizer = try ModelBundle.loadTokenizer(path: resolved) else {
        throw ValidationError("\(resolved) has no tokenizer")
    }
    return tokenizer
}
