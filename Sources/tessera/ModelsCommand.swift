import ArgumentParser
import Foundation
import Tessera

struct ModelsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models", abstract: "Manage models.", subcommands: [Pull.self, Path.self, Synth.self])

    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Fetch the default model (SmolLM2-135M-Instruct Q4_1) into the cache.")
        func run() async throws {
            try await reportingErrors {
                let url = try DefaultModel.ensure(log: { printError($0) })
                print(url.path)
            }
        }
    }

    struct Path: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print where the default model is (or will be) cached.")
        func run() async throws { print(DefaultModel.path.path) }
    }

    struct Synth: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a Llama-family GGUF of random weights of a real model's shape (for memory and speed checks).")

        @Option(help: "Shape: llama-1b (TinyLlama-1.1B) or smol-135m (SmolLM2-135M).")
        var shape = "llama-1b"

        @Option(help: "Stored type of the matrices: q4_0, q4_1, q5_0, q5_1, q8_0, q4_k or q5_k (sizes multiples of 256), f16 or f32.")
        var type = "q4_0"

        @Option(help: "Seed of the random weights.")
        var seed: UInt64 = 1

        @Option(help: "Output GGUF path.")
        var out: String

        func run() async throws {
            try await reportingErrors {
                let shapes: [String: SyntheticModel.Shape] = ["llama-1b": .llama1B, "smol-135m": .smol135M]
                let types: [String: GGMLType] = ["q4_0": .q4_0, "q4_1": .q4_1, "q5_0": .q5_0, "q5_1": .q5_1, "q8_0": .q8_0,
                                                       "q4_k": .q4_K, "q5_k": .q5_K, "f16": .f16, "f32": .f32]
                guard let s = shapes[shape] else { throw ValidationError("--shape must be one of \(shapes.keys.sorted())") }
                guard let t = types[type.lowercased()] else { throw ValidationError("--type must be one of \(types.keys.sorted())") }
                let bytes = try SyntheticModel.write(path: out, shape: s, type: t, seed: seed)
                print("wrote \(out): \(s.parameterCount) parameters as \(t), \(bytes) bytes")
            }
        }
    }
}
