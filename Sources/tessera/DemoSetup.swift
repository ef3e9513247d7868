import Foundation
import Tessera
import TesseraServer

/// `tessera serve --demo`: two tenants, each with an adapter of its own synthesized from the
/// base model, and an admin. Keys are shown once, when made: on a later `--demo` run the demo
/// tenants' keys are rotated, so the printed examples always work.
enum DemoSetup {
    struct Keys {
        var alice: String
        var bob: String
        var admin: String
    }

    static let tenants: [(name: String, adapter: String, seed: UInt64)] = [("alice", "alice-haiku", 1), ("bob", "bob-pirate", 2)]

    static func prepare(server: TesseraServer, storage: any TesseraStorage, directory: String) async throws -> Keys {
        var keys: [String: String] = [:]
        for (name, role) in [("alice", TenantRole.tenant), ("bob", .tenant), ("demo-admin", .admin)] {
            let k = APIKey.generate()
            if try await storage.tenant(named: name) == nil {
                _ = try await storage.addTenant(name: name, role: role, keyHash: k.hash, keyPrefix: k.displayPrefix)
            } else {
                _ = try await storage.rotateKey(tenant: name, keyHash: k.hash, keyPrefix: k.displayPrefix)
            }
            keys[name] = k.key
        }
        for t in tenants where server.adapters.registration(t.adapter) == nil {
            let dir = URL(fileURLWithPath: directory).appendingPathComponent("demo-adapters").appendingPathComponent(t.adapter)
            try AdapterSynthesizer.write(to: dir, base: server.engine.model.config, baseName: server.modelName, rank: 8,
                                         targets: LoRATarget.allCases, seed: t.seed)
            _ = try await server.registerForDemo(name: t.adapter, path: dir.path, owner: t.name)
        }
        return Keys(alice: keys["alice"] ?? "", bob: keys["bob"] ?? "", admin: keys["demo-admin"] ?? "")
    }

    static func banner(baseURL: String, model: String, keys: Keys) -> String {
        """

        Tessera demo: \(model) with two tenants, each with a rank-8 LoRA adapter of its own.

          tenant  alice       key \(keys.alice)   adapter alice-haiku
          tenant  bob         key \(keys.bob)   adapter bob-pirate
          admin   demo-admin  key \(keys.admin)

        Keys are shown once; run --demo again for new ones. Try, in another terminal:

        curl -s \(baseURL)/v1/chat/completions -H "Authorization: Bearer \(keys.alice)" -H "Content-Type: application/json" -d '{"model": "alice-haiku", "messages": [{"role": "user", "content": "Write a haiku about mosaic tiles."}], "max_tokens": 48}'

        curl -s \(baseURL)/v1/models -H "Authorization: Bearer \(keys.bob)"

        python3 -m venv /tmp/tessera-openai && /tmp/tessera-openai/bin/pip install -q openai && /tmp/tessera-openai/bin/python - <<'PY'
        from openai import OpenAI
        client = OpenAI(base_url="\(baseURL)/v1", api_key="\(keys.bob)")
        stream = client.chat.completions.create(model="bob-pirate", messages=[{"role": "user", "content": "Tell me about the sea."}], max_tokens=48, stream=True)
        for chunk in stream:
            print(chunk.choices[0].delta.content or "", end="", flush=True)
        print()
        PY

        """
    }
}
