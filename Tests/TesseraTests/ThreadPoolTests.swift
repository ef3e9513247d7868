import Foundation
import TesseraKernels
import XCTest

/// The kernel thread pool (threads.c): every job runs each thread index exactly once, the caller
/// sees every worker's writes when tsr_parallel returns, and no wake-up is lost when workers
/// have gone to sleep between jobs or the caller sleeps waiting for a slow worker.
final class ThreadPoolTests: XCTestCase {
    /// slots[0] = the job number; slots[1 + t] = the job number thread t last saw, and slots[1 +
    /// 64 + t] how many times it ran; slots[130] = milliseconds thread 1 sleeps before writing.
    static let task: tsr_task_fn = { ctx, thread, threads in
        guard let slots = ctx?.assumingMemoryBound(to: Int.self) else { return }
        let t = Int(thread)
        if t == 1, slots[130] > 0 { usleep(UInt32(slots[130] * 1000)) }
        slots[1 + t] = slots[0]
        slots[1 + 64 + t] += 1
        _ = threads
    }

    func run(jobs: Int, threads: Int32, pauseMicroseconds: UInt32 = 0, slowWorkerMilliseconds: Int = 0) {
        let saved = tsr_threads_get()
        defer { tsr_threads_set(saved) }
        tsr_threads_set(threads)
        let n = Int(tsr_threads_get())
        XCTAssertEqual(n, Int(threads))
        let slots = UnsafeMutablePointer<Int>.allocate(capacity: 131)
        defer { slots.deallocate() }
        slots.initialize(repeating: 0, count: 131)
        slots[130] = slowWorkerMilliseconds
        for job in 1...jobs {
            slots[0] = job
            tsr_parallel(Self.task, slots)
            for t in 0..<n {
                let seen = slots[1 + t]
                guard seen == job else { return XCTFail("job \(job): thread \(t) of \(n) had last seen job \(seen)") }
            }
            if pauseMicroseconds > 0 { usleep(pauseMicroseconds) }
        }
        for t in 0..<n { XCTAssertEqual(slots[1 + 64 + t], jobs, "thread \(t) of \(n) ran every job once") }
        for t in n..<64 { XCTAssertEqual(slots[1 + 64 + t], 0, "index \(t) is past the job's \(n) threads") }
    }

    func testBackToBackJobsRunEveryThreadOnce() {
        run(jobs: 20_000, threads: 2)
        run(jobs: 5_000, threads: 3)
        run(jobs: 5_000, threads: 2)  // fewer threads than started workers: the others acknowledge only
        // More threads than any other test asks for, after jobs have run: workers started late
        // must take the next job, not one before it.
        run(jobs: 500, threads: 5)
        run(jobs: 500, threads: 7)
        run(jobs: 1_000, threads: 1)  // the caller alone
    }

    func testLimitCapsTheThreads() {
        let saved = tsr_threads_get()
        defer { tsr_threads_set(saved) }
        tsr_threads_set(4)
        let slots = UnsafeMutablePointer<Int>.allocate(capacity: 131)
        defer { slots.deallocate() }
        slots.initialize(repeating: 0, count: 131)
        slots[0] = 1
        tsr_parallel_limit(Self.task, slots, 2)
        XCTAssertEqual((0..<4).map { slots[1 + 64 + $0] }, [1, 1, 0, 0])
    }

    /// Two callers at once (two compute threads): their jobs are serialised, each complete.
    func testConcurrentCallers() {
        let saved = tsr_threads_get()
        defer { tsr_threads_set(saved) }
        tsr_threads_set(3)
        /// Each caller's count of jobs that came back incomplete (a slot per caller).
        final class Failures: @unchecked Sendable {
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: 2)
            init() { counts.initialize(repeating: 0, count: 2) }
            deinit { counts.deallocate() }
        }
        let done = DispatchGroup()
        let failures = Failures()
        for caller in 0..<2 {
            done.enter()
            Thread.detachNewThread {
                let slots = UnsafeMutablePointer<Int>.allocate(capacity: 131)
                slots.initialize(repeating: 0, count: 131)
                for job in 1...2_000 {
                    slots[0] = job
                    tsr_parallel(Self.task, slots)
                    if (0..<3).contains(where: { slots[1 + $0] != job }) { failures.counts[caller] += 1 }
                }
                slots.deallocate()
                done.leave()
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 120), .success, "both callers finished")
        XCTAssertEqual(failures.counts[0] + failures.counts[1], 0)
    }

    func testJobsAfterTheWorkersFellAsleep() {
        // 2 ms between jobs: longer than a worker spins, so each job must wake it.
        run(jobs: 30, threads: 3, pauseMicroseconds: 2_000)
    }

    func testCallerWaitingLongerThanItSpins() {
        // Thread 1 takes 5 ms: the caller goes to sleep and must be woken.
        run(jobs: 10, threads: 2, slowWorkerMilliseconds: 5)
    }
}
