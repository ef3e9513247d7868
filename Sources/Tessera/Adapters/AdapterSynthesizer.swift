import Foundation

/// Makes random PEFT-format LoRA adapters for a base model: for benchmarks and tests, in the
/// exact layout PEFT saves (`adapter_config.json` + `adapter_model.safetensors`).
public enum AdapterSynthesizer {
    /// Writes one adapter directory. A is uniform in ±1/√in (PEFT's Kaiming-style range),
    /// B is uniform in ±`bScale`, so the delta is visible but small.
    public static func write(to directory: URL, base: LlamaConfig, baseName: String, rank: Int, alpha: Double? = nil,
                             targets: [LoRATarget], seed: UInt64, bScale: Float = 0.02) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var rng = SeededGenerator(seed: seed)
        func uniform(_ n: Int, _ bound: Float) -> [Float] { (0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * bound } }
        var tensors: [SafetensorsWriter.Tensor] = []
        for layer in 0..<base.layerCount {
            for t in targets {
                let (input, output) = t.dimensions(base)
                let prefix = "base_model.model.model.layers.\(layer).\(t.hfModule)"
                tensors.append(.init(name: "\(prefix).lora_A.weight", shape: [rank, input], values: uniform(rank * input, 1 / Float(input).squareRoot())))
                tensors.append(.init(name: "\(prefix).lora_B.weight", shape: [output, rank], values: uniform(output * rank, bScale)))
            }
        }
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: directory.appendingPathComponent("adapter_model.safetensors"))
        let config: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": baseName,
            "r": rank, "lora_alpha": alpha ?? Double(2 * rank), "lora_dropout": 0.0, "bias": "none",
            "target_modules": targets.map(\.rawValue), "fan_in_fan_out": false, "use_rslora": false, "use_dora": false,
            "init_lora_weights": true, "inference_mode": true, "modules_to_save": NSNull(),
            "layers_to_transform": NSNull(), "layers_pattern": NSNull(), "rank_pattern": [String: Any](), "alpha_pattern": [String: Any](),
        ]
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
            .write(to: directory.appendingPathComponent("adapter_config.json"))
    }
}
