// A small persistent thread pool for Tessera's own kernels (OpenBLAS keeps its own).
// One job at a time: callers are serialised; the calling thread works as thread 0.
#include "tessera_kernels.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>

#define TSR_MAX_THREADS 64

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;   // one job at a time
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static pthread_t workers[TSR_MAX_THREADS];
static int worker_count = 0;          // started workers
static int wanted_threads = 1;         // threads per job, caller included
static _Atomic unsigned long generation = 0;
static _Atomic int pending = 0;
static tsr_task_fn job_fn;
static void *job_ctx;
static int job_threads;

static void *worker_main(void *arg) {
    const int index = (int)(intptr_t)arg;
    unsigned long seen = 0;
    for (;;) {
        // Spin briefly (steps issue jobs back to back), then sleep.
        int spins = 0;
        while (atomic_load_explicit(&generation, memory_order_acquire) == seen && spins < 4000) {
            spins++;
#if defined(__x86_64__)
            __builtin_ia32_pause();
#endif
        }
        pthread_mutex_lock(&lock);
        while (atomic_load_explicit(&generation, memory_order_acquire) == seen) pthread_cond_wait(&start_cv, &lock);
        seen = atomic_load_explicit(&generation, memory_order_acquire);
        tsr_task_fn fn = job_fn;
        void *ctx = job_ctx;
        const int n = job_threads;
        pthread_mutex_unlock(&lock);
        if (index < n) fn(ctx, index, n);
        if (atomic_fetch_sub_explicit(&pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&lock);
            pthread_cond_signal(&done_cv);
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
        if (pthread_create(&workers[worker_count], NULL, worker_main, (void *)(intptr_t)(worker_count + 1)) != 0) break;
        pthread_detach(workers[worker_count]);
        worker_count++;
    }
    wanted_threads = n <= worker_count + 1 ? n : worker_count + 1;
    pthread_mutex_unlock(&run_lock);
}

int tsr_threads_get(void) { return wanted_threads; }

void tsr_parallel(tsr_task_fn fn, void *ctx) {
    pthread_mutex_lock(&run_lock);
    const int n = wanted_threads;
    if (n <= 1 || worker_count == 0) {
        fn(ctx, 0, 1);
        pthread_mutex_unlock(&run_lock);
        return;
    }
    pthread_mutex_lock(&lock);
    job_fn = fn;
    job_ctx = ctx;
    job_threads = n;
    atomic_store_explicit(&pending, worker_count, memory_order_release);
    atomic_fetch_add_explicit(&generation, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&start_cv);
    pthread_mutex_unlock(&lock);
    fn(ctx, 0, n);
    // Wait for the workers (spin first: they finish at about the same time).
    int spins = 0;
    while (atomic_load_explicit(&pending, memory_order_acquire) > 0 && spins < 100000) spins++;
    if (atomic_load_explicit(&pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&lock);
        while (atomic_load_explicit(&pending, memory_order_acquire) > 0) pthread_cond_wait(&done_cv, &lock);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_unlock(&run_lock);
}
