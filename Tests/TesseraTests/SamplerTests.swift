import XCTest
@testable import Tessera

/// The sampler's filters, its per-request randomness and stop strings.
final class SamplerTests: XCTestCase {
    func sample(_ logits: [Float], _ p: SamplingParameters, draws: Int) -> [Int32: Int] {
        var sampler = Sampler(parameters: p)
        var counts: [Int32: Int] = [:]
        for _ in 0..<draws {
            var l = logits
            let t = l.withUnsafeMutableBufferPointer { sampler.sample(logits: $0.baseAddress!, count: $0.count) }
            counts[t, default: 0] += 1
        }
        return counts
    }

    let logits: [Float] = [2.0, 1.0, 0.5, 0.0, -1.0, -3.0]

    func testGreedyTakesTheArgmax() {
        XCTAssertEqual(sample(logits, .greedy, draws: 5), [0: 5])
    }

    func testTopKKeepsOnlyKTokens() {
        let counts = sample(logits, SamplingParameters(temperature: 1, topK: 2, seed: 1), draws: 2000)
        XCTAssertEqual(Set(counts.keys), [0, 1])
    }

    func testTopPKeepsTheSmallestNucleus() {
        // softmax(logits): p0 ≈ 0.574, p1 ≈ 0.211, p2 ≈ 0.128: top-p 0.7 keeps tokens 0 and 1.
        let counts = sample(logits, SamplingParameters(temperature: 1, topP: 0.7, seed: 2), draws: 2000)
        XCTAssertEqual(Set(counts.keys), [0, 1])
        let ratio = Double(counts[0]!) / Double(counts[1]!)
        XCTAssertEqual(ratio, exp(1.0), accuracy: 0.5) // p0/p1 = e^(2-1)
    }

    func testMinPDropsUnlikelyTokens() {
        // min-p 0.2: keep tokens with p >= 0.2·p0, i.e. logit >= 2 + ln 0.2 ≈ 0.39: tokens 0, 1, 2.
        let counts = sample(logits, SamplingParameters(temperature: 1, minP: 0.2, seed: 3), draws: 3000)
        XCTAssertEqual(Set(counts.keys), [0, 1, 2])
    }

    func testTemperatureSharpensAndFlattens() {
        let cold = sample(logits, SamplingParameters(temperature: 0.1, seed: 4), draws: 500)
        XCTAssertGreaterThan(cold[0] ?? 0, 495)
        let hot = sample(logits, SamplingParameters(temperature: 5, seed: 4), draws: 3000)
        XCTAssertEqual(hot.count, 6)
    }

    func testRepetitionPenaltyFollowsHuggingFace() {
        var sampler = Sampler(parameters: SamplingParameters(repetitionPenalty: 4))
        sampler.observe([0])
        var l: [Float] = [2.0, 1.0, -1.0]
        // token 0: 2/4 = 0.5 < 1.0, so greedy now picks token 1.
        XCTAssertEqual(l.withUnsafeMutableBufferPointer { sampler.sample(logits: $0.baseAddress!, count: 3) }, 1)
        XCTAssertEqual(l[0], 0.5)
        var sampler2 = Sampler(parameters: SamplingParameters(repetitionPenalty: 2))
        sampler2.observe([2])
        var l2: [Float] = [0.0, 0.1, -1.0]
        _ = l2.withUnsafeMutableBufferPointer { sampler2.sample(logits: $0.baseAddress!, count: 3) }
        XCTAssertEqual(l2[2], -2.0, "negative logits are multiplied")
    }

    func testSameSeedSameSamplesDifferentSeedDifferentSamples() {
        let p = SamplingParameters(temperature: 1, seed: 42)
        var a = Sampler(parameters: p), b = Sampler(parameters: p), c = Sampler(parameters: SamplingParameters(temperature: 1, seed: 43))
        var sa: [Int32] = [], sb: [Int32] = [], sc: [Int32] = []
        for _ in 0..<64 {
            var l1 = logits, l2 = logits, l3 = logits
            sa.append(l1.withUnsafeMutableBufferPointer { a.sample(logits: $0.baseAddress!, count: 6) })
            sb.append(l2.withUnsafeMutableBufferPointer { b.sample(logits: $0.baseAddress!, count: 6) })
            sc.append(l3.withUnsafeMutableBufferPointer { c.sample(logits: $0.baseAddress!, count: 6) })
        }
        XCTAssertEqual(sa, sb)
        XCTAssertNotEqual(sa, sc)
    }

    func testInvalidParametersNameTheField() {
        XCTAssertThrowsError(try SamplingParameters(temperature: -1).validate()) {
            XCTAssertTrue("\($0)".contains("temperature"))
        }
        XCTAssertThrowsError(try SamplingParameters(topP: 0).validate()) { XCTAssertTrue("\($0)".contains("top_p")) }
        XCTAssertThrowsError(try SamplingParameters(minP: 2).validate()) { XCTAssertTrue("\($0)".contains("min_p")) }
    }

    func testStopStringsCutTheTextAndHoldBackPossiblePrefixes() {
        var m = StopStringMatcher(stopStrings: ["###", "END"])
        var out = ""
        for piece in ["Hello ", "wor", "ld #", "#", "# more"] {
            let (emit, stopped) = m.feed(piece)
            out += emit
            if stopped { break }
        }
        XCTAssertEqual(out, "Hello world ")
        XCTAssertEqual(m.text, "Hello world ")
        XCTAssertTrue(m.stopped)
        var n = StopStringMatcher(stopStrings: ["END"])
        var o = ""
        for piece in ["The E", "ND"] { o += n.feed(piece).0 }
        XCTAssertEqual(o, "The ")
        var q = StopStringMatcher(stopStrings: ["END"])
        o = q.feed("The E").0
        XCTAssertEqual(o, "The ", "a possible prefix of a stop string is held back")
        o += q.feed("arth").0 + q.flush()
        XCTAssertEqual(o, "The Earth")
    }
}
