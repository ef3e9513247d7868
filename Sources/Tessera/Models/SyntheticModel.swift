import Foundation
import TesseraKernels

/// Writes Llama-family GGUF files of random weights in a chosen stored type: models of real
/// sizes (1B-class and up) for memory and speed checks, without downloading one. The output is
/// streamed in chunks, so writing a multi-GB file needs little memory. Its text is noise: no
/// tokenizer is written.
public enum SyntheticModel {
    /// Shapes of known model sizes.
    public struct Shape: Sendable {
        public var hidden: Int, intermediate: Int, layers: Int, heads: Int, kvHeads: Int, vocabulary: Int, context: Int

        public init(hidden: Int, intermediate: Int, layers: Int, heads: Int, kvHeads: Int, vocabulary: Int, context: Int) {
            (self.hidden, self.intermediate, self.layers, self.heads, self.kvHeads, self.vocabulary, self.context) =
                (hidden, intermediate, layers, heads, kvHeads, vocabulary, context)
        }

        /// TinyLlama-1.1B's shape: 1.1 B parameters.
        public static let llama1B = Shape(hidden: 2048, intermediate: 5632, layers: 22, heads: 32, kvHeads: 4, vocabulary: 32000, context: 2048)
        /// SmolLM2-135M's shape.
        public static let smol135M = Shape(hidden: 576, intermediate: 1536, layers: 30, heads: 9, kvHeads: 3, vocabulary: 49152, context: 2048)

