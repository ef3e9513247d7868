import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// An error in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with its
/// HTTP status and any headers (Retry-After). Routes throw it; it renders itself.
public struct APIError: Error, HTTPResponseError, CustomStringConvertible, Sendable {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    public var extraHeaders: HTTPFields = [:]

    public init(status: HTTPResponse.Status, message: String, type: String, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public var description: String { "\(status.code) \(code ?? type): \(message)" }

    /// 400: a parameter is wrong; `param` names it.
    public static func badRequest(_ message: String, param: String?, code: String = "invalid_request_error") -> APIError {
        APIError(status: .badRequest, message: message, type: "invalid_request_error", param: param, code: code)
    }

    public static let missingKey = APIError(
        status: .unauthorized, message: "Missing API key: send it as 'Authorization: Bearer <key>'.", type: "invalid_request_error", code: "invalid_api_key")
    public static let invalidKey = APIError(status: .unauthorized, message: "Incorrect API key provided.", type: "invalid_request_error", code: "invalid_api_key")
    public static let adminOnly = APIError(
        status: .forbidden, message: "This route needs an admin key.", type: "permission_error", code: "insufficient_permissions")

    /// 404 for a model that does not exist *for this caller*: another tenant's adapter answers exactly this.
    public static func modelNotFound(_ name: String) -> APIError {
        APIError(status: .notFound, message: "The model '\(name)' does not exist or you do not have access to it.",
                 type: "invalid_request_error", param: "model", code: "model_not_found")
    }

    public static func unavailable(_ message: String, retryAfterSeconds: Int) -> APIError {
        var e = APIError(status: .serviceUnavailable, message: message, type: "server_error", code: "service_unavailable")
        e.extraHeaders[.retryAfter] = "\(retryAfterSeconds)"
        return e
    }

    public static func internalError(_ message: String) -> APIError {
        APIError(status: .internalServerError, message: message, type: "server_error", code: "internal_error")
    }

    /// The JSON body, `{"error": {...}}`.
    public var body: [String: Any] {
        ["error": ["message": message, "type": type, "param": param as Any? ?? NSNull(), "code": code as Any? ?? NSNull()]]
    }

    public var bodyData: Data { (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data() }

    public var headers: HTTPFields { extraHeaders }

    public func body(allocator: ByteBufferAllocator) -> ByteBuffer? { allocator.buffer(data: bodyData) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = extraHeaders
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: bodyData)))
    }
}

extension ByteBufferAllocator {
    func buffer(data: Data) -> ByteBuffer {
        var b = buffer(capacity: data.count)
        b.writeBytes(data)
        return b
    }
}

extension ByteBuffer {
    init(data: Data) {
        self = ByteBufferAllocator().buffer(data: data)
    }
}
