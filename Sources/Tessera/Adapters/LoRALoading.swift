import Foundation

extension LoRAAdapter {
    /// Loads a PEFT directory (`adapter_config.json` + `adapter_model.safetensors`) or a llama.cpp
    /// GGUF LoRA file for the base model `config`, converting once to f32 kernel layout.
    ///
    /// Everything is checked before the adapter exists: features, shapes against the base,
    /// ranks against `maxRank`, finite weights. A failure is an ``AdapterError``; no partly
    /// loaded adapter is ever returned. `precision` f16 (the default) stores A and B rounded to
    /// f16 (after the checks, from the f32 conversion), unless a matrix is beyond f16's range
    /// (``AdapterPrecision/f16``): then the adapter is held in f32 (``LoRAAdapter/precision`` tells).
    public static func load(path: String, name: String? = nil, base config: LlamaConfig, maxRank: Int = 1024,
                            precision: AdapterPrecision = .f16) throws(AdapterError) -> LoRAAdapter {
        let adapterName = name ?? URL(fileURLWithPath: path).lastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw AdapterError(adapter: adapterName, file: path, reason: .format(.io("no such file or directory")))
        }
        let builder = ProjectionBuilder(name: adapterName, config: config, maxRank: maxRank, precision: precision)
        if isDirectory.boolValue {
            return try builder.loadPEFT(directory: URL(fileURLWithPath: path))
        }
        return try builder.loadGGUF(path: path)
    }
}

/// The parsed PEFT `adapter_config.json` fields Tessera honours.
struct PEFTConfig {
    var rank: Int
    var alpha: Double
    var useRSLoRA: Bool
    var targetModules: Either
    var layersToTransform: Set<Int>?
    var rankPattern: [String: Int]
    var alphaPattern: [String: Double]
    var fanInFanOut: Bool

    enum Either { case list([String]), regex(String), none }

    init(url: URL, adapter: String) throws(AdapterError) {
        func bad(_ field: String, _ why: String) -> AdapterError {
            AdapterError(adapter: adapter, file: url.path, reason: .invalidConfig(field: field, why: why))
        }
        func unsupported(_ what: String) -> AdapterError {
            AdapterError(adapter: adapter, file: url.path, reason: .unsupportedFeature(what))
        }
        guard let data = try? Data(contentsOf: url) else { throw bad("(file)", "cannot read adapter_config.json") }
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw bad("(file)", "not a JSON object") }
        func present(_ k: String) -> Any? { o[k].flatMap { $0 is NSNull ? nil : $0 } }