        public var parameterCount: Int {
            let kv = hidden / heads * kvHeads
            return 2 * vocabulary * hidden + layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * intermediate + 2 * hidden) + hidden
        }
    }

    public enum WriteError: Error, CustomStringConvertible {
        case unsupportedType(String)
        case io(String)
        public var description: String {
            switch self {
            case .unsupportedType(let t): "synthetic weights of type \(t) are not supported (use q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, f16 or f32)"
            case .io(let s): s
            }
        }
    }

    /// Writes the model to `path` with every matrix in `type` (norms in F32). Returns the file size.
    @discardableResult
    public static func write(path: String, shape s: Shape, type: GGMLType, seed: UInt64 = 1) throws -> Int {
        guard [GGMLType.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .f16, .f32].contains(type) else { throw WriteError.unsupportedType(type.description) }
        let unit = max(type.blockElements, 32)
        guard s.hidden % unit == 0, s.intermediate % unit == 0, s.hidden % s.heads == 0, s.heads % s.kvHeads == 0 else {
            throw WriteError.io("shape: hidden and intermediate must be multiples of \(unit) for \(type), heads a multiple of kv heads")
        }
        let kv = s.hidden / s.heads * s.kvHeads
        var tensors: [(name: String, dims: [Int], type: GGMLType)] = [("token_embd.weight", [s.hidden, s.vocabulary], type)]
        for l in 0..<s.layers {
            let p = "blk.\(l)."
            tensors += [(p + "attn_norm.weight", [s.hidden], .f32), (p + "attn_q.weight", [s.hidden, s.hidden], type),
                        (p + "attn_k.weight", [s.hidden, kv], type), (p + "attn_v.weight", [s.hidden, kv], type),
                        (p + "attn_output.weight", [s.hidden, s.hidden], type), (p + "ffn_norm.weight", [s.hidden], .f32),
                        (p + "ffn_gate.weight", [s.hidden, s.intermediate], type), (p + "ffn_up.weight", [s.hidden, s.intermediate], type),
                        (p + "ffn_down.weight", [s.intermediate, s.hidden], type)]
        }
        tensors += [("output_norm.weight", [s.hidden], .f32), ("output.weight", [s.hidden, s.vocabulary], type)]

        var header: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { header += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { header += $0 } }
        func str(_ v: String) { u64(UInt64(v.utf8.count)); header += Array(v.utf8) }
        let metadata: [(String, UInt32, () -> Void)] = [
            ("general.architecture", 8, { str("llama") }),
            ("general.name", 8, { str("tessera-synthetic") }),
            ("llama.context_length", 4, { u32(UInt32(s.context)) }),
            ("llama.embedding_length", 4, { u32(UInt32(s.hidden)) }),
            ("llama.block_count", 4, { u32(UInt32(s.layers)) }),
            ("llama.feed_forward_length", 4, { u32(UInt32(s.intermediate)) }),
            ("llama.rope.dimension_count", 4, { u32(UInt32(s.hidden / s.heads)) }),
            ("llama.attention.head_count", 4, { u32(UInt32(s.heads)) }),
            ("llama.attention.head_count_kv", 4, { u32(UInt32(s.kvHeads)) }),
            ("llama.attention.layer_norm_rms_epsilon", 6, { withUnsafeBytes(of: Float(1e-5).bitPattern.littleEndian) { header += $0 } }),
            ("llama.rope.freq_base", 6, { withUnsafeBytes(of: Float(10000).bitPattern.littleEndian) { header += $0 } }),
            ("llama.vocab_size", 4, { u32(UInt32(s.vocabulary)) }),
        ]
        header += Array("GGUF".utf8)
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (key, typeId, write) in metadata { str(key); u32(typeId); write() }
        var offset = 0
        var sizes: [Int] = []
        for t in tensors {
            let elements = t.dims.reduce(1, *)
            let bytes = elements / t.type.blockElements * t.type.blockBytes
            str(t.name)
            u32(UInt32(t.dims.count))
            t.dims.forEach { u64(UInt64($0)) }
            u32(t.type.rawValue)
            u64(UInt64(offset))
            sizes.append(bytes)
            offset += (bytes + 31) / 32 * 32
        }
        while header.count % 32 != 0 { header.append(0) }

        guard FileManager.default.createFile(atPath: path, contents: Data(header)),
              let handle = FileHandle(forWritingAtPath: path) else { throw WriteError.io("\(path): cannot create the file") }
        defer { try? handle.close() }
        // One chunk of valid random blocks (small scales, so activations stay finite), reused
        // at varying offsets through the file.
        let chunkBlocks = 1 << 16
        let blockBytes = type.blockBytes, blockElements = type.blockElements
        var rng = seed | 1
        func next() -> UInt64 { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng }
        var chunk = [UInt8](repeating: 0, count: (chunkBlocks + 64) * blockBytes)  // room for a start up to 63 blocks in
        for i in 0..<chunk.count { chunk[i] = UInt8(truncatingIfNeeded: next() >> 32) }
        func half(_ v: Float) -> UInt16 { Float16(v).bitPattern }
        if blockElements == 32 {
            for k in 0..<(chunk.count / blockBytes) {
                let o = k * blockBytes
                let d = half(0.002 + Float(next() % 1000) / 1000 * 0.004)
                chunk[o] = UInt8(d & 0xff); chunk[o + 1] = UInt8(d >> 8)
                if type == .q4_1 || type == .q5_1 { let m = half(-0.02); chunk[o + 2] = UInt8(m & 0xff); chunk[o + 3] = UInt8(m >> 8) }
            }
        } else if type == .q4_K || type == .q5_K {
            // d and dmin of each super-block; its 6-bit scales and minimums stay random.
            for k in 0..<(chunk.count / blockBytes) {
                let o = k * blockBytes
                let d = half(0.00005 + Float(next() % 1000) / 1000 * 0.0001), dmin = half(0.0004)
                chunk[o] = UInt8(d & 0xff); chunk[o + 1] = UInt8(d >> 8)
                chunk[o + 2] = UInt8(dmin & 0xff); chunk[o + 3] = UInt8(dmin >> 8)
            }
        } else if type == .f16 {
            for k in 0..<(chunk.count / 2) { let v = half((Float(next() % 2000) / 1000 - 1) * 0.03); chunk[2 * k] = UInt8(v & 0xff); chunk[2 * k + 1] = UInt8(v >> 8) }
        } else {
            for k in 0..<(chunk.count / 4) {
                let v = ((Float(next() % 2000) / 1000 - 1) * 0.03).bitPattern
                for b in 0..<4 { chunk[4 * k + b] = UInt8((v >> (8 * b)) & 0xff) }
            }
        }
        let ones = [UInt8](Array(repeating: [0, 0, 0x80, 0x3f], count: max(s.hidden, 1)).joined()) // f32 1.0
        do {
            try handle.seekToEnd()
            for (t, bytes) in zip(tensors, sizes) {
                if t.type == .f32 && t.dims.count == 1 {
                    try handle.write(contentsOf: ones[0..<bytes])
                } else {
                    var left = bytes
                    while left > 0 {
                        let start = Int(next() % 64) * blockBytes
                        let n = min(left, chunkBlocks * blockBytes)
                        try handle.write(contentsOf: chunk[start..<(start + n)])
                        left -= n
                    }
                }
                let pad = (bytes + 31) / 32 * 32 - bytes
                if pad > 0 { try handle.write(contentsOf: [UInt8](repeating: 0, count: pad)) }
            }
            return Int(try handle.offset())
        } catch {
            throw WriteError.io("\(path): \(error)")
        }
    }
}
