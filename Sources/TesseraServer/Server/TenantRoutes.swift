import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import MultipartKit
import NIOCore
import Tessera

/// Routes a tenant reaches with its own key (prompt layer, self-service adapters) and their
/// administrator forms.
extension TesseraServer {
    func addTenantRoutes<Context: RequestContext>(to router: some RouterMethods<Context>) {
        router.get("/v1/prompt-layer") { [self] request, _ in
            let p = try await authenticate(request)
            return try await promptLayerResponse(tenant: p.tenant)
        }
        router.put("/v1/prompt-layer") { [self] request, _ in
            let p = try await authenticate(request)
            return try await putPromptLayer(request, tenant: p.tenant, actor: p.tenant)
        }
        router.delete("/v1/prompt-layer") { [self] request, _ in
            let p = try await authenticate(request)
            return try await deletePromptLayer(tenant: p.tenant, actor: p.tenant)
        }
        router.get("/v1/admin/tenants/{name}/prompt-layer") { [self] request, context in
            _ = try await requireAdmin(request)
            let tenant = try await existingTenant(context.parameters.get("name") ?? "")
            return try await promptLayerResponse(tenant: tenant)
        }
        router.put("/v1/admin/tenants/{name}/prompt-layer") { [self] request, context in
            let admin = try await requireAdmin(request)
            let tenant = try await existingTenant(context.parameters.get("name") ?? "")
            return try await putPromptLayer(request, tenant: tenant, actor: admin.tenant)
        }
        router.delete("/v1/admin/tenants/{name}/prompt-layer") { [self] request, context in
            let admin = try await requireAdmin(request)
            let tenant = try await existingTenant(context.parameters.get("name") ?? "")
            return try await deletePromptLayer(tenant: tenant, actor: admin.tenant)
        }
        router.post("/v1/adapters") { [self] request, _ in try await uploadAdapter(request) }
        router.get("/v1/adapters") { [self] request, _ in
            let p = try await authenticate(request)
            return Self.json(["object": "list", "data": uploads(of: p.tenant).map { uploadCard($0, tenant: p.tenant) }])
        }
        router.delete("/v1/adapters/{name}") { [self] request, context in
            try await deleteUpload(request, name: context.parameters.get("name") ?? "")
        }
    }

    static func tenantNotFound(_ name: String) -> APIError {
        APIError(status: .notFound, message: "No tenant named '\(name)'.", type: "invalid_request_error", param: "name", code: "tenant_not_found")
    }

    func existingTenant(_ name: String) async throws -> String {
        guard let t = try await storage.tenant(named: name), t.deletedAt == nil else { throw Self.tenantNotFound(name) }
        return t.name
    }

    // MARK: Prompt layers

    func promptLayerJSON(_ l: PromptLayer) -> [String: Any] {
        ["tenant": l.tenant, "version": l.version, "system": l.system as Any? ?? NSNull(),
         "examples": l.examples.map { ["role": $0.role, "content": $0.content] }, "adapter": l.adapter as Any? ?? NSNull()]
    }

    func promptLayerResponse(tenant: String) async throws -> Response {
        guard let layer = try await storage.promptLayer(tenant: tenant) else {
            throw APIError(status: .notFound, message: "Tenant '\(tenant)' has no prompt layer.", type: "invalid_request_error", param: nil,
                           code: "prompt_layer_not_found")
        }
        return Self.json(promptLayerJSON(layer))
    }