        if let type = present("peft_type") as? String, type.uppercased() != "LORA" { throw unsupported("peft_type '\(type)'") }
        if (present("use_dora") as? Bool) == true { throw unsupported("DoRA (use_dora)") }
        if let m = present("modules_to_save") { if !((m as? [Any])?.isEmpty ?? false) { throw unsupported("modules_to_save") } }
        if let b = present("bias") as? String, b != "none" { throw unsupported("bias '\(b)'") }
        if let t = present("target_parameters"), !((t as? [Any])?.isEmpty ?? false) { throw unsupported("target_parameters") }
        if let d = present("lora_dropout") as? NSNumber, d.doubleValue < 0 { throw bad("lora_dropout", "negative") }
        guard let r = present("r") as? NSNumber, r.intValue > 0 else { throw bad("r", "must be a positive integer") }
        rank = r.intValue
        guard let a = (present("lora_alpha") as? NSNumber)?.doubleValue ?? Optional(Double(rank)), a.isFinite else { throw bad("lora_alpha", "not a number") }
        alpha = a
        useRSLoRA = (present("use_rslora") as? Bool) ?? false
        fanInFanOut = (present("fan_in_fan_out") as? Bool) ?? false
        switch present("target_modules") {
        case let s as String: targetModules = .regex(s)
        case let l as [Any]:
            let names = l.compactMap { $0 as? String }
            guard names.count == l.count else { throw bad("target_modules", "must be a list of strings or a regex string") }
            targetModules = .list(names)
        case nil: targetModules = .none
        default: throw bad("target_modules", "must be a list of strings or a regex string")
        }
        let targets: [String] = switch targetModules {
        case .list(let l): l
        case .regex(let s): [s]
        case .none: []
        }
        for t in targets where t.contains("embed_tokens") || t.contains("lm_head") {
            throw unsupported("LoRA on embed_tokens or lm_head")
        }
        switch present("layers_to_transform") {
        case let n as NSNumber: layersToTransform = [n.intValue]
        case let l as [Any]: layersToTransform = Set(l.compactMap { ($0 as? NSNumber)?.intValue })
        case nil: layersToTransform = nil
        default: throw bad("layers_to_transform", "must be an integer or a list of integers")
        }
        var rp: [String: Int] = [:]
        for (k, v) in (present("rank_pattern") as? [String: Any]) ?? [:] {
            guard let n = v as? NSNumber, n.intValue > 0 else { throw bad("rank_pattern", "'\(k)' must map to a positive integer") }
            rp[k] = n.intValue
        }
        rankPattern = rp
        var ap: [String: Double] = [:]
        for (k, v) in (present("alpha_pattern") as? [String: Any]) ?? [:] {
            guard let n = v as? NSNumber else { throw bad("alpha_pattern", "'\(k)' must map to a number") }
            ap[k] = n.doubleValue
        }
        alphaPattern = ap
    }

    /// PEFT's `get_pattern_key`: the first pattern p with `(.*\.)?(p)$` matching the module name.
    static func patternValue<T>(_ patterns: [String: T], module: String) -> T? {
        for key in patterns.keys.sorted(by: { $0.count > $1.count }) {
            if let re = try? NSRegularExpression(pattern: "^(.*\\.)?(\(key))$"),
               re.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil {
                return patterns[key]
            }
        }
        return nil
    }

    /// Whether PEFT would have targeted the module.
    func targets(module: String) -> Bool {
        switch targetModules {
        case .list(let names): return names.contains { module == $0 || module.hasSuffix("." + $0) }
        case .regex(let pattern):
            guard let re = try? NSRegularExpression(pattern: "^(?:\(pattern))$") else { return false }
            return re.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil
        case .none: return true
        }
    }

    /// (rank, scale) for a module, after rank_pattern and alpha_pattern.
    func rankAndScale(module: String) -> (Int, Float) {
        let r = Self.patternValue(rankPattern, module: module) ?? rank
        let a = Self.patternValue(alphaPattern, module: module) ?? alpha
        let scale = useRSLoRA ? a / Double(r).squareRoot() : a / Double(r)
        return (r, Float(scale))
    }
}

/// Collects checked projections for one adapter, then builds it.
struct ProjectionBuilder {
    let name: String
    let config: LlamaConfig
    let maxRank: Int
    var precision: AdapterPrecision = .f16

    func error(_ file: String, _ reason: AdapterError.Reason) -> AdapterError {
        AdapterError(adapter: name, file: file, reason: reason)
    }

    /// A matrix from the file as (rows, cols) outermost-first, converted to f32.
    struct Matrix {
        let tensor: String
        let shape: [Int]
        let read: (UnsafeMutablePointer<Float>) throws(AdapterError) -> Void
    }

