import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Tessera

extension TesseraServer {
    /// Mounts every route on `router`: the OpenAI API, vLLM's adapter routes, the admin
    /// routes, `/health`, `/ready` and `/metrics`. A gateway calls this on its own router.
    public func addRoutes<Context: RequestContext>(to router: some RouterMethods<Context>) {
        router.post("/v1/completions") { [self] request, _ in try await handleGeneration(request, kind: .completion) }
        router.post("/v1/chat/completions") { [self] request, _ in try await handleGeneration(request, kind: .chat) }
        router.get("/v1/models") { [self] request, _ in try await listModels(request) }
        router.get("/v1/models/{id}") { [self] request, context in
            try await model(request, id: context.parameters.get("id") ?? "")
        }
        router.get("/health") { _, _ in Self.json(["status": "ok"]) }
        router.get("/ready") { [self] _, _ in
            guard state == .running else { throw APIError.unavailable("The server is draining.", retryAfterSeconds: 1) }
            return Self.json(["status": "ready"])
        }
        router.get("/metrics") { [self] _, _ in
            let text = metrics.render(engine: engine.statistics, configuration: configuration, resident: adapters.residentAdapters,
                                      cache: responseCache.statistics)
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        router.post("/v1/admin/adapters") { [self] request, _ in try await adminRegister(request) }
        router.get("/v1/admin/adapters") { [self] request, _ in try await adminList(request) }
        router.delete("/v1/admin/adapters/{name}") { [self] request, context in
            try await adminUnregister(request, name: context.parameters.get("name") ?? "")
        }
        router.get("/v1/admin/tenants/{name}/limits") { [self] request, context in
            try await adminLimits(request, tenant: context.parameters.get("name") ?? "", update: false)
        }
        router.put("/v1/admin/tenants/{name}/limits") { [self] request, context in
            try await adminLimits(request, tenant: context.parameters.get("name") ?? "", update: true)
        }
        router.get("/v1/admin/usage") { [self] request, _ in
            _ = try await requireAdmin(request)
            return try await usageResponse(request, tenant: request.uri.queryParameters.get("tenant"))
        }
        router.get("/v1/usage") { [self] request, _ in
            let p = try await authenticate(request)
            return try await usageResponse(request, tenant: p.tenant)
        }
        router.get("/v1/admin/audit") { [self] request, _ in
            _ = try await requireAdmin(request)
            let limit = request.uri.queryParameters.get("limit").flatMap(Int.init) ?? 1000
            let iso = ISO8601DateFormatter()
            let entries = try await storage.audit(limit: max(1, min(limit, 100_000)), since: nil).map {
                ["time": iso.string(from: $0.time), "actor": $0.actor, "action": $0.action, "target": $0.target, "result": $0.result]
            }
            return Self.json(["object": "list", "data": entries])
        }
        addTenantRoutes(to: router)
        router.post("/v1/load_lora_adapter") { [self] request, _ in try await vllmLoad(request) }
        router.post("/v1/unload_lora_adapter") { [self] request, _ in try await vllmUnload(request) }
    }

    // MARK: Tenancy

    /// Reads, or with `update` replaces the given keys of (null clears), a tenant's limits.
    func adminLimits(_ request: Request, tenant: String, update: Bool) async throws -> Response {
        let admin = try await requireAdmin(request)
        var l: TenantLimits
        do { l = try await storage.limits(tenant: tenant) } catch StorageError.tenantNotFound {
            throw APIError(status: .notFound, message: "No tenant named '\(tenant)'.", type: "invalid_request_error", param: "name", code: "tenant_not_found")
        }
        if update {
            var request = request
            let body = try await collectJSON(&request)
            let known = Set(["rpm", "tpm", "concurrency", "queued", "max_tokens", "monthly_tokens", "alert_threshold", "weight", "cache", "max_adapters", "adapter_bytes"])
            if let unknown = body.keys.sorted().first(where: { !known.contains($0) }) {
                throw APIError.badRequest("Unknown limit '\(unknown)'.", param: unknown, code: "unknown_parameter")
            }
            let f = RequestFields(body)
            func int(_ key: String, _ field: inout Int?) throws {
                guard let v = body[key] else { return }
                field = v == .null ? nil : try f.integer(key)
            }
            try int("rpm", &l.rpm)
            try int("tpm", &l.tpm)
            try int("concurrency", &l.concurrency)
            try int("queued", &l.queued)
            try int("max_tokens", &l.maxTokens)
            try int("monthly_tokens", &l.monthlyTokens)
            try int("max_adapters", &l.maxAdapters)
            try int("adapter_bytes", &l.adapterBytes)
            if body["alert_threshold"] != nil { l.alertThreshold = try f.number("alert_threshold") ?? 0.8 }
            if body["weight"] != nil { l.weight = try f.number("weight") ?? 1 }
            if body["cache"] != nil { l.cache = try f.bool("cache") ?? true }
            if let (field, why) = l.invalidField() { throw APIError.badRequest("'\(field)' \(why).", param: field) }
            try await storage.setLimits(tenant: tenant, l)
            await auditor.record(actor: admin.tenant, action: "limits.set", target: tenant, result: "ok")
        }
        let data = try JSONEncoder().encode(l)
        let limits = (try? JSONSerialization.jsonObject(with: data)) ?? [:]
        return Self.json(["tenant": tenant, "limits": limits])
    }

    /// Ledger totals, `by` tenant, adapter or day; `tenant` scopes them (a tenant sees only its own).
    func usageResponse(_ request: Request, tenant: String?) async throws -> Response {
        let q = request.uri.queryParameters
        let byText = q.get("by") ?? "tenant"
        guard let by = UsageGrouping(rawValue: byText) else { throw APIError.badRequest("'by' must be tenant, adapter or day.", param: "by") }
        func day(_ key: String) throws -> Date? {
            guard let text = q.get(key) else { return nil }
            guard let d = UsageQuery.day(text) else { throw APIError.badRequest("'\(key)' must be YYYY-MM-DD.", param: key) }
            return d
        }
        let rows = try await storage.usageReport(UsageQuery(tenant: tenant, since: try day("since"), until: try day("until"), by: by))
        let data: [[String: Any]] = rows.map { r in
            [by.rawValue: r.key as Any? ?? NSNull(), "requests": r.requests, "prompt_tokens": r.promptTokens, "cached_prompt_tokens": r.cachedPromptTokens,
             "completion_tokens": r.completionTokens, "cached_responses": r.cachedResponses]
        }
        return Self.json(["object": "list", "data": data])
    }

    static func json(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: data)))
    }

    static func text(_ s: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: s)))
    }

    // MARK: Models

    func baseCard() -> [String: Any] {
        ["id": modelName, "object": "model", "created": createdAt, "owned_by": "tessera", "root": modelName, "parent": NSNull(),
         "max_model_len": contextLimit]
    }

    /// An adapter's model card as `p` sees it: its own uploads by their plain names, and the
    /// file's path only for administrators.
    func card(_ r: AdapterStore.Registration, for p: Principal) -> [String: Any] {
        let id = Self.publicName(r.name, for: p.tenant)
        return ["id": id, "object": "model", "created": createdAt, "owned_by": r.owner ?? "tessera", "root": p.role == .admin ? r.path : id,
                "parent": modelName, "max_model_len": contextLimit]
    }

    func listModels(_ request: Request) async throws -> Response {
        let p = try await authenticate(request)
        let cards = [baseCard()] + adapters.registrations.filter { visible($0, to: p) }.map { card($0, for: p) }
        return Self.json(["object": "list", "data": cards])
    }

    func model(_ request: Request, id: String) async throws -> Response {
        let p = try await authenticate(request)
        guard let name = try resolveModel(id, for: p) else { return Self.json(baseCard()) }
        guard let r = adapters.registration(name) else { throw APIError.modelNotFound(id) }
        return Self.json(card(r, for: p))
    }

    // MARK: Admin

    func registrationJSON(_ r: AdapterStore.Registration) -> [String: Any] {
        ["name": r.name, "version": r.version, "owner": r.owner ?? NSNull(), "path": r.path, "sha256": r.sha256, "format": r.format.rawValue,
         "state": (adapters.residency(of: r.name) ?? .registered).rawValue, "rank": r.ranks.max() ?? 0, "ranks": r.ranks,
         "targets": r.targets.map(\.rawValue), "layers": r.layers.count, "bytes": r.byteCount]
    }

    static func isValidAdapterName(_ name: String) -> Bool {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/-")
        guard let first = name.first, first.isASCII, first.isLetter || first.isNumber, name.count <= 128 else { return false }
        return name.allSatisfy(allowed.contains)
    }

    /// Checks a name, path and owner, then registers (a new version if the name exists).
    func registerChecked(name: String?, path: String?, owner: String?, nameField: String, pathField: String,
                         actor: String) async throws -> AdapterStore.Registration {
        guard let name, Self.isValidAdapterName(name) else {
            throw APIError.badRequest("'\(nameField)' must be 1-128 characters of letters, digits and . _ : / -, starting with a letter or digit.", param: nameField)
        }
        guard name != modelName else { throw APIError.badRequest("'\(nameField)' must differ from the base model's name.", param: nameField) }
        guard let path, !path.isEmpty else { throw APIError.badRequest("'\(pathField)' is required.", param: pathField) }
        if let owner, try await storage.tenant(named: owner) == nil {
            throw APIError.badRequest("'owner': no tenant named '\(owner)'.", param: "owner")
        }
        do { return try await register(name: name, path: path, owner: owner, actor: actor) } catch let e as AdapterError {
            throw APIError.badRequest("The adapter cannot be registered: \(e.description)", param: pathField, code: "invalid_adapter")
        }
    }

    func adminRegister(_ request: Request) async throws -> Response {
        let admin = try await requireAdmin(request)
        var request = request
        let body = try await collectJSON(&request)
        let f = RequestFields(body)
        for key in body.keys.sorted() where !["name", "path", "owner"].contains(key) {
            throw APIError.badRequest("Unrecognized field '\(key)'.", param: key, code: "unknown_parameter")
        }
        let r = try await registerChecked(name: try f.string("name"), path: try f.string("path"), owner: try f.string("owner"),
                                          nameField: "name", pathField: "path", actor: admin.tenant)
        return Self.json(registrationJSON(r))
    }

    func adminList(_ request: Request) async throws -> Response {
        _ = try await requireAdmin(request)
        // The database is the truth (the CLI may have changed it since the last poll).
        await reconcileRegistry()
        return Self.json(["object": "list", "data": adapters.registrations.map(registrationJSON)])
    }

    func adminUnregister(_ request: Request, name: String) async throws -> Response {
        let admin = try await requireAdmin(request)
        guard try await unregister(name: name, actor: admin.tenant) else {
            throw APIError(status: .notFound, message: "No adapter named '\(name)'.", type: "invalid_request_error", param: "name", code: "adapter_not_found")
        }
        return Self.json(["name": name, "deleted": true])
    }

    /// vLLM's `POST /v1/load_lora_adapter {"lora_name", "lora_path"}`: a shared adapter. As in
    /// vLLM, an existing name is refused unless `load_inplace` is true (then it is a hot swap).
    func vllmLoad(_ request: Request) async throws -> Response {
        let admin = try await requireAdmin(request)
        var request = request
        let body = try await collectJSON(&request)
        let f = RequestFields(body)
        for key in body.keys.sorted() where !["lora_name", "lora_path", "load_inplace"].contains(key) {
            throw APIError.badRequest("Unrecognized field '\(key)'.", param: key, code: "unknown_parameter")
        }
        let name = try f.string("lora_name")
        if let name, adapters.registration(name) != nil, try f.bool("load_inplace") != true {
            throw APIError.badRequest("The lora adapter '\(name)' has already been loaded. Set load_inplace to true to replace it.", param: "lora_name")
        }
        let r = try await registerChecked(name: name, path: try f.string("lora_path"), owner: nil, nameField: "lora_name", pathField: "lora_path",
                                          actor: admin.tenant)
        return Self.text("Success: LoRA adapter '\(r.name)' added successfully.")
    }

    func vllmUnload(_ request: Request) async throws -> Response {
        let admin = try await requireAdmin(request)
        var request = request
        let body = try await collectJSON(&request)
        let f = RequestFields(body)
        guard let name = try f.string("lora_name") else { throw APIError.badRequest("'lora_name' is required.", param: "lora_name") }
        guard try await unregister(name: name, actor: admin.tenant) else {
            throw APIError(status: .notFound, message: "The lora adapter '\(name)' cannot be found.", type: "invalid_request_error",
                           param: "lora_name", code: "adapter_not_found")
        }
        return Self.text("Success: LoRA adapter '\(name)' removed successfully.")
    }
}
