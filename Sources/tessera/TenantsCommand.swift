import ArgumentParser
import Foundation
import TesseraServer

struct TenantsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenants", abstract: "Add, list, remove tenants and rotate their keys (works while a server runs on the same data directory).",
        subcommands: [Add.self, List.self, Remove.self, RotateKey.self])

    struct DataOptions: ParsableArguments {
        @Option(help: "The server's data directory.")
        var dataDir = "tessera-data"

        func open() throws -> SQLiteStorage { try SQLiteStorage(directory: dataDir) }
    }

    struct KeyOutput: Encodable {
        let tenant: String
        let api_key: String
    }

    static func validName(_ name: String) throws {
        guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw ValidationError("a tenant name is 1-64 letters, digits, '-', '_' or '.'")
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a tenant and print its API key (shown once).")
        @Argument var name: String
        @Flag(help: "The tenant's keys may use the admin routes.") var admin = false
        @Flag(help: "Print {\"tenant\": NAME, \"api_key\": KEY} on one line.") var json = false
        @OptionGroup var data: DataOptions

        func run() async throws {
            try validName(name)
            try await reportingErrors {
                let k = APIKey.generate()
                _ = try await data.open().addTenant(name: name, role: admin ? .admin : .tenant, keyHash: k.hash, keyPrefix: k.displayPrefix)
                if json { try printJSON(KeyOutput(tenant: name, api_key: k.key)) } else { print("tenant \(name)\(admin ? " (admin)" : ""): \(k.key)") }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants.")
        @Flag(help: "One JSON object per line.") var json = false
        @OptionGroup var data: DataOptions

        struct Row: Encodable {
            let tenant: String
            let role: String
            let created: String
        }

        func run() async throws {
            try await reportingErrors {
                for t in try await data.open().tenants() {
                    let created = ISO8601DateFormatter().string(from: t.createdAt)
                    if json { try printJSON(Row(tenant: t.name, role: t.role.rawValue, created: created)) } else { print("\(t.name)\t\(t.role.rawValue)\t\(created)") }
                }
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a tenant: its keys stop working at once and its adapters are unregistered.")
        @Argument var name: String
        @OptionGroup var data: DataOptions

        func run() async throws {
            try await reportingErrors { try await data.open().removeTenant(name: name) }
        }
    }

    struct RotateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rotate-key", abstract: "Revoke a tenant's keys and print a new one.")
        @Argument var name: String
        @Flag(help: "Print {\"tenant\": NAME, \"api_key\": KEY} on one line.") var json = false
        @OptionGroup var data: DataOptions

        func run() async throws {
            try await reportingErrors {
                let k = APIKey.generate()
                _ = try await data.open().rotateKey(tenant: name, keyHash: k.hash, keyPrefix: k.displayPrefix)
                if json { try printJSON(KeyOutput(tenant: name, api_key: k.key)) } else { print("tenant \(name): \(k.key)") }
            }
        }
    }
}