    /// Validates one (A, B) pair against the base and converts it. `unpermuteHeads` un-permutes
    /// B's rows for q/k of GGUF LoRA files (stored for adjacent-pair RoPE, as the base's q/k).
    func projection(file: String, target: LoRATarget, a: Matrix, b: Matrix, expectedRank: Int?, scale: Float,
                    transposed: Bool, unpermuteHeads: Int?) throws(AdapterError) -> LoRAAdapter.Projection {
        let (input, output) = target.dimensions(config)
        guard a.shape.count == 2, b.shape.count == 2 else {
            throw error(file, .shapeMismatch(tensor: a.shape.count == 2 ? b.tensor : a.tensor, expected: [-1, -1], actual: a.shape.count == 2 ? b.shape : a.shape))
        }
        let aShape = transposed ? [a.shape[1], a.shape[0]] : a.shape
        let bShape = transposed ? [b.shape[1], b.shape[0]] : b.shape
        let rank = aShape[0]
        if let expectedRank, rank != expectedRank {
            throw error(file, .shapeMismatch(tensor: a.tensor, expected: [expectedRank, input], actual: a.shape))
        }
        guard rank > 0, aShape[1] == input else { throw error(file, .shapeMismatch(tensor: a.tensor, expected: [rank, input], actual: a.shape)) }
        guard bShape == [output, rank] else { throw error(file, .shapeMismatch(tensor: b.tensor, expected: [output, rank], actual: b.shape)) }
        guard rank <= maxRank else { throw error(file, .rankTooLarge(rank: rank, maximum: maxRank)) }
        guard let aBuffer = FloatBuffer(count: rank * input), let bBuffer = FloatBuffer(count: output * rank),
              let tempA = FloatBuffer(count: rank * input), let tempB = FloatBuffer(count: output * rank) else {
            throw error(file, .format(.io("out of memory")))
        }
        try a.read(tempA.pointer)
        try b.read(tempB.pointer)
        for (m, buffer) in [(a, tempA), (b, tempB)] {
            for i in 0..<buffer.count where !buffer.pointer[i].isFinite { throw error(file, .nonFiniteWeights(tensor: m.tensor)) }
        }
        copy(tempA, into: aBuffer, rows: aShape[0], cols: aShape[1], transposed: transposed)
        // B as (output, rank) in HF row order; then stored transposed for the kernels.
        copy(tempB, into: bBuffer, rows: output, cols: rank, transposed: transposed)
        if let heads = unpermuteHeads {
            // Row (h, j, half) of the stored B is HF row (h, half, j): see LlamaWeights.
            let headDim = output / heads, half = headDim / 2
            tempB.pointer.update(from: bBuffer.pointer, count: output * rank)
            for h in 0..<heads { for s in 0..<2 { for j in 0..<half {
                (bBuffer.pointer + (h * headDim + s * half + j) * rank)
                    .update(from: tempB.pointer + (h * headDim + 2 * j + s) * rank, count: rank)
            } } }
        }
        for o in 0..<output { for r in 0..<rank { tempB.pointer[r * output + o] = bBuffer.pointer[o * rank + r] } }
        // f32 here; LoRAAdapter.packed converts to the adapter's precision.
        guard let projection = LoRAAdapter.Projection(rank: rank, scale: scale, inputs: input, outputs: output,
                                                      a: aBuffer.pointer, bTransposed: tempB.pointer) else {
            throw error(file, .format(.io("out of memory")))
        }
        return projection
    }

    /// Copies a (rows × cols) matrix, transposing when the source is stored (cols × rows).
    private func copy(_ source: FloatBuffer, into destination: FloatBuffer, rows: Int, cols: Int, transposed: Bool) {
        if !transposed {
            destination.pointer.update(from: source.pointer, count: rows * cols)
            return
        }
        for r in 0..<rows { for c in 0..<cols { destination.pointer[r * cols + c] = source.pointer[c * rows + r] } }
    }

