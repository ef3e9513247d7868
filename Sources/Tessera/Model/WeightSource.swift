import Foundation

/// Where a model's weights come from: a GGUF file or a Hugging Face directory. Tensors are
/// asked for by their GGUF names (`blk.3.attn_q.weight`) and shapes are outermost-first.
protocol WeightSource {
    /// The file or directory, for errors.
    var path: String { get }
    /// Whether attn_q / attn_k rows are stored permuted for adjacent-pair RoPE (GGUF llama).
    var qkRowsPermuted: Bool { get }
    /// Shape of a tensor, outermost-first (`[out, in]` for a linear weight), or nil if absent.
    func shape(of name: String) -> [Int]?
    /// Writes the tensor as float32 into `destination`.
    func load(_ name: String, into destination: UnsafeMutablePointer<Float>) throws(ModelError)
    /// The tensor's bytes in their stored type, read in place; nil if absent.
    func stored(_ name: String) -> StoredTensor?
}

struct GGUFWeightSource: WeightSource {
    let gguf: GGUFFile
    var path: String { gguf.path }
    var qkRowsPermuted: Bool { true }

    func shape(of name: String) -> [Int]? { gguf.tensor(named: name).map { Array($0.dimensions.reversed()) } }

    func load(_ name: String, into destination: UnsafeMutablePointer<Float>) throws(ModelError) {
        guard let info = gguf.tensor(named: name) else { throw ModelError(file: path, reason: .missingTensor(name)) }
        do { try gguf.dequantize(info, into: destination) } catch { throw ModelError(error) }
    }

    func stored(_ name: String) -> StoredTensor? {
        guard let info = gguf.tensor(named: name) else { return nil }
        return StoredTensor(type: info.type, bytes: gguf.data(of: info), owner: gguf.file)
    }
}

/// A Hugging Face directory: `model.safetensors`, or shards listed in `model.safetensors.index.json`.
struct HFWeightSource: WeightSource {
    let directory: URL
    let files: [SafetensorsFile]
    let index: [String: (file: SafetensorsFile, info: SafetensorsTensorInfo)]
    var path: String { directory.path }
    var qkRowsPermuted: Bool { false }

    init(directory: URL) throws(ModelError) {
        self.directory = directory
        let fm = FileManager.default
        let single = directory.appendingPathComponent("model.safetensors")
        let indexURL = directory.appendingPathComponent("model.safetensors.index.json")
        var shardNames: [String]
        if fm.fileExists(atPath: single.path) {
            shardNames = ["model.safetensors"]
        } else if fm.fileExists(atPath: indexURL.path) {
            guard let data = try? Data(contentsOf: indexURL),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = object["weight_map"] as? [String: String] else {
                throw ModelError(file: indexURL.path, reason: .format(.invalidJSON("no 'weight_map' object")))
            }
            shardNames = Array(Set(map.values)).sorted()
            for name in shardNames where name.contains("/") || name.hasPrefix(".") {
                throw ModelError(file: indexURL.path, reason: .format(.invalidJSON("shard name '\(name)' is not a plain file name")))
            }
        } else {
            if fm.fileExists(atPath: directory.appendingPathComponent("pytorch_model.bin").path) {
                throw ModelError(file: directory.path, reason: .format(.io("only pytorch_model.bin (pickle) found; Tessera reads safetensors only")))
            }
            throw ModelError(file: directory.path, reason: .format(.io("no model.safetensors nor model.safetensors.index.json")))
        }
        var files: [SafetensorsFile] = []
        var index: [String: (file: SafetensorsFile, info: SafetensorsTensorInfo)] = [:]
        for name in shardNames {
            let f: SafetensorsFile
            do { f = try SafetensorsFile(path: directory.appendingPathComponent(name).path) } catch { throw ModelError(error) }
            files.append(f)
            for (tensorName, info) in f.tensors {
                if index[tensorName] != nil { throw ModelError(file: f.path, reason: .format(.duplicateTensor(tensorName))) }
                index[tensorName] = (f, info)
            }
        }
        self.files = files
        self.index = index
    }

    /// GGUF tensor name → Hugging Face tensor name.
    static func hfName(_ name: String) -> String {
        switch name {
        case "token_embd.weight": return "model.embed_tokens.weight"
        case "output_norm.weight": return "model.norm.weight"
        case "output.weight": return "lm_head.weight"
        default: break
        }
        let parts = name.split(separator: ".")
        guard parts.count == 4, parts[0] == "blk" else { return name }
        let suffix: String = switch parts[2] {
        case "attn_norm": "input_layernorm"
        case "attn_q": "self_attn.q_proj"
        case "attn_k": "self_attn.k_proj"
        case "attn_v": "self_attn.v_proj"
        case "attn_output": "self_attn.o_proj"
        case "ffn_norm": "post_attention_layernorm"
        case "ffn_gate": "mlp.gate_proj"
        case "ffn_up": "mlp.up_proj"
        case "ffn_down": "mlp.down_proj"
        default: String(parts[2])
        }
        return "model.layers.\(parts[1]).\(suffix).\(parts[3])"
    }

    func shape(of name: String) -> [Int]? { index[Self.hfName(name)]?.info.shape }

    func load(_ name: String, into destination: UnsafeMutablePointer<Float>) throws(ModelError) {
        guard let entry = index[Self.hfName(name)] else { throw ModelError(file: path, reason: .missingTensor(Self.hfName(name))) }
        entry.file.convert(entry.info, into: destination)
    }

    func stored(_ name: String) -> StoredTensor? {
        guard let entry = index[Self.hfName(name)] else { return nil }
        let type: GGMLType = switch entry.info.dtype {
        case .f32: .f32
        case .f16: .f16
        case .bf16: .bf16
        }
        return StoredTensor(type: type, bytes: entry.file.data(of: entry.info), owner: entry.file.file)
    }
}
