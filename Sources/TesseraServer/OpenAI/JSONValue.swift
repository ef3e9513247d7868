import Foundation

/// A parsed JSON value, so request fields can be checked one by one with errors that name
/// them (JSONDecoder's errors do not say which field a client got wrong in words a client reads).
public enum JSONValue: Sendable, Equatable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    /// Parses a request body; the error is a 400 a client can act on.
    public static func parseObject(_ data: Data) throws(APIError) -> [String: JSONValue] {
        guard String(validating: data, as: UTF8.self) != nil else {
            throw .badRequest("The request body is not valid UTF-8.", param: nil)
        }
        let value: JSONValue
        do { value = try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw .badRequest("The request body is not valid JSON: \(Self.reason(error))", param: nil)
        }
        guard case .object(let o) = value else { throw .badRequest("The request body must be a JSON object.", param: nil) }
        return o
    }

    private static func reason(_ error: Error) -> String {
        if case DecodingError.dataCorrupted(let c) = error {
            return (c.underlyingError.map { "\($0)" } ?? c.debugDescription)
        }
        return "\(error)"
    }

    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    /// Plain Foundation value, for JSONSerialization.
    var foundation: Any {
        switch self {
        case .null: NSNull()
        case .bool(let b): b
        case .number(let n): n
        case .string(let s): s
        case .array(let a): a.map(\.foundation)
        case .object(let o): o.mapValues(\.foundation)
        }
    }
}

/// Typed reads of a request's fields: each wrong type or range is a 400 naming the field.
struct RequestFields {
    let values: [String: JSONValue]
    let prefix: String

    init(_ values: [String: JSONValue], prefix: String = "") {
        self.values = values
        self.prefix = prefix
    }

    func name(_ key: String) -> String { prefix + key }

    func present(_ key: String) -> JSONValue? {
        guard let v = values[key], v != .null else { return nil }
        return v
    }

    func wrongType(_ key: String, _ expected: String, _ got: JSONValue) -> APIError {
        .badRequest("'\(name(key))' must be \(expected), got \(got.typeName).", param: name(key))
    }

    func string(_ key: String) throws(APIError) -> String? {
        guard let v = present(key) else { return nil }
        guard case .string(let s) = v else { throw wrongType(key, "a string", v) }
        return s
    }

    func bool(_ key: String) throws(APIError) -> Bool? {
        guard let v = present(key) else { return nil }
        guard case .bool(let b) = v else { throw wrongType(key, "a boolean", v) }
        return b
    }

    func number(_ key: String, in range: ClosedRange<Double>? = nil) throws(APIError) -> Double? {
        guard let v = present(key) else { return nil }
        guard case .number(let n) = v else { throw wrongType(key, "a number", v) }
        if let range, !range.contains(n) {
            throw .badRequest("'\(name(key))' must be between \(Self.format(range.lowerBound)) and \(Self.format(range.upperBound)), got \(Self.format(n)).",
                              param: name(key))
        }
        return n
    }

    func integer(_ key: String, in range: ClosedRange<Int>? = nil) throws(APIError) -> Int? {
        guard let v = present(key) else { return nil }
        guard case .number(let n) = v, n == n.rounded(), abs(n) < 9e15 else { throw wrongType(key, "an integer", v) }
        let i = Int(n)
        if let range, !range.contains(i) {
            throw .badRequest("'\(name(key))' must be between \(range.lowerBound) and \(range.upperBound), got \(i).", param: name(key))
        }
        return i
    }

    static func format(_ d: Double) -> String { d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d) }
}
