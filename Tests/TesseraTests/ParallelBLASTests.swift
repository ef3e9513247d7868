import CBLAS
import TesseraKernels
import XCTest
@testable import Tessera

/// `BLAS.sgemm` / `BLAS.sgemv` split OpenBLAS calls across our pool: every transpose case, row
/// and column splits, leading dimensions wider than the matrices, beta 0 and 1, against a
/// double-precision loop.
final class ParallelBLASTests: XCTestCase {
    func testSlicedProductsMatchAPlainProduct() {
        let saved = tsr_threads_get()
        defer { tsr_threads_set(saved) }
        var rng = SplitMix(seed: 42)
        func random(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.unit()) * 2 - 1 } }
        for threads in [Int32(2), 3] {
            tsr_threads_set(threads)
            // (m, n, k): more rows than columns, more columns than rows, one too small to split.
            for (m, n, k) in [(200, 40, 40), (20, 300, 48), (5, 6, 7)] {
                for transA in [CblasNoTrans, CblasTrans] {
                    for transB in [CblasNoTrans, CblasTrans] {
                        for beta: Float in [0, 1] {
                            let lda = (transA == CblasNoTrans ? k : m) + 3, ldb = (transB == CblasNoTrans ? n : k) + 5, ldc = n + 2
                            let a = random((transA == CblasNoTrans ? m : k) * lda), b = random((transB == CblasNoTrans ? k : n) * ldb)
                            var c = random(m * ldc)
                            var expected = c
                            for i in 0..<m {
                                for j in 0..<n {
                                    var s = 0.0
                                    for p in 0..<k {
                                        let av = transA == CblasNoTrans ? a[i * lda + p] : a[p * lda + i]
                                        let bv = transB == CblasNoTrans ? b[p * ldb + j] : b[j * ldb + p]
                                        s += Double(av) * Double(bv)
                                    }
                                    expected[i * ldc + j] = Float(0.5 * s + Double(beta) * Double(c[i * ldc + j]))
                                }
                            }
                            BLAS.sgemm(transA, transB, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: &c, ldc: ldc)
                            let worst = zip(c, expected).map { abs($0 - $1) }.max() ?? 0
                            XCTAssertLessThan(worst, 1e-4, "threads \(threads) m \(m) n \(n) k \(k) transA \(transA) transB \(transB) beta \(beta)")
                        }
                    }
                }
            }
            for (m, n) in [(1000, 300), (9, 4)] {
                let a = random(m * (n + 1)), x = random(n)
                var y = random(m)
                let expected = (0..<m).map { i in Float((0..<n).reduce(0.0) { $0 + Double(a[i * (n + 1) + $1]) * Double(x[$1]) } * 2 + Double(y[i])) }
                BLAS.sgemv(m: m, n: n, alpha: 2, a: a, lda: n + 1, x: x, beta: 1, y: &y)
                XCTAssertLessThan(zip(y, expected).map { abs($0 - $1) }.max() ?? 0, 1e-4, "sgemv threads \(threads) m \(m)")
            }
        }
    }
}
