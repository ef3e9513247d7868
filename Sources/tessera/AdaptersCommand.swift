import ArgumentParser
import Foundation
import Tessera

struct AdaptersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adapters", abstract: "Inspect and synthesize LoRA adapters.", subcommands: [Inspect.self, Synth.self])

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Format, ranks, alpha, targets, layers, size and base-model compatibility of an adapter.")

        @Argument(help: "A PEFT directory or a GGUF LoRA file.")
        var path: String

        @Option(help: "The base model to check against. Default: the default model.")
        var model: String?

        @Flag(help: "Print one JSON object.")
        var json = false

        struct Output: Encodable {
            let path: String
            let compatible: Bool
            let error: String?
            let format: String?
            let ranks: [Int]?
            let alpha: Double?
            let scales: [Float]?
            let targets: [String]?
            let layers: [Int]?
            let bytes: Int?
            /// The precision `bytes` counts (how the runtime holds it by default).
            let precision: String?
        }

        func run() async throws {
            try await reportingErrors {
                let (path, model) = (self.path, self.model)
                let output = try await onComputeThread { () throws -> Output in
                    let modelPath = try model ?? DefaultModel.ensure(log: { printError($0) }).path
                    let base = try LlamaModel.load(path: modelPath).config
                    let alpha = Self.configuredAlpha(path)
                    do {
                        let a = try LoRAAdapter.load(path: path, base: base)
                        return Output(path: path, compatible: true, error: nil, format: a.format.rawValue, ranks: a.ranks, alpha: alpha,
                                      scales: a.scales, targets: a.targets.map(\.rawValue), layers: a.layers, bytes: a.byteCount,
                                      precision: a.precision.rawValue)
                    } catch let e as AdapterError {
                        return Output(path: path, compatible: false, error: e.description, format: nil, ranks: nil, alpha: alpha,
                                      scales: nil, targets: nil, layers: nil, bytes: nil, precision: nil)
                    }
                }
                if json {
                    try printJSON(output)
                } else if output.compatible {
                    print("format:   \(output.format ?? "?")")
                    print("ranks:    \(output.ranks ?? [])")
                    print("alpha:    \(output.alpha.map { String($0) } ?? "?")  (scales \(output.scales ?? []))")
                    print("targets:  \((output.targets ?? []).joined(separator: ", "))")
                    print("layers:   \(output.layers?.count ?? 0) (\(Self.ranges(output.layers ?? [])))")
                    print("size:     \(output.bytes ?? 0) bytes as \(output.precision ?? "?")")
                    print("base:     compatible")
                } else {
                    print("base:     NOT compatible: \(output.error ?? "")")
                    throw ExitCode.failure
                }
            }
        }

        /// lora_alpha from adapter_config.json, or adapter.lora.alpha from a GGUF LoRA.
        static func configuredAlpha(_ path: String) -> Double? {
            let config = URL(fileURLWithPath: path).appendingPathComponent("adapter_config.json")
            if let data = try? Data(contentsOf: config), let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
                return (o["lora_alpha"] as? NSNumber)?.doubleValue
            }
            return (try? GGUFFile(path: path))?.metadata["adapter.lora.alpha"]?.doubleValue
        }

        static func ranges(_ xs: [Int]) -> String {
            guard let first = xs.first, let last = xs.last else { return "none" }
            return xs.count == last - first + 1 ? "\(first)–\(last)" : xs.map(String.init).joined(separator: ",")
        }
    }

    struct Synth: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write random PEFT-format adapters for benchmarks and tests (loadable by PEFT itself).")

        @Option(help: "The base model. Default: the default model.")
        var model: String?

        @Option(help: "LoRA rank.")
        var rank = 8

        @Option(help: "lora_alpha (default: 2 × rank).")
        var alpha: Double?

        @Option(help: "Comma-separated targets: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj, or 'all'.")
        var targets = "q_proj,v_proj"

        @Option(help: "How many adapters.")
        var count = 1

        @Option(help: "Seed; adapter i uses seed + i.")
        var seed: UInt64 = 0

        @Option(help: "Output directory; adapters go to OUT/adapter-000, adapter-001, ...")
        var out: String

        func validate() throws {
            guard rank > 0 else { throw ValidationError("--rank must be positive") }
            guard count > 0 else { throw ValidationError("--count must be positive") }
        }

        func run() async throws {
            try await reportingErrors {
                let names = targets == "all" ? LoRATarget.allCases.map(\.rawValue) : targets.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                let parsed = try names.map { (n: String) throws -> LoRATarget in
                    guard let t = LoRATarget(rawValue: n) else { throw ValidationError("unknown target '\(n)' (one of \(LoRATarget.allCases.map(\.rawValue)))") }
                    return t
                }
                let modelPath = try model ?? DefaultModel.ensure(log: { printError($0) }).path
                let base = try LlamaModel.load(path: modelPath).config
                for i in 0..<count {
                    let dir = URL(fileURLWithPath: out).appendingPathComponent(String(format: "adapter-%03d", i))
                    try AdapterSynthesizer.write(to: dir, base: base, baseName: modelPath, rank: rank, alpha: alpha,
                                                 targets: parsed, seed: seed &+ UInt64(i))
                    print(dir.path)
                }
            }
        }
    }
}