    func build(file: String, format: LoRAAdapter.Format, _ entries: [(layer: Int, target: LoRATarget, projection: LoRAAdapter.Projection)]) throws(AdapterError) -> LoRAAdapter {
        guard !entries.isEmpty else { throw error(file, .empty) }
        var projections = [LoRAAdapter.Projection?](repeating: nil, count: config.layerCount * LoRATarget.allCases.count)
        for e in entries { projections[e.layer * LoRATarget.allCases.count + LoRAAdapter.targetIndex(e.target)] = e.projection }
        // f16 only if every weight fits its range; else the whole adapter stays f32 (nothing lost).
        let held: AdapterPrecision = precision == .f16 && entries.allSatisfy({ $0.projection.fitsF16 }) ? .f16 : .f32
        guard let packed = LoRAAdapter.packed(projections, layerCount: config.layerCount, precision: held) else {
            throw error(file, .format(.io("out of memory")))
        }
        return LoRAAdapter(name: name, source: file, format: format, layerCount: config.layerCount, projections: packed)
    }

    // MARK: PEFT

    func loadPEFT(directory: URL) throws(AdapterError) -> LoRAAdapter {
        let configURL = directory.appendingPathComponent("adapter_config.json")
        let weightsURL = directory.appendingPathComponent("adapter_model.safetensors")
        let fm = FileManager.default
        guard fm.fileExists(atPath: configURL.path) else { throw error(directory.path, .unrecognisedPath) }
        let peft = try PEFTConfig(url: configURL, adapter: name)
        guard fm.fileExists(atPath: weightsURL.path) else {
            if fm.fileExists(atPath: directory.appendingPathComponent("adapter_model.bin").path) { throw error(directory.path, .pickleNotSupported) }
            throw error(weightsURL.path, .format(.io("no such file")))
        }
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: weightsURL.path) } catch { throw self.error(error.file, .format(error.reason)) }
        let path = weightsURL.path

        // base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight
        var pairs: [String: (layer: Int, target: LoRATarget, a: SafetensorsTensorInfo?, b: SafetensorsTensorInfo?)] = [:]
        for (key, info) in file.tensors {
            if key.contains("lora_embedding") || key.contains("embed_tokens") || key.contains("lm_head") {
                throw error(path, .unsupportedFeature("LoRA on embed_tokens or lm_head ('\(key)')"))
            }
            if key.contains("lora_magnitude_vector") { throw error(path, .unsupportedFeature("DoRA (lora_magnitude_vector)")) }
            if key.hasSuffix(".bias") { throw error(path, .unsupportedFeature("LoRA biases ('\(key)')")) }
            let parts = key.split(separator: ".")
            guard let li = parts.firstIndex(of: "layers"), li + 5 < parts.count, let layer = Int(parts[li + 1]),
                  let target = LoRATarget(rawValue: String(parts[li + 3])), "\(parts[li + 2]).\(parts[li + 3])" == target.hfModule,
                  parts[li + 4] == "lora_A" || parts[li + 4] == "lora_B", parts.last == "weight" else {
                throw error(path, .unexpectedTensor(key))
            }
            guard layer >= 0, layer < config.layerCount else { throw error(path, .layerOutOfRange(tensor: key, layer: layer, layers: config.layerCount)) }
            let module = "model.layers.\(layer).\(target.hfModule)"
            var entry = pairs[module] ?? (layer, target, nil, nil)
            if parts[li + 4] == "lora_A" { entry.a = info } else { entry.b = info }
            pairs[module] = entry
        }
        var entries: [(layer: Int, target: LoRATarget, projection: LoRAAdapter.Projection)] = []
        for (module, p) in pairs.sorted(by: { $0.key < $1.key }) {
            guard let a = p.a, let b = p.b else { throw error(path, .incompleteTensorPair(module)) }
            guard peft.targets(module: module) else {
                throw error(configURL.path, .invalidConfig(field: "target_modules", why: "does not select '\(module)', which has LoRA tensors"))
            }
            if let layers = peft.layersToTransform, !layers.contains(p.layer) {
                throw error(configURL.path, .invalidConfig(field: "layers_to_transform", why: "excludes layer \(p.layer), which has LoRA tensors"))
            }
            let (rank, scale) = peft.rankAndScale(module: module)
            let matrix = { (info: SafetensorsTensorInfo) in
                Matrix(tensor: info.name, shape: info.shape, read: { (dst) throws(AdapterError) in file.convert(info, into: dst) })
            }
            // fan_in_fan_out stores A and B transposed (Conv1D layout); Linear layers use the normal one.
            let transposed = peft.fanInFanOut && a.shape.count == 2 && a.shape[1] == rank && a.shape[0] != rank
            entries.append((p.layer, p.target, try projection(
                file: path, target: p.target, a: matrix(a), b: matrix(b), expectedRank: rank, scale: scale,
                transposed: transposed, unpermuteHeads: nil)))
        }
        return try build(file: path, format: .peft, entries)
    }

    // MARK: GGUF LoRA

    func loadGGUF(path: String) throws(AdapterError) -> LoRAAdapter {
        let gguf: GGUFFile
        do { gguf = try GGUFFile(path: path) } catch { throw self.error(error.file, .format(error.reason)) }
        let m = gguf.metadata
        guard m["general.type"]?.stringValue == "adapter", m["adapter.type"]?.stringValue == "lora" else {
            throw error(path, .unrecognisedPath)
        }
        if let arch = m["general.architecture"]?.stringValue, arch != config.architecture, !(LlamaConfig.supportedArchitectures.contains(arch)) {
            throw error(path, .invalidConfig(field: "general.architecture", why: "'\(arch)' does not match the base '\(config.architecture)'"))
        }
        let alpha = Float(m["adapter.lora.alpha"]?.doubleValue ?? 0)
        var pairs: [String: (layer: Int, target: LoRATarget, a: GGUFTensorInfo?, b: GGUFTensorInfo?)] = [:]
        for info in gguf.tensors {
            let parts = info.name.split(separator: ".")
            guard parts.count == 5, parts[0] == "blk", let layer = Int(parts[1]), parts[3] == "weight",
                  let target = LoRATarget.fromGGUF(String(parts[2])), parts[4] == "lora_a" || parts[4] == "lora_b" else {
                if info.name.hasPrefix("token_embd") || info.name.hasPrefix("output") {
                    throw error(path, .unsupportedFeature("LoRA on token_embd or output ('\(info.name)')"))
                }
                throw error(path, .unexpectedTensor(info.name))
            }
            guard layer >= 0, layer < config.layerCount else { throw error(path, .layerOutOfRange(tensor: info.name, layer: layer, layers: config.layerCount)) }
            let key = "blk.\(layer).\(target.ggufName)"
            var entry = pairs[key] ?? (layer, target, nil, nil)
            if parts[4] == "lora_a" { entry.a = info } else { entry.b = info }
            pairs[key] = entry
        }
        var entries: [(layer: Int, target: LoRATarget, projection: LoRAAdapter.Projection)] = []
        for (key, p) in pairs.sorted(by: { $0.key < $1.key }) {
            guard let a = p.a, let b = p.b else { throw error(path, .incompleteTensorPair(key)) }
            let matrix = { (info: GGUFTensorInfo) in
                Matrix(tensor: info.name, shape: Array(info.dimensions.reversed()), read: { (dst) throws(AdapterError) in
                    do throws(FormatError) { try gguf.dequantize(info, into: dst) } catch { throw self.error(path, .format(error.reason)) }
                })
            }
            let rank = a.dimensions.count == 2 ? a.dimensions[1] : 0
            // llama.cpp: scale = alpha / rank, or 1 when alpha is 0.
            let scale = alpha == 0 ? 1 : alpha / Float(max(rank, 1))
            let heads: Int? = switch p.target {
            case .q: config.headCount
            case .k: config.kvHeadCount
            default: nil
            }
            entries.append((p.layer, p.target, try projection(
                file: path, target: p.target, a: matrix(a), b: matrix(b), expectedRank: nil, scale: scale,
                transposed: false, unpermuteHeads: heads)))
        }
        return try build(file: path, format: .ggufLoRA, entries)
    }
}
