import ArgumentParser
import Foundation
import TesseraServer

struct TenantsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenants", abstract: "Add, list, remove, restore and purge tenants, rotate their keys and set their limits (works while a server runs on the same data directory).",
        subcommands: [Add.self, List.self, Remove.self, Restore.self, Purge.self, RotateKey.self, SetLimits.self, Limits.self])

    /// Records a CLI action in the audit trail (never a key).
    static func audit(_ storage: SQLiteStorage, _ action: String, _ target: String, _ result: String = "ok") async {
        try? await storage.appendAudit([AuditEntry(actor: "cli", action: action, target: target, result: result)])
    }

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
                let storage = try data.open()
                _ = try await storage.addTenant(name: name, role: admin ? .admin : .tenant, keyHash: k.hash, keyPrefix: k.displayPrefix)
                await audit(storage, "tenant.add", name, admin ? "ok (admin)" : "ok")
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
            let removed: String?
        }

        func run() async throws {
            try await reportingErrors {
                for t in try await data.open().tenants() {
                    let created = ISO8601DateFormatter().string(from: t.createdAt)
                    let removed = t.deletedAt.map { ISO8601DateFormatter().string(from: $0) }
                    if json { try printJSON(Row(tenant: t.name, role: t.role.rawValue, created: created, removed: removed)) } else {
                        print("\(t.name)\t\(t.role.rawValue)\t\(created)\(removed.map { "\tremoved \($0)" } ?? "")")
                    }
                }
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a tenant (a soft delete): its keys stop working at once and its adapters stop being served; its adapters, prompt layers and usage rows are kept (see restore, purge).")
        @Argument var name: String
        @OptionGroup var data: DataOptions

        func run() async throws {
            try await reportingErrors {
                let storage = try data.open()
                try await storage.removeTenant(name: name)
                await audit(storage, "tenant.remove", name)
            }
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Bring back a removed tenant: its keys and adapters work again.")
        @Argument var name: String
        @OptionGroup var data: DataOptions

        func run() async throws {
            try await reportingErrors {
                let storage = try data.open()
                try await storage.restoreTenant(name: name)
                await audit(storage, "tenant.restore", name)
                print("{\"tenant\": \"\(name)\"}")
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Erase a tenant for good: its keys, adapters, prompt layers and usage rows.")
        @Argument var name: String
        @Flag(help: "Do not ask for confirmation.") var yes = false
        @OptionGroup var data: DataOptions

        func run() async throws {
            try await reportingErrors {
                let storage = try data.open()
                guard try await storage.tenant(named: name) != nil else { throw StorageError.tenantNotFound(name) }
                if !yes {
                    printError("This erases tenant '\(name)' and all its rows for good. Type its name to confirm:")
                    guard readLine()?.trimmingCharacters(in: .whitespaces) == name else { throw ValidationError("not confirmed; nothing was erased") }
                }
                let paths = try await storage.purgeTenant(name: name)
                // Its uploaded adapters' files go too, unless another registration uses them.
                let store = URL(fileURLWithPath: data.dataDir).appendingPathComponent("adapters").standardizedFileURL.path
                let kept = try await storage.adapterPaths()
                var removed = 0
                for path in Set(paths) where !kept.contains(path)
                    && URL(fileURLWithPath: path).deletingLastPathComponent().standardizedFileURL.path == store {
                    if (try? FileManager.default.removeItem(atPath: path)) != nil { removed += 1 }
                }
                await audit(storage, "tenant.purge", name, "ok: \(paths.count) adapters, \(removed) folders removed")
            }
        }
    }

    struct LimitsOutput: Encodable {
        let tenant: String
        let limits: TenantLimits
    }

    struct SetLimits: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-limits", abstract: "Set a tenant's limits; they apply from its next request, without a restart. 0 clears a limit.")
        @Argument var name: String
        @Option(help: "Requests per minute.") var rpm: Int?
        @Option(help: "Tokens per minute (prompt plus max_tokens, the unused part refunded).") var tpm: Int?
        @Option(help: "Requests in flight at once.") var concurrency: Int?
        @Option(help: "Requests waiting in the engine's queue.") var queued: Int?
        @Option(help: "Largest max_tokens per request (also the default).") var maxTokens: Int?
        @Option(help: "Token budget per calendar month (UTC).") var monthlyTokens: Int?
        @Option(help: "Budget alert threshold, percent of the monthly budget.") var alertPercent: Double?
        @Option(help: "Fair-share weight in the engine's scheduler.") var weight: Double?
        @Option(help: "Response cache for this tenant: on or off.") var cache: String?
        @Option(help: "Self-service adapters: how many.") var maxAdapters: Int?
        @Option(help: "Self-service adapters: bytes in all.") var adapterBytes: Int?
        @OptionGroup var data: DataOptions

        func run() async throws {
            try await reportingErrors {
                let storage = try data.open()
                var l = try await storage.limits(tenant: name)
                func set(_ v: Int?, _ field: inout Int?) { if let v { field = v == 0 ? nil : v } }
                set(rpm, &l.rpm)
                set(tpm, &l.tpm)
                set(concurrency, &l.concurrency)
                set(queued, &l.queued)
                set(maxTokens, &l.maxTokens)
                set(monthlyTokens, &l.monthlyTokens)
                if let alertPercent { l.alertThreshold = alertPercent / 100 }
                if let weight { l.weight = weight }
                set(maxAdapters, &l.maxAdapters)
                set(adapterBytes, &l.adapterBytes)
                if let cache {
                    guard cache == "on" || cache == "off" else { throw ValidationError("--cache must be on or off, got '\(cache)'") }
                    l.cache = cache == "on"
                }
                if let (field, why) = l.invalidField() { throw ValidationError("--\(field.replacingOccurrences(of: "_", with: "-")): \(why)") }
                try await storage.setLimits(tenant: name, l)
                await audit(storage, "limits.set", name)
                try printJSON(LimitsOutput(tenant: name, limits: l))
            }
        }
    }

    struct Limits: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a tenant's limits.")
        @Argument var name: String
        @OptionGroup var data: DataOptions

        func run() async throws {
            try await reportingErrors { try printJSON(LimitsOutput(tenant: name, limits: try await data.open().limits(tenant: name))) }
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
                let storage = try data.open()
                _ = try await storage.rotateKey(tenant: name, keyHash: k.hash, keyPrefix: k.displayPrefix)
                await audit(storage, "key.rotate", name)
                if json { try printJSON(KeyOutput(tenant: name, api_key: k.key)) } else { print("tenant \(name): \(k.key)") }
            }
        }
    }
}
