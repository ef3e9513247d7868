import ArgumentParser
import Foundation
import Tessera

@main
struct TesseraCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tessera",
        abstract: "Serve one shared base LLM to many tenants, each with their own LoRA adapters.",
        subcommands: [UsageCommand.self, AuditCommand.self, GenerateCommand.self, ScoreCommand.self, TokenizeCommand.self, DetokenizeCommand.self,
                      RunBatchCommand.self, ServeCommand.self, TenantsCommand.self, ModelsCommand.self, AdaptersCommand.self, BenchModelCommand.self, BenchLoRACommand.self, BenchEngineCommand.self, BenchMatmulCommand.self]
    )
}

/// Options every model-using command shares.
struct ModelOptions: ParsableArguments {
    @Option(help: "A GGUF file or a Hugging Face model directory. Default: SmolLM2-135M-Instruct, fetched on first use.")
    var model: String?

    @Option(help: "Compute threads (OpenBLAS runs single-threaded inside them). Default: all cores.")
    var threads: Int?

    @Option(help: "A LoRA adapter: a PEFT directory or a llama.cpp GGUF LoRA file.")
    var adapter: String?

    @Flag(help: "Fold the adapter into a copy of the weights it targets (single-tenant use) instead of applying it unmerged.")
    var merge = false

    @Option(help: "MiB the model may spend on f32 copies of quantized weights, to speed up prefill and big batches. Default: 0, every weight stays in its stored type.")
    var weightMemory: Int = 0

    @Option(help: "Activations against quantized weights: q8x2 (two 8-bit levels per block, about 16-bit precision, integer dot products: the f32 path's tokens), q8 (one 8-bit level, as llama.cpp: logits move by a few tenths, faster prefill and big batches) or f32 (dequantized weights, slow).")
    var activations: ActivationPrecision = .q8x2

    @Option(help: "Rows of quantized weights: interleaved (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K regrouped 8 rows at a time at load, for the fast kernel) or stored (read in place from the file).")
    var weightLayout: WeightLayout = .interleaved

    @Option(help: "KV cache precision: f16 (as llama.cpp's default: half the memory and half the bytes a decode step reads; greedy tokens stay the f32 path's on SmolLM2) or f32 (with --activations f32: the f32 path's numbers).")
    var kvPrecision: KVPrecision = .f16

    @Option(help: "Precision adapters are held in: f16 (half the memory, and half the bytes a batch of many adapters reads per step; an adapter outside f16's range stays f32) or f32 (PEFT's numbers).")
    var adapterPrecision: AdapterPrecision = .f16

    /// Loads the model and the adapter, if any; with --merge, returns the merged model and no adapter.
    func loadWithAdapter() throws -> (ModelBundle, LoRAAdapter?) {
        let bundle = try load()
        guard let path = adapter else { return (bundle, nil) }
        // Merging folds the adapter into f32 weights and drops it: no reason to round it to f16 first.
        let lora = try LoRAAdapter.load(path: path, base: bundle.model.config, precision: merge ? .f32 : adapterPrecision)
        if merge { return (ModelBundle(model: try bundle.model.merged(with: lora), tokenizer: bundle.tokenizer), nil) }
        return (bundle, lora)
    }

    /// The flags as the runtime configuration's model section.
    var configuration: RuntimeConfiguration.Model {
        var c = RuntimeConfiguration.Model()
        c.path = model
        c.weightMemoryMiB = weightMemory
        c.activations = activations
        c.weightLayout = weightLayout
        c.kvPrecision = kvPrecision
        return c
    }

    /// Loads the model (fetching the default one if needed) after setting the thread count.
    /// `rowLimits` overrides the measured matmul crossovers (benchmarks).
    func load(rowLimits: MatmulRowLimits? = nil) throws -> ModelBundle {
        ComputeThreads.configure(threads: threads ?? ComputeThreads.available)
        var c = configuration
        if let rowLimits { c.rowLimits = rowLimits }
        let path = try c.path ?? DefaultModel.ensure(log: { printError($0) }).path
        guard weightMemory >= 0 else { throw ValidationError("--weight-memory must be >= 0") }
        return try ModelBundle.load(path: path, options: c.loadOptions)
    }
}

/// Options for commands that take text.
struct TextOptions: ParsableArguments {
    @Option(help: "The text.")
    var text: String?

    @Option(help: "Read the text from a file (must be UTF-8).")
    var textFile: String?

    func utf8Bytes() throws -> [UInt8] {
        if let text { return Array(text.utf8) }
        if let textFile {
            guard let data = FileManager.default.contents(atPath: textFile) else {
                throw ValidationError("cannot read --text-file \(textFile)")
            }
            return Array(data)
        }
        throw ValidationError("give --text or --text-file")
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Writes one JSON object on a line of stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.withoutEscapingSlashes]
    let data = try encoder.encode(value)
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}

/// Makes errors print as their own description ("file: reason"), with exit code 1.
func reportingErrors<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch let e as ValidationError { throw e } catch let e as CleanExit { throw e } catch let e as ExitCode {
        throw e
    } catch {
        printError("error: \(error)")
        throw ExitCode.failure
    }
}

/// The CLI's dedicated compute thread: model loading and forward passes never run on Swift's
/// cooperative pool.
let computeThread = ComputeThread()

/// Runs `body` on the compute thread.
func onComputeThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await computeThread.run(body)
}

extension ActivationPrecision: ExpressibleByArgument {}
extension WeightLayout: ExpressibleByArgument {}
extension KVPrecision: ExpressibleByArgument {}
extension AdapterPrecision: ExpressibleByArgument {}
