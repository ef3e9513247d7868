import ArgumentParser
import Foundation
import Tessera

struct ModelsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models", abstract: "Manage models.", subcommands: [Pull.self, Path.self])

    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Fetch the default model (SmolLM2-135M-Instruct Q4_1) into the cache.")
        func run() async throws {
            try await reportingErrors {
                let url = try DefaultModel.ensure(log: { printError($0) })
                print(url.path)
            }
        }
    }

    struct Path: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print where the default model is (or will be) cached.")
        func run() async throws { print(DefaultModel.path.path) }
    }
}
