import ArgumentParser
import Foundation
import TesseraServer

/// `tessera usage`: ledger totals for cost allocation, read from the server's database.
struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "usage", abstract: "Usage totals from the ledger, by tenant, adapter or day (UTC).")
    @Option(help: "Only this tenant.") var tenant: String?
    @Option(help: "From this day (YYYY-MM-DD, UTC), inclusive.") var since: String?
    @Option(help: "Until this day (YYYY-MM-DD, UTC), exclusive.") var until: String?
    @Option(help: "Group by tenant, adapter or day.") var by: String = "tenant"
    @Flag(help: "A JSON array.") var json = false
    @Flag(help: "CSV with a header row.") var csv = false
    @OptionGroup var data: TenantsCommand.DataOptions

    static func day(_ text: String?, _ flag: String) throws -> Date? {
        guard let text else { return nil }
        guard let d = UsageQuery.day(text) else { throw ValidationError("\(flag) must be a day as YYYY-MM-DD, got '\(text)'") }
        return d
    }

    func run() async throws {
        guard let grouping = UsageGrouping(rawValue: by) else { throw ValidationError("--by must be tenant, adapter or day, got '\(by)'") }
        let query = UsageQuery(tenant: tenant, since: try Self.day(since, "--since"), until: try Self.day(until, "--until"), by: grouping)
        try await reportingErrors {
            let rows = try await data.open().usageReport(query)
            let keyName = grouping.rawValue
            if json {
                let objects: [[String: Any]] = rows.map { r in
                    [keyName: r.key as Any? ?? NSNull(), "requests": r.requests, "prompt_tokens": r.promptTokens,
                     "cached_prompt_tokens": r.cachedPromptTokens, "completion_tokens": r.completionTokens, "cached_responses": r.cachedResponses]
                }
                let data = try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys, .withoutEscapingSlashes])
                FileHandle.standardOutput.write(data + Data("\n".utf8))
            } else if csv {
                print("\(keyName),requests,prompt_tokens,cached_prompt_tokens,completion_tokens,cached_responses")
                for r in rows {
                    let k = (r.key ?? "").replacingOccurrences(of: "\"", with: "\"\"")
                    print("\"\(k)\",\(r.requests),\(r.promptTokens),\(r.cachedPromptTokens),\(r.completionTokens),\(r.cachedResponses)")
                }
            } else {
                print("\(keyName)\trequests\tprompt\tcached_prompt\tcompletion\tcached_responses")
                for r in rows { print("\(r.key ?? "(base)")\t\(r.requests)\t\(r.promptTokens)\t\(r.cachedPromptTokens)\t\(r.completionTokens)\t\(r.cachedResponses)") }
            }
        }
    }
}

/// `tessera audit`: the audit trail (admin actions, adapter events, budget alerts, failed keys).
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "The audit trail, oldest first.")
    @Option(help: "The most recent N entries.") var limit = 1000
    @Option(help: "From this day (YYYY-MM-DD, UTC).") var since: String?
    @Flag(help: "A JSON array of {time, actor, action, target, result}.") var json = false
    @OptionGroup var data: TenantsCommand.DataOptions

    func run() async throws {
        let from = try UsageCommand.day(since, "--since")
        try await reportingErrors {
            let entries = try await data.open().audit(limit: limit, since: from)
            let iso = ISO8601DateFormatter()
            if json {
                let objects: [[String: Any]] = entries.map {
                    ["time": iso.string(from: $0.time), "actor": $0.actor, "action": $0.action, "target": $0.target, "result": $0.result]
                }
                let data = try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys, .withoutEscapingSlashes])
                FileHandle.standardOutput.write(data + Data("\n".utf8))
            } else {
                for e in entries { print("\(iso.string(from: e.time))\t\(e.actor)\t\(e.action)\t\(e.target)\t\(e.result)") }
            }
        }
    }
}
