import Foundation

/// xoshiro256** seeded through SplitMix64: a small, fast generator whose sequence depends
/// only on the seed, so a request's samples never depend on anything else running.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = (s.3 << 45) | (s.3 >> 19)
        return result
    }

    /// A uniform float in [0, 1).
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * (1.0 / Float(1 << 24)) }
}

/// Chooses tokens from logits for one sequence. Owns its random state and reusable buffers,
/// so sampling allocates nothing per token after the first.
///
/// Order, as Hugging Face's processors: repetition penalty, temperature, top-k, top-p, min-p.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var rng: SeededGenerator
    private var candidates: [(id: Int32, logit: Float)] = []
    private var seen: Set<Int32> = []
    /// How often each token was generated (for the presence and frequency penalties).
    private var generatedCounts: [Int32: Int] = [:]

    public init(parameters: SamplingParameters) {
        self.parameters = parameters
        rng = SeededGenerator(seed: parameters.seed)
    }

    /// Whether sampling changes the logits row in place (the penalties do).
    public var editsLogits: Bool {
        parameters.repetitionPenalty != 1 || parameters.presencePenalty != 0 || parameters.frequencyPenalty != 0
    }

    /// Records tokens for the repetition penalty (the prompt, then each sampled token).
    public mutating func observe<S: Sequence>(_ tokens: S) where S.Element == Int32 {
        if parameters.repetitionPenalty != 1 { seen.formUnion(tokens) }
    }

    /// Picks the next token from `logits[0..<count]`. The logits buffer may be modified.
    public mutating func sample(logits: UnsafeMutablePointer<Float>, count: Int) -> Int32 {
        let token = choose(logits: logits, count: count)
        if parameters.presencePenalty != 0 || parameters.frequencyPenalty != 0 { generatedCounts[token, default: 0] += 1 }
        return token
    }

    private mutating func choose(logits: UnsafeMutablePointer<Float>, count: Int) -> Int32 {
        let p = parameters
        // OpenAI's penalties, over generated tokens only: logit -= count * frequency + presence.
        for (id, n) in generatedCounts where Int(id) < count {
            logits[Int(id)] -= Float(n) * p.frequencyPenalty + p.presencePenalty
        }
        if p.repetitionPenalty != 1 {
            for id in seen where Int(id) < count {
                let v = logits[Int(id)]
                logits[Int(id)] = v > 0 ? v / p.repetitionPenalty : v * p.repetitionPenalty
            }
        }
        if p.temperature == 0 {
            var best = 0
            for i in 1..<count where logits[i] > logits[best] { best = i }
            observe(CollectionOfOne(Int32(best)))
            return Int32(best)
        }
        let invT = 1 / p.temperature
        let u = Double(rng.nextUnitFloat())
        if p.topK > 0 && p.topK < count {
            topKCandidates(logits: logits, count: count, k: p.topK, invT: invT)
            let chosen = pick(u: u, total: nil) ?? candidates[candidates.count - 1].id
            observe(CollectionOfOne(chosen))
            return chosen
        }
        // The whole vocabulary: only the head of the distribution is sorted. Tokens scaled
        // logits at least `cut` are sorted; if top-p, min-p or the draw reach past them, the
        // cut is lowered and the head grows. Every token outside the head is less likely than
        // every token in it, so the pick is the one a full sort would give.
        var maxLogit = -Float.infinity
        for i in 0..<count { maxLogit = max(maxLogit, logits[i] * invT) }
        var total: Double = 0
        for i in 0..<count { total += exp(Double(logits[i] * invT - maxLogit)) }
        var cut = maxLogit - 8
        var chosen: Int32?
        while chosen == nil {
            let everything = !(cut > -Float.infinity)
            candidates.removeAll(keepingCapacity: true)
            for i in 0..<count {
                let v = logits[i] * invT
                if everything || v >= cut { candidates.append((Int32(i), v)) }
            }
            candidates.sort { $0.logit > $1.logit || ($0.logit == $1.logit && $0.id < $1.id) }
            let complete = everything || candidates.count == count
            chosen = pick(u: u, total: total, complete: complete, outsideBelow: complete ? 0 : Float(exp(Double(cut - maxLogit))))
            cut = cut - 16 < -1e30 ? -.infinity : cut - 16
            if cut > -.infinity && maxLogit - cut > 200 { cut = -.infinity }
        }
        let picked = chosen ?? candidates[candidates.count - 1].id
        observe(CollectionOfOne(picked))
        return picked
    }

    /// The k most likely tokens into `candidates`, sorted, as scaled logits.
    private mutating func topKCandidates(logits: UnsafeMutablePointer<Float>, count: Int, k: Int, invT: Float) {
        candidates.removeAll(keepingCapacity: true)
        // A running top-k with a threshold, to avoid sorting the whole vocabulary.
        for i in 0..<count {
            let v = logits[i] * invT
            if candidates.count < k {
                candidates.append((Int32(i), v))
                if candidates.count == k { candidates.sort { $0.logit > $1.logit } }
            } else if v > candidates[k - 1].logit {
                var j = k - 1
                while j > 0 && candidates[j - 1].logit < v { candidates[j] = candidates[j - 1]; j -= 1 }
                candidates[j] = (Int32(i), v)
            }
        }
        if candidates.count < k { candidates.sort { $0.logit > $1.logit } }
    }

    /// Applies top-p and min-p to the sorted `candidates` (scaled logits) and draws with `u`.
    /// `total` is the softmax mass of the whole vocabulary (nil: the candidates are all there
    /// is). Returns nil when the answer may lie past the candidates (then a longer head is needed).
    /// `outsideBelow`: every token past the candidates has probability below this times the top one's.
    private mutating func pick(u: Double, total: Double?, complete: Bool = true, outsideBelow: Float = 0) -> Int32? {
        let p = parameters
        let maxLogit = candidates[0].logit
        var headMass: Double = 0
        for i in candidates.indices {
            let e = Float(exp(Double(candidates[i].logit - maxLogit)))
            candidates[i].logit = e
            headMass += Double(e)
        }
        let mass = total ?? headMass
        let complete = complete || total == nil
        var keep = candidates.count
        var truncated = false
        if p.topP < 1 {
            var cumulative: Double = 0
            for i in candidates.indices {
                cumulative += Double(candidates[i].logit) / mass
                if cumulative >= Double(p.topP) { keep = i + 1; truncated = true; break }
            }
            if !truncated && !complete { return nil }
        }
        if p.minP > 0 {
            let threshold = candidates[0].logit * p.minP
            var k = 1
            while k < keep && candidates[k].logit >= threshold { k += 1 }
            if k < keep {
                keep = k
                truncated = true
            } else if !complete && !truncated {
                // Every head token passes; those past the head may too, unless the head's bound fails them.
                if outsideBelow >= threshold { return nil }
                truncated = true
            }
        }
        var kept: Double = 0
        for i in 0..<keep { kept += Double(candidates[i].logit) }
        if !truncated { kept = mass }
        let r = u * kept
        var acc: Double = 0
        for i in 0..<keep {
            acc += Double(candidates[i].logit)
            if r < acc { return candidates[i].id }
        }
        return complete || truncated ? candidates[keep - 1].id : nil
    }
}
