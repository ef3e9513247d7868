import ArgumentParser
import Foundation
import Tessera

struct BenchMatmulCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-matmul",
        abstract: "Time the two matmul paths over a model's stored weights at several row counts (the crossover behind MatmulRowLimits.stored).")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Comma-separated row counts.")
    var rows = "1,2,4,8,16,24,32,48,64,128"

    @Option(help: "Measured passes per path and row count (median reported).")
    var runs = 5

    func run() async throws {
        try await reportingErrors {
            let counts = rows.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !counts.isEmpty, counts.allSatisfy({ $0 > 0 }) else { throw ValidationError("--rows must list positive integers") }
            let modelOptions = self.modelOptions, runs = self.runs
            let bundle = try await onComputeThread { try modelOptions.load() }
            print(ComputeThreads.report)
            print("weights: \(bundle.model.weightTypes.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", ")), activations \(bundle.model.activations.rawValue)")
            print("rows  stored-kernel ms  tiles+sgemm ms  faster")
            for n in counts {
                let (stored, tiled) = try await onComputeThread { try bundle.model.benchmarkLinearPaths(rows: n, runs: runs) }
                print(String(format: "%4d  %16.2f  %14.2f  %@", n, stored * 1e3, tiled * 1e3, stored <= tiled ? "stored" : "tiles"))
            }
        }
    }
}
