import Foundation
import XCTest
@testable import TesseraServer
import Tessera

/// Request bodies are checked field by field; each error names its field.
final class RequestParsingTests: XCTestCase {
    func parse(_ json: String, kind: OpenAIGenerationRequest.Kind = .chat) throws -> OpenAIGenerationRequest {
        try OpenAIGenerationRequest.parse(try JSONValue.parseObject(Data(json.utf8)), kind: kind, maxChoices: 4)
    }

    func param(_ json: String, kind: OpenAIGenerationRequest.Kind = .chat) -> String? {
        do { _ = try parse(json, kind: kind); return "accepted" } catch let e as APIError { return e.param } catch { return "other: \(error)" }
    }

    let chat = #""model": "m", "messages": [{"role": "user", "content": "hi"}]"#

    func testHonouredFieldsReachTheEngineRequest() throws {
        let r = try parse("{\(chat), \"max_tokens\": 5, \"max_completion_tokens\": 7, \"temperature\": 0.5, \"top_p\": 0.9, \"seed\": 3, \"stop\": \"x\", \"n\": 2, \"presence_penalty\": 1, \"frequency_penalty\": -1, \"top_k\": 4, \"min_p\": 0.1, \"repetition_penalty\": 1.1, \"ignore_eos\": true, \"logprobs\": true, \"top_logprobs\": 3, \"stream\": true, \"stream_options\": {\"include_usage\": true}, \"user\": \"u\"}")
        XCTAssertEqual(r.maxTokens, 7, "max_completion_tokens wins")
        XCTAssertEqual(r.sampling.temperature, 0.5)
        XCTAssertEqual(r.sampling.topP, 0.9, accuracy: 1e-6)
        XCTAssertEqual(r.seed, 3)
        XCTAssertEqual(r.stop, ["x"])
        XCTAssertEqual(r.n, 2)
        XCTAssertEqual(r.sampling.presencePenalty, 1)
        XCTAssertEqual(r.sampling.frequencyPenalty, -1)
        XCTAssertEqual(r.sampling.topK, 4)
        XCTAssertEqual(r.topLogprobs, 3)
        XCTAssertTrue(r.includeUsage && r.ignoreEOS && r.logprobs && r.stream)
        XCTAssertEqual(r.endUser, "u")
    }

    func testEachBadFieldIsNamed() {
        XCTAssertEqual(param("{\(chat), \"max_tokens\": \"ten\"}"), "max_tokens")
        XCTAssertEqual(param("{\(chat), \"max_tokens\": 0}"), "max_tokens")
        XCTAssertEqual(param("{\(chat), \"temperature\": 2.5}"), "temperature")
        XCTAssertEqual(param("{\(chat), \"n\": 5}"), "n")
        XCTAssertEqual(param("{\(chat), \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}"), "stop")
        XCTAssertEqual(param("{\(chat), \"wat\": 1}"), "wat")
        XCTAssertEqual(param("{\(chat), \"tools\": []}"), "tools")
        XCTAssertEqual(param("{\(chat), \"stream_options\": {\"include_usage\": true}}"), "stream_options")
        XCTAssertEqual(param("{\(chat), \"top_logprobs\": 2}"), "top_logprobs")
        XCTAssertEqual(param(#"{"model": "m", "messages": []}"#), "messages")
        XCTAssertEqual(param(#"{"model": "m", "messages": [{"role": "user", "content": "hi", "name": "x"}]}"#), "messages[0].name")
        XCTAssertEqual(param(#"{"model": "m", "prompt": "hi", "logprobs": 6}"#, kind: .completion), "logprobs")
        XCTAssertEqual(param(#"{"model": "m", "prompt": "hi", "messages": []}"#, kind: .completion), "messages")
        XCTAssertEqual(param(#"{"model": "m", "prompt": "hi", "echo": true}"#, kind: .completion), "echo")
        XCTAssertEqual(param(#"{"model": "m", "prompt": "hi", "metadata": {"a": 1}, "store": true}"#, kind: .completion), "accepted")
    }

    func testPromptsTakeStringsListsAndTokenIds() throws {
        XCTAssertEqual(try parse(#"{"model": "m", "prompt": ["a", "b"]}"#, kind: .completion).prompts.count, 2)
        XCTAssertEqual(try parse(#"{"model": "m", "prompt": [1, 2, 3]}"#, kind: .completion).prompts.count, 1)
        XCTAssertEqual(try parse(#"{"model": "m", "prompt": "x"}"#, kind: .completion).maxTokens, 16, "OpenAI's default for completions")
    }

    func testMalformedBodies() {
        for body in [Data("{".utf8), Data([0x7b, 0xff, 0x7d]), Data("[]".utf8), Data("null".utf8)] {
            XCTAssertThrowsError(try JSONValue.parseObject(body)) { XCTAssertEqual(($0 as? APIError)?.status, .badRequest) }
        }
    }
}
