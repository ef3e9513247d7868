import Foundation
import Hummingbird
import Tessera
import TesseraServer

// Usage: Gateway MODEL.gguf DATA_DIR [PORT]
// Tessera's API is served under /tessera (e.g. POST /tessera/v1/chat/completions with a
// tenant key from `tessera tenants add NAME --data-dir DATA_DIR`), and GET /hello calls the
// engine directly, as the gateway's own tenant.
let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: Gateway MODEL.gguf DATA_DIR [PORT]\n".utf8))
    exit(2)
}
var configuration = RuntimeConfiguration()
configuration.model.path = arguments[1]
configuration.server.dataDirectory = arguments[2]
let port = arguments.count > 3 ? Int(arguments[3]) ?? 8090 : 8090

let bundle = try ModelBundle.load(path: arguments[1], options: configuration.model.loadOptions)
let store = AdapterStore(base: bundle.model.config, configuration: configuration.adapters)
let storage = try SQLiteStorage(directory: configuration.server.dataDirectory)
let tessera = try TesseraServer(configuration: configuration, bundle: bundle, modelPath: arguments[1], adapters: store, storage: storage)
try await tessera.restoreRegistry()

let router = Router()
// Tessera's routes, mounted under the gateway's own prefix.
tessera.addRoutes(to: router.group("tessera"))
// A route of the gateway's own that calls the engine directly.
router.get("/hello") { _, _ -> String in
    var text = ""
    let request = EngineRequest(tenant: "gateway", prompt: .chat([ChatMessage(role: "user", content: "Say hello.")]), maxTokens: 16)
    for try await event in tessera.engine.submit(request) {
        if case .delta(let piece, _, _, _) = event { text += piece }
    }
    return text
}
let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
try await app.runService()
