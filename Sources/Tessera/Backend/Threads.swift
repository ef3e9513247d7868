import CBLAS
import Foundation
import TesseraKernels

/// The one place that sets how many threads compute uses (OpenBLAS's pool included),
/// so that our threads and OpenBLAS's never oversubscribe the machine.
public enum ComputeThreads {
    /// Sets the thread count for matmuls. Call before the first forward pass.
    public static func configure(threads: Int) {
        openblas_set_num_threads(Int32(max(1, threads)))
        tsr_threads_set(Int32(max(1, threads)))
    }

    /// Threads OpenBLAS will use.
    public static var current: Int { Int(openblas_get_num_threads()) }

    /// A default: the number of online cores.
    public static var available: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// A one-line description of the compute core: CPU features and OpenBLAS's kernel.
    public static var report: String {
        let f = tsr_cpu_features()
        var features: [String] = []
        if f & Int32(TSR_CPU_AVX2) != 0 { features.append("avx2") }
        if f & Int32(TSR_CPU_FMA) != 0 { features.append("fma") }
        if f & Int32(TSR_CPU_AVX512F) != 0 { features.append("avx512f") }
        if f & Int32(TSR_CPU_AVX512VNNI) != 0 { features.append("avx512vnni") }
        let core = openblas_get_corename().map { String(cString: $0) } ?? "?"
        return "cpu features: \(features.joined(separator: ",")); openblas core: \(core), threads: \(current)"
    }
}

/// A dedicated thread that runs compute jobs one at a time, off Swift's cooperative pool.
///
/// `run` suspends the caller (without blocking a cooperative thread) until the job is done.
public final class ComputeThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []
    private var stopping = false
    private var thread: Thread?

    /// Starts the thread.
    public init(name: String = "tessera.compute") {
        let t = Thread { [unowned self] in self.loop() }
        t.name = name
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    deinit { shutdown() }

    /// Stops the thread after the jobs already queued.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping { condition.wait() }
            if jobs.isEmpty && stopping { condition.unlock(); return }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }

    /// Runs `body` on the compute thread and returns its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            condition.lock()
            jobs.append { continuation.resume(with: Result { try body() }) }
            condition.signal()
            condition.unlock()
        }
    }
}
