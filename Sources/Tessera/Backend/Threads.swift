import CBLAS
import Foundation
import TesseraKernels

/// The one place that sets how many threads compute uses. Every kernel runs on our pool
/// (`tsr_parallel`), OpenBLAS included: it is kept single-threaded and ``BLAS`` splits its
/// calls across the pool, so no second pool of threads spins against ours (OpenBLAS's idle
/// threads busy-wait for a long while after each call: prefill 203 -> 253 tok/s without them).
public enum ComputeThreads {
    /// Sets the thread count for every kernel. Call before the first forward pass.
    public static func configure(threads: Int) {
        openblas_set_num_threads(1)
        tsr_threads_set(Int32(max(1, threads)))
    }

    /// Threads the kernels use.
    public static var current: Int { Int(tsr_threads_get()) }

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

/// OpenBLAS products split across our thread pool, each thread calling single-threaded
/// OpenBLAS on a slice of the output (rows when there are more rows than columns, else
/// columns). A slice's result is what one call would give for those rows or columns.
public enum BLAS {
    /// One product: C(m, n) = alpha · op(A) · op(B) + beta · C, or with `gemv`, y = C (m rows of
    /// one column) = alpha · A(m, k) · x + beta · y, x = B.
    private struct Gemm {
        var transA: CBLAS_TRANSPOSE, transB: CBLAS_TRANSPOSE
        var m: Int, n: Int, k: Int
        var alpha: Float
        var a: UnsafePointer<Float>, lda: Int
        var b: UnsafePointer<Float>, ldb: Int
        var beta: Float
        var c: UnsafeMutablePointer<Float>, ldc: Int
        var gemv = false
    }

    /// Below this many multiply-adds a call stays on the calling thread.
    static let parallelMinimumWork = 1 << 18

    /// C(m, n) = alpha · op(A) · op(B) + beta · C, row-major.
    public static func sgemm(_ transA: CBLAS_TRANSPOSE, _ transB: CBLAS_TRANSPOSE, m: Int, n: Int, k: Int, alpha: Float,
                             a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        run(Gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc))
    }

    /// y(m) = alpha · A(m, n) · x + beta · y, A row-major: rows of A split across the pool
    /// (sgemv, not sgemm with one row: OpenBLAS 0.3.21 packs all of A for that).
    public static func sgemv(m: Int, n: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>,
                             beta: Float, y: UnsafeMutablePointer<Float>) {
        run(Gemm(transA: CblasNoTrans, transB: CblasNoTrans, m: m, n: 1, k: n, alpha: alpha, a: a, lda: lda, b: x, ldb: 1,
                 beta: beta, c: y, ldc: 1, gemv: true))
    }

    private static func run(_ job: Gemm) {
        guard job.m > 0, job.n > 0 else { return }
        if tsr_threads_get() <= 1 || job.m * job.n * job.k < parallelMinimumWork {
            slice(job, lo: 0, hi: max(job.m, job.n))
            return
        }
        var job = job
        withUnsafeMutablePointer(to: &job) { p in
            tsr_parallel({ ctx, thread, threads in
                guard let job = ctx?.assumingMemoryBound(to: Gemm.self).pointee else { return }
                let total = max(job.m, job.n)
                // Slices of 16 (whole vectors for OpenBLAS's kernels).
                let per = ((total + Int(threads) - 1) / Int(threads) + 15) / 16 * 16
                let lo = per * Int(thread), hi = min(total, lo + per)
                if lo < hi { BLAS.slice(job, lo: lo, hi: hi) }
            }, p)
        }
    }

    /// Rows [lo, hi) of C when m >= n, else columns [lo, hi).
    private static func slice(_ j: Gemm, lo: Int, hi: Int) {
        if j.gemv {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(hi - lo), Int32(j.k), j.alpha, j.a + lo * j.lda, Int32(j.lda), j.b, 1, j.beta, j.c + lo, 1)
        } else if j.m >= j.n {
            let a = j.transA == CblasNoTrans ? j.a + lo * j.lda : j.a + lo
            cblas_sgemm(CblasRowMajor, j.transA, j.transB, Int32(hi - lo), Int32(j.n), Int32(j.k), j.alpha, a, Int32(j.lda),
                        j.b, Int32(j.ldb), j.beta, j.c + lo * j.ldc, Int32(j.ldc))
        } else {
            let b = j.transB == CblasNoTrans ? j.b + lo : j.b + lo * j.ldb
            cblas_sgemm(CblasRowMajor, j.transA, j.transB, Int32(j.m), Int32(hi - lo), Int32(j.k), j.alpha, j.a, Int32(j.lda),
                        b, Int32(j.ldb), j.beta, j.c + lo, Int32(j.ldc))
        }
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
