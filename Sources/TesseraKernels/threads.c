// A small persistent thread pool for Tessera's own kernels (OpenBLAS keeps its own).
// One job at a time: callers are serialised; the calling thread works as thread 0.
//
// A job costs two cache-line transfers when the workers are awake: the job line (generation,
// function, context, thread count) that the caller writes and each worker reads, and each
// worker's own done line that the caller reads. Mutex and condition variables are touched only
// by a thread about to sleep (a worker idle for ~0.1 ms, the caller waiting long) and by whoever
// must wake it, with the sleeper announced through a counter checked after the publishing store
// (sequentially consistent on both sides, so no wake-up is lost).
#include "tessera_kernels.h"
#include "simd.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>

#define TSR_MAX_THREADS 64
enum { WORKER_SPINS = 4000, CALLER_SPINS = 20000 };

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;   // one job at a time
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;       // sleeping and waking only
static pthread_cond_t start_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static pthread_t workers[TSR_MAX_THREADS];
static int worker_count = 0;          // started workers
static _Atomic int wanted_threads = 1; // threads per job, caller included

// The job line: written by the caller before the generation's store, read by the workers.
static struct {
    _Alignas(64) _Atomic unsigned long generation;
    tsr_task_fn fn;
    void *ctx;
    int threads;
} job;
// Each worker's last finished generation, on its own line.
static struct { _Alignas(64) _Atomic unsigned long generation; } done[TSR_MAX_THREADS];
static _Alignas(64) _Atomic int sleepers;     // workers asleep (or going to sleep) on start_cv
static _Alignas(64) _Atomic int caller_waits;  // the caller asleep (or going to sleep) on done_cv

static void *worker_main(void *arg) {
    const int index = (int)(intptr_t)arg;
    unsigned long seen = atomic_load(&done[index].generation);
    for (;;) {
        unsigned long g;
        int spins = 0;
        // Spin briefly (steps issue jobs back to back), then sleep.
        while ((g = atomic_load_explicit(&job.generation, memory_order_acquire)) == seen) {
            if (++spins < WORKER_SPINS) { tsr_relax(); continue; }
            pthread_mutex_lock(&lock);
            atomic_fetch_add(&sleepers, 1);
            while ((g = atomic_load(&job.generation)) == seen) pthread_cond_wait(&start_cv, &lock);
            atomic_fetch_sub(&sleepers, 1);
            pthread_mutex_unlock(&lock);
            break;
        }
        seen = g;
        const tsr_task_fn fn = job.fn;
        void *const ctx = job.ctx;
        const int n = job.threads;
        if (index < n) fn(ctx, index, n);
        atomic_store(&done[index].generation, g);
        if (atomic_load(&caller_waits)) {
            pthread_mutex_lock(&lock);
            pthread_cond_broadcast(&done_cv);
            pthread_mutex_unlock(&lock);
        }
    }
    return NULL;
}

void tsr_threads_set(int n) {
    if (n < 1) n = 1;
    if (n > TSR_MAX_THREADS) n = TSR_MAX_THREADS;
    pthread_mutex_lock(&run_lock);
    while (worker_count < n - 1) {
        const int index = worker_count + 1;
        // No job runs while run_lock is held: the new worker starts having seen this generation.
        atomic_store(&done[index].generation, atomic_load(&job.generation));
        if (pthread_create(&workers[worker_count], NULL, worker_main, (void *)(intptr_t)index) != 0) break;
        pthread_detach(workers[worker_count]);
        worker_count++;
    }
    wanted_threads = n <= worker_count + 1 ? n : worker_count + 1;
    pthread_mutex_unlock(&run_lock);
}

int tsr_threads_get(void) { return wanted_threads; }

void tsr_parallel(tsr_task_fn fn, void *ctx) { tsr_parallel_limit(fn, ctx, TSR_MAX_THREADS); }

void tsr_parallel_limit(tsr_task_fn fn, void *ctx, int max_threads) {
    pthread_mutex_lock(&run_lock);
    const int wanted = wanted_threads;
    const int n = wanted < max_threads ? wanted : max_threads;
    if (n <= 1 || worker_count == 0) {
        fn(ctx, 0, 1);
        pthread_mutex_unlock(&run_lock);
        return;
    }
    job.fn = fn;
    job.ctx = ctx;
    job.threads = n;
    const unsigned long g = atomic_fetch_add(&job.generation, 1) + 1;
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&lock);
        pthread_cond_broadcast(&start_cv);
        pthread_mutex_unlock(&lock);
    }
    fn(ctx, 0, n);
    // Every started worker finishes every generation (those past n at once).
    for (int w = 1; w <= worker_count; w++) {
        int spins = 0;
        while (atomic_load_explicit(&done[w].generation, memory_order_acquire) != g) {
            if (++spins < CALLER_SPINS) { tsr_relax(); continue; }
            pthread_mutex_lock(&lock);
            atomic_fetch_add(&caller_waits, 1);
            while (atomic_load(&done[w].generation) != g) pthread_cond_wait(&done_cv, &lock);
            atomic_fetch_sub(&caller_waits, 1);
            pthread_mutex_unlock(&lock);
            break;
        }
    }
    pthread_mutex_unlock(&run_lock);
}
