import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

extension TesseraServer {
    /// Serves on `host:port` until SIGTERM or SIGINT, then drains: new requests get 503 while
    /// in-flight ones finish (up to `drain_seconds`), and the call returns.
    /// `onRunning` is called once the socket is listening.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router()
        router.add(middleware: RequestLogMiddleware(logger: logger))
        addRoutes(to: router)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(configuration.server.host, port: configuration.server.port), serverName: "tessera"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
        // Services stop in reverse order: the drainer first (503s, then waiting for in-flight
        // requests), then the HTTP server, then the registry poller.
        let group = ServiceGroup(configuration: .init(
            services: [RegistryPoller(server: self), app, Drainer(server: self)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// On graceful shutdown: stop admitting, let in-flight requests finish within the grace period.
struct Drainer: Service {
    let server: TesseraServer

    func run() async throws {
        try? await gracefulShutdown()
        await server.drain(seconds: server.configuration.server.drainSeconds)
    }
}

/// Keeps the adapter registry in step with the database once a second (a tenant removed by
/// `tessera tenants remove` takes its adapters with it).
struct RegistryPoller: Service {
    let server: TesseraServer

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                await server.reconcileRegistry()
            }
        }
    }
}

/// One log line per request that is not a generation (those log their own, with the tenant):
/// method, path, status, milliseconds. Never headers (keys) or bodies (prompts).
struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let path = request.uri.path
        let quiet = path == "/health" || path == "/metrics" || path == "/ready" || path.hasSuffix("completions")
        do {
            let response = try await next(request, context)
            if !quiet || response.status.code >= 400 {
                logger.info("request", metadata: ["method": "\(request.method)", "path": "\(path)", "status": "\(response.status.code)",
                                                  "ms": "\(TesseraServer.milliseconds(since: started))"])
            }
            return response
        } catch let e as APIError {
            logger.info("request", metadata: ["method": "\(request.method)", "path": "\(path)", "status": "\(e.status.code)",
                                              "code": "\(e.code ?? e.type)", "ms": "\(TesseraServer.milliseconds(since: started))"])
            throw e
        } catch let e as HTTPResponseError {
            logger.info("request", metadata: ["method": "\(request.method)", "path": "\(path)", "status": "\(e.status.code)",
                                              "ms": "\(TesseraServer.milliseconds(since: started))"])
            throw e
        }
    }
}