    /// `{"system": TEXT or null, "examples": [{"role", "content"}, ...], "adapter": NAME or null}`:
    /// a new version of the tenant's layer.
    func putPromptLayer(_ request: Request, tenant: String, actor: String) async throws -> Response {
        var request = request
        let body = try await collectJSON(&request)
        for key in body.keys.sorted() where !["system", "examples", "adapter"].contains(key) {
            throw APIError.badRequest("Unrecognized field '\(key)'; a prompt layer has system, examples and adapter.", param: key, code: "unknown_parameter")
        }
        let f = RequestFields(body)
        let system = try f.string("system")
        var examples: [PromptLayer.Message] = []
        switch body["examples"] {
        case nil, .null?: break
        case .array(let items)?:
            for (i, item) in items.enumerated() {
                let field = "examples[\(i)]"
                guard case .object(let o) = item, case .string(let role)? = o["role"], case .string(let content)? = o["content"], o.count == 2 else {
                    throw APIError.badRequest("'\(field)' must be {\"role\": ..., \"content\": ...} with string values.", param: field)
                }
                guard ["system", "user", "assistant"].contains(role) else {
                    throw APIError.badRequest("'\(field).role' must be system, user or assistant; got '\(role)'.", param: "\(field).role")
                }
                examples.append(.init(role: role, content: content))
            }
        case let v?: throw APIError.badRequest("'examples' must be an array, got \(v.typeName).", param: "examples")
        }
        guard (system ?? "").isEmpty == false || !examples.isEmpty else {
            throw APIError.badRequest("A prompt layer needs a 'system' text or at least one of 'examples'.", param: "system")
        }
        let adapter = try f.string("adapter")
        if let adapter {
            // Bound to one of the tenant's adapters: one it can use by that name.
            let owner = Principal(tenantId: 0, tenant: tenant, role: .tenant, keyId: 0)
            guard adapter != modelName, (try? resolveModel(adapter, for: owner)) != nil else {
                throw APIError.badRequest("'adapter': tenant '\(tenant)' has no adapter named '\(adapter)'.", param: "adapter")
            }
        }
        let size = (system?.utf8.count ?? 0) + examples.reduce(0) { $0 + $1.content.utf8.count }
        guard tokenizer.encode((system ?? "") + examples.map(\.content).joined()).count + examples.count * 8 < contextLimit / 2 else {
            throw APIError.badRequest("The prompt layer (\(size) bytes) leaves less than half of the \(contextLimit)-token context for requests.",
                                      param: "system")
        }
        let layer = try await storage.setPromptLayer(tenant: tenant, system: system, examples: examples, adapter: adapter)
        await auditor.record(actor: actor, action: "prompt_layer.set", target: tenant, result: "ok: version \(layer.version)")
        return Self.json(promptLayerJSON(layer))
    }

    func deletePromptLayer(tenant: String, actor: String) async throws -> Response {
        guard try await storage.deletePromptLayer(tenant: tenant) else {
            throw APIError(status: .notFound, message: "Tenant '\(tenant)' has no prompt layer.", type: "invalid_request_error", param: nil,
                           code: "prompt_layer_not_found")
        }
        await auditor.record(actor: actor, action: "prompt_layer.delete", target: tenant, result: "ok")
        return Self.json(["tenant": tenant, "deleted": true])
    }

    // MARK: Self-service adapters

    /// The tenant's uploaded adapters (its `@tenant/` namespace).
    func uploads(of tenant: String) -> [AdapterStore.Registration] {
        let prefix = Self.uploadedName("", tenant: tenant)
        return adapters.registrations.filter { $0.name.hasPrefix(prefix) && $0.owner == tenant }
    }

    func uploadCard(_ r: AdapterStore.Registration, tenant: String) -> [String: Any] {
        ["id": Self.publicName(r.name, for: tenant), "object": "adapter", "version": r.version, "sha256": r.sha256, "bytes": r.byteCount,
         "rank": r.ranks.max() ?? 0, "targets": r.targets.map(\.rawValue), "format": r.format.rawValue, "parent": modelName,
         "state": (adapters.residency(of: r.name) ?? .registered).rawValue]
    }

    static func uploadError(_ message: String, param: String?, code: String = "invalid_adapter") -> APIError {
        APIError.badRequest(message, param: param, code: code)
    }

