import Foundation
import Tessera
import Yams

extension RuntimeConfiguration {
    /// Reads a configuration file: YAML (`.yaml`, `.yml`) or JSON. Keys are snake_case, any
    /// subset; an unknown key or a wrong type is an error naming the field.
    public static func load(file path: String) throws -> RuntimeConfiguration {
        let lower = path.lowercased()
        guard lower.hasSuffix(".yaml") || lower.hasSuffix(".yml") else { return try load(jsonFile: path) }
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigurationError(file: path, field: "", why: "cannot read the file") }
        let tree: Any?
        do { tree = try Yams.load(yaml: String(decoding: data, as: UTF8.self)) } catch {
            throw ConfigurationError(file: path, field: "", why: "not valid YAML: \(error)")
        }
        return try decode(tree: tree ?? [String: Any](), file: path)
    }
}
