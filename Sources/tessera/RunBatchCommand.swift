import ArgumentParser
import Foundation
import Tessera

struct RunBatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run-batch",
        abstract: "Run a JSONL file of requests of many tenants through the engine concurrently.",
        discussion: """
        Each input line: {"id": ..., "tenant": ..., "adapter": NAME or null, "prompt": TEXT, "max_tokens": N, \
        "temperature": T, "seed": S, "ignore_eos": BOOL}. Each output line, in input order: \
        {"id": ..., "token_ids": [...], "text": ..., "finish_reason": ...} or {"id": ..., "error": ...}.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var engineOptions: EngineOptions

    @Option(help: "A folder whose every sub-folder is an adapter, named by the sub-folder.")
    var adapters: String?

    @Option(help: "Input JSONL.")
    var requests: String

    @Option(help: "Output JSONL.")
    var out: String

    struct Line: Decodable {
        let tenant: String?
        let adapter: String?
        let prompt: String
        let max_tokens: Int?
        let temperature: Float?
        let top_p: Float?
        let seed: UInt64?
        let ignore_eos: Bool?
    }

    func run() async throws {
        try await reportingErrors {
            guard let data = FileManager.default.contents(atPath: requests) else { throw ValidationError("cannot read --requests \(requests)") }
            let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
            let modelOptions = self.modelOptions
            let bundle = try await onComputeThread { try modelOptions.load() }
            guard let tokenizer = bundle.tokenizer else { throw ValidationError("\(bundle.model.source) has no tokenizer") }
            let store = AdapterStore(base: bundle.model.config, configuration: engineOptions.storeConfiguration(precision: modelOptions.adapterPrecision))
            if let adapters {
                let folders = try FileManager.default.contentsOfDirectory(atPath: adapters).sorted()
                for name in folders {
                    var isDirectory: ObjCBool = false
                    let path = URL(fileURLWithPath: adapters).appendingPathComponent(name).path
                    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else { continue }
                    do { try await store.register(name: name, path: path) } catch { printError("skipping adapter: \(error)") }
                }
            }
            let engine = try Engine(model: bundle.model, tokenizer: tokenizer, adapters: store, configuration: engineOptions.engineConfiguration)
            defer { engine.stop() }
            let progress = ProgressBar(total: lines.count)
            let started = ContinuousClock.now
            let results = await withTaskGroup(of: (Int, Outcome).self) { group in
                for (index, text) in lines.enumerated() {
                    group.addTask {
                        let id = Self.rawID(text)
                        let line: Line
                        do { line = try JSONDecoder().decode(Line.self, from: Data(text.utf8)) } catch {
                            return (index, Outcome(id: id, error: "line \(index + 1): \(Self.describe(error))"))
                        }
                        let request = EngineRequest(
                            tenant: line.tenant ?? "default", adapter: line.adapter, prompt: .text(line.prompt),
                            sampling: SamplingParameters(temperature: line.temperature ?? 0, topP: line.top_p ?? 1, seed: line.seed ?? 0),
                            maxTokens: line.max_tokens ?? 128, ignoreEOS: line.ignore_eos ?? false)
                        var ids: [Int32] = []
                        var output = ""
                        var reason = "stop"
                        do {
                            for try await event in engine.submit(request) {
                                switch event {
                                case .delta(let piece, let t, _, _): ids += t; output += piece
                                case .finished(let r, _): reason = r.rawValue
                                }
                            }
                        } catch {
                            return (index, Outcome(id: id, error: "\(error)"))
                        }
                        return (index, Outcome(id: id, tokenIds: ids, text: output, finishReason: reason))
                    }
                }
                var results = [Outcome](repeating: Outcome(id: "null"), count: lines.count)
                for await (index, result) in group {
                    results[index] = result
                    progress.advance()
                }
                return results
            }
            progress.finish()
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let generated = results.reduce(0) { $0 + ($1.tokenIds?.count ?? 0) }
            var outData = Data()
            for r in results { outData += Data((try r.jsonLine() + "\n").utf8) }
            try outData.write(to: URL(fileURLWithPath: out))
            let failed = results.filter { $0.error != nil }.count
            printError("\(results.count - failed) completed, \(failed) failed; wrote \(out)")
            printError(String(format: "%d generated tokens in %.3f s: %.1f tokens/s", generated, seconds, Double(generated) / max(seconds, 1e-9)))
        }
    }

    /// One output line; `id` is the input's id as raw JSON, echoed unchanged.
    struct Outcome: Sendable {
        var id: String
        var tokenIds: [Int32]? = nil
        var text: String? = nil
        var finishReason: String? = nil
        var error: String? = nil

        func jsonLine() throws -> String {
            var fields = ["\"id\":\(id)"]
            func encode<T: Encodable>(_ v: T) throws -> String {
                let e = JSONEncoder()
                e.outputFormatting = [.withoutEscapingSlashes]
                return String(decoding: try e.encode(v), as: UTF8.self)
            }
            if let error { fields.append("\"error\":\(try encode(error))") }
            if let tokenIds { fields.append("\"token_ids\":\(try encode(tokenIds))") }
            if let text { fields.append("\"text\":\(try encode(text))") }
            if let finishReason { fields.append("\"finish_reason\":\(try encode(finishReason))") }
            return "{" + fields.joined(separator: ",") + "}"
        }
    }

    /// The `id` field of a line as raw JSON ("null" when absent or the line is not JSON).
    static func rawID(_ line: String) -> String {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any], let id = object["id"],
              let data = try? JSONSerialization.data(withJSONObject: [id], options: [.withoutEscapingSlashes]) else { return "null" }
        return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing field '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            "field '\(c.codingPath.map(\.stringValue).joined(separator: "."))': \(c.debugDescription)"
        case DecodingError.dataCorrupted(let c): "not JSON: \(c.debugDescription)"
        default: "\(error)"
        }
    }
}

/// A one-line progress bar on stderr when it is a terminal.
final class ProgressBar: @unchecked Sendable {
    private let total: Int
    private var done = 0
    private let lock = NSLock()
    private let enabled = isatty(2) != 0
    private let started = Date()

    init(total: Int) { self.total = total }

    func advance() {
        lock.lock()
        done += 1
        let d = done
        lock.unlock()
        guard enabled else { return }
        let width = 30, filled = total == 0 ? width : width * d / total
        let rate = Double(d) / max(Date().timeIntervalSince(started), 1e-3)
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        FileHandle.standardError.write(Data(String(format: "\r%@ %d/%d  %.1f req/s", bar, d, total, rate).utf8))
    }

    func finish() { if enabled { FileHandle.standardError.write(Data("\n".utf8)) } }
}