    /// `POST /v1/adapters`, multipart: `name`, `adapter_config.json`, `adapter_model.safetensors`.
    /// Checked against the base before anything is registered; stored under the data directory
    /// by sha256; nothing stays on disk when it is refused.
    func uploadAdapter(_ request: Request) async throws -> Response {
        let p = try await authenticate(request)
        let fields = ["name", "adapter_config.json", "adapter_model.safetensors"]
        guard let contentType = request.headers[.contentType], contentType.lowercased().hasPrefix("multipart/form-data"),
              let boundary = Self.multipartBoundary(contentType) else {
            throw Self.uploadError("The body must be multipart/form-data with the fields \(fields.joined(separator: ", ")).", param: nil,
                                   code: "invalid_request")
        }
        let limit = configuration.server.maxUploadBytes
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit { throw Self.tooLarge(limit) }
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: limit) } catch let e as HTTPError where e.status == .contentTooLarge {
            throw Self.tooLarge(limit)
        }
        let parts: [String: ByteBuffer]
        do { parts = try Self.multipartParts(buffer, boundary: boundary) } catch {
            throw Self.uploadError("The multipart body is malformed.", param: nil, code: "invalid_request")
        }
        for field in fields where parts[field] == nil {
            throw Self.uploadError("The field '\(field)' is missing; an upload has \(fields.joined(separator: ", ")).", param: field)
        }
        let name = String(buffer: parts["name"] ?? ByteBuffer()).trimmingCharacters(in: .whitespacesAndNewlines)
        guard Self.isValidAdapterName(name), !name.contains("/") else {
            throw Self.uploadError("'name' must be 1-128 characters of letters, digits and . _ : -, starting with a letter or digit.", param: "name")
        }
        guard name != modelName else { throw Self.uploadError("'name' must differ from the base model's name.", param: "name") }
        let config = Data((parts["adapter_config.json"] ?? ByteBuffer()).readableBytesView)
        let weights = Data((parts["adapter_model.safetensors"] ?? ByteBuffer()).readableBytesView)
        do {
            guard try JSONSerialization.jsonObject(with: config) is [String: Any] else {
                throw Self.uploadError("'adapter_config.json' must be a JSON object.", param: "adapter_config.json")
            }
        } catch let e as APIError { throw e } catch {
            throw Self.uploadError("'adapter_config.json' is not valid JSON.", param: "adapter_config.json")
        }
        guard !weights.isEmpty else { throw Self.uploadError("'adapter_model.safetensors' is empty.", param: "adapter_model.safetensors") }

        let registryName = Self.uploadedName(name, tenant: p.tenant)
        // The quota: count and bytes, not counting the version this upload replaces.
        let others = uploads(of: p.tenant).filter { $0.name != registryName }
        if let max = p.limits.maxAdapters, others.count + 1 > max {
            throw APIError(status: .forbidden, message: "Tenant '\(p.tenant)' may keep \(max) uploaded adapter\(max == 1 ? "" : "s"); delete one first.",
                           type: "invalid_request_error", param: nil, code: "adapter_quota_exceeded")
        }
        let bytesUsed = others.reduce(0) { $0 + $1.byteCount }
        if let max = p.limits.adapterBytes, bytesUsed + weights.count > max {
            throw APIError(status: .forbidden, message: "This upload (\(weights.count) bytes) would take tenant '\(p.tenant)' past its \(max)-byte adapter quota (\(bytesUsed) in use).",
                           type: "invalid_request_error", param: nil, code: "adapter_quota_exceeded")
        }

        var hash = SHA256()
        hash.update(data: config)
        hash.update(data: weights)
        let digest = hash.finalize().map { String(format: "%02x", $0) }.joined()
        let fm = FileManager.default
        let dataDir = uploadRoot
        let staging = (dataDir as NSString).appendingPathComponent(".uploads/\(UUID().uuidString)")
        let store = (dataDir as NSString).appendingPathComponent("adapters")
        let final = (store as NSString).appendingPathComponent(digest)
        defer { try? fm.removeItem(atPath: staging) }
        var created = false
        do {
            if !fm.fileExists(atPath: final) {
                try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
                try config.write(to: URL(fileURLWithPath: (staging as NSString).appendingPathComponent("adapter_config.json")))
                try weights.write(to: URL(fileURLWithPath: (staging as NSString).appendingPathComponent("adapter_model.safetensors")))
                try fm.createDirectory(atPath: store, withIntermediateDirectories: true)
                try fm.moveItem(atPath: staging, toPath: final)
                created = true
            }
        } catch {
            throw APIError.internalError("The upload could not be stored.")
        }
        let previous = adapters.registration(registryName)
        let r: AdapterStore.Registration
        do {
            r = try await register(name: registryName, path: final, owner: p.tenant, actor: p.tenant, action: "adapter.upload")
        } catch {
            if created { try? fm.removeItem(atPath: final) }
            if let e = error as? AdapterError {
                let field = if case .invalidConfig = e.reason { "adapter_config.json" } else { "adapter_model.safetensors" }
                // The server's paths are not the tenant's business: name the file alone.
                let why = e.description.replacingOccurrences(of: final + "/", with: "").replacingOccurrences(of: final, with: name)
                throw Self.uploadError("The adapter does not fit the base model '\(modelName)': \(why)", param: field)
            }
            throw error
        }
        if let previous, previous.path != final { await removeUnusedUpload(path: previous.path) }
        return Self.json(uploadCard(r, tenant: p.tenant))
    }

    func deleteUpload(_ request: Request, name: String) async throws -> Response {
        let p = try await authenticate(request)
        let registryName = Self.uploadedName(name, tenant: p.tenant)
        guard let r = adapters.registration(registryName), r.owner == p.tenant,
              try await unregister(name: registryName, actor: p.tenant, action: "adapter.delete") else {
            throw APIError(status: .notFound, message: "No adapter named '\(name)'.", type: "invalid_request_error", param: "name", code: "adapter_not_found")
        }
        await removeUnusedUpload(path: r.path)
        return Self.json(["id": name, "object": "adapter", "deleted": true])
    }

    /// Deletes an uploaded adapter's folder once no registration points at it.
    func removeUnusedUpload(path: String) async {
        let store = (uploadRoot as NSString).appendingPathComponent("adapters")
        guard (path as NSString).deletingLastPathComponent == store else { return }
        guard let kept = try? await storage.adapterPaths(), !kept.contains(path),
              !adapters.registrations.contains(where: { $0.path == path }) else { return }
        try? FileManager.default.removeItem(atPath: path)
    }

    /// The data directory as an absolute path (uploads are recorded by absolute paths).
    var uploadRoot: String { URL(fileURLWithPath: configuration.server.dataDirectory).standardizedFileURL.path }

    static func multipartBoundary(_ contentType: String) -> String? {
        for param in contentType.split(separator: ";").dropFirst() {
            let kv = param.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, kv[0].lowercased() == "boundary" else { continue }
            let b = kv[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            return b.isEmpty || b.count > 200 ? nil : b
        }
        return nil
    }

    /// The named parts of a multipart/form-data body (the first part of each name).
    static func multipartParts(_ body: ByteBuffer, boundary: String) throws -> [String: ByteBuffer] {
        let parser = MultipartParser(boundary: boundary)
        var parts: [String: ByteBuffer] = [:]
        var headers: [(String, String)] = []
        var current = ByteBuffer()
        parser.onHeader = { headers.append(($0, $1)) }
        parser.onBody = { current.writeBuffer(&$0) }
        parser.onPartComplete = {
            let disposition = headers.first { $0.0.lowercased() == "content-disposition" }?.1 ?? ""
            if let name = dispositionName(disposition), parts[name] == nil { parts[name] = current }
            headers = []
            current = ByteBuffer()
        }
        try parser.execute(body)
        return parts
    }

    static func dispositionName(_ header: String) -> String? {
        for param in header.split(separator: ";").dropFirst() {
            let kv = param.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if kv.count == 2, kv[0].lowercased() == "name" { return kv[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        }
        return nil
    }
}
