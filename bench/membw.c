/* membw: this machine's memory read bandwidth, one thread and N threads.
 *
 *   bench/membw.sh [--threads 1,2] [--size-mib 1024] [--passes 5] [--json]
 *   cc -O3 -mavx2 -pthread bench/membw.c -o .build/membw     (x86 with AVX2)
 *   cc -O3 -pthread bench/membw.c -o .build/membw            (anything else: plain C)
 *
 * Fills a buffer of floats (1 GiB, or 512 MiB when MemAvailable is short; --size-mib
 * overrides) with 1.0f, then for each thread count T sums the whole buffer once untimed
 * (warm-up) and P times timed (default 5). Each of the T threads sums its own contiguous
 * 1/T of the buffer with 8 independent accumulators (AVX2: 8 x 256-bit loads + adds per
 * 64 floats); a pass is timed from the first thread's start (after a barrier releases
 * them all) to the last thread's end. GB/s = buffer bytes / pass seconds / 1e9; the reported figure is the median pass.
 * Every pass's sum is checked against the element count (exact: no accumulator lane adds
 * more than 2^24 ones).
 *
 * Output: human-readable lines (the CPU model from /proc/cpuinfo, the buffer, one line per
 * thread count: median, min, max). With --json, those lines go to stderr and stdout gets
 * exactly one JSON object:
 *   {"cpu": "AMD EPYC ...", "threads": {"1": 12.3, "2": 20.4},
 *    "buffer_mib": 1024, "passes": 5, "simd": "avx2"}
 * Exit status 0 on success, 1 on a failed check or allocation, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__AVX2__)
#include <immintrin.h>
#define SIMD_NAME "avx2"
#else
#define SIMD_NAME "scalar"
#endif

#define MAX_THREADS 256
#define MAX_COUNTS 32
#define CHUNK 64 /* floats per inner step: 8 x 8 floats = 256 bytes */

static float *g_buf;
static size_t g_n;           /* floats in the buffer (multiple of CHUNK) */
static int g_threads;        /* threads in the current measurement */
static int g_passes;         /* timed passes (+1 warm-up) */
static pthread_barrier_t g_start, g_done;
static double g_partial[MAX_THREADS];
static double g_t_start[MAX_THREADS], g_t_end[MAX_THREADS]; /* per thread, per pass */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Sum n floats (n a multiple of CHUNK, p 32-byte aligned). */
static double sum_floats(const float *p, size_t n) {
#if defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < n; i += CHUNK) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
        a4 = _mm256_add_ps(a4, _mm256_load_ps(p + i + 32));
        a5 = _mm256_add_ps(a5, _mm256_load_ps(p + i + 40));
        a6 = _mm256_add_ps(a6, _mm256_load_ps(p + i + 48));
        a7 = _mm256_add_ps(a7, _mm256_load_ps(p + i + 56));
    }
    __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    float lanes[8];
    double s = 0.0;
    for (int k = 0; k < 8; k++) {
        _mm256_storeu_ps(lanes, acc[k]);
        for (int j = 0; j < 8; j++) s += (double)lanes[j];
    }
    return s;
#else
    float a[CHUNK];
    for (int j = 0; j < CHUNK; j++) a[j] = 0.0f;
    for (size_t i = 0; i < n; i += CHUNK)
        for (int j = 0; j < CHUNK; j++) a[j] += p[i + j];
    double s = 0.0;
    for (int j = 0; j < CHUNK; j++) s += (double)a[j];
    return s;
#endif
}

/* Thread t's slice: whole CHUNKs, the last thread takes the remainder. */
static void slice(int t, int nt, size_t *off, size_t *len) {
    size_t chunks = g_n / CHUNK, per = chunks / (size_t)nt;
    *off = (size_t)t * per * CHUNK;
    *len = (t == nt - 1 ? chunks - (size_t)t * per : per) * CHUNK;
}

static void *fill_worker(void *arg) {
    int t = (int)(intptr_t)arg;
    size_t off, len;
    slice(t, g_threads, &off, &len);
    for (size_t i = 0; i < len; i++) g_buf[off + i] = 1.0f; /* first touch by the reader */
    return NULL;
}

static void *sum_worker(void *arg) {
    int t = (int)(intptr_t)arg;
    size_t off, len;
    slice(t, g_threads, &off, &len);
    for (int pass = 0; pass <= g_passes; pass++) {
        pthread_barrier_wait(&g_start);
        g_t_start[t] = now_s();
        g_partial[t] = sum_floats(g_buf + off, len);
        g_t_end[t] = now_s();
        pthread_barrier_wait(&g_done);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void cpu_model(char *out, size_t cap) {
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        /* x86: "model name"; some ARM kernels: "Processor" / "Hardware"; POWER: "cpu" */
        if (strncmp(line, "model name", 10) == 0 || strncmp(line, "Processor", 9) == 0 ||
            strncmp(line, "Hardware", 8) == 0 || strncmp(line, "cpu\t", 4) == 0) {
            char *v = strchr(line, ':');
            if (!v) continue;
            v++;
            while (*v == ' ' || *v == '\t') v++;
            size_t n = strcspn(v, "\r\n");
            while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
            if (n == 0) continue;
            snprintf(out, cap, "%.*s", (int)n, v);
            break;
        }
    }
    fclose(f);
}

static long long mem_available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void usage(FILE *f) {
    fprintf(f, "usage: membw [--threads 1,2] [--size-mib MiB] [--passes P] [--json]\n"
               "  --threads   comma-separated thread counts (default: 1 and the online CPU count)\n"
               "  --size-mib  buffer size (default 1024, or 512 when MemAvailable < 1.5 GiB)\n"
               "  --passes    timed passes per thread count, median reported (default 5)\n"
               "  --json      human lines to stderr, one JSON object to stdout\n");
}

int main(int argc, char **argv) {
    int counts[MAX_COUNTS], ncounts = 0, json = 0;
    long size_mib = 0;
    g_passes = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "--threads") || !strcmp(a, "--size-mib") || !strcmp(a, "--passes")) && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(a, "--threads")) {
                ncounts = 0;
                char *end;
                const char *p = v;
                for (;;) {
                    long t = strtol(p, &end, 10);
                    if (end == p || t < 1 || t > MAX_THREADS || ncounts == MAX_COUNTS) {
                        fprintf(stderr, "membw: bad --threads %s (1..%d, at most %d values)\n", v, MAX_THREADS, MAX_COUNTS);
                        return 2;
                    }
                    counts[ncounts++] = (int)t;
                    if (*end == '\0') break;
                    if (*end != ',') { fprintf(stderr, "membw: bad --threads %s\n", v); return 2; }
                    p = end + 1;
                }
            } else {
                char *end;
                long x = strtol(v, &end, 10);
                if (*end != '\0' || x < 1 || x > (1L << 20)) { fprintf(stderr, "membw: bad %s %s\n", a, v); return 2; }
                if (!strcmp(a, "--size-mib")) size_mib = x; else g_passes = (int)x;
            }
        } else {
            fprintf(stderr, "membw: unknown argument %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncounts == 0) {
        counts[ncounts++] = 1;
        if (ncpu > 1) counts[ncounts++] = (int)(ncpu < MAX_THREADS ? ncpu : MAX_THREADS);
    }
    if (size_mib == 0) {
        long long avail = mem_available_bytes();
        /* 1 GiB when there is room for it plus 512 MiB to spare, else 512 MiB */
        size_mib = (avail < 0 || avail >= (1536LL << 20)) ? 1024 : 512;
    }

    FILE *h = json ? stderr : stdout;
    char cpu[256];
    cpu_model(cpu, sizeof cpu);

    size_t bytes = (size_t)size_mib << 20;
    g_n = bytes / sizeof(float) / CHUNK * CHUNK;
    bytes = g_n * sizeof(float);
    g_buf = aligned_alloc(2u << 20, (bytes + (2u << 20) - 1) / (2u << 20) * (2u << 20));
    if (!g_buf) {
        fprintf(stderr, "membw: cannot allocate %ld MiB: %s\n", size_mib, strerror(errno));
        return 1;
    }

    fprintf(h, "cpu: %s (%ld online)\n", cpu, ncpu);
    fprintf(h, "buffer: %ld MiB of float, %s loads, %d timed passes per thread count (+1 warm-up); GB = 1e9 bytes\n",
            size_mib, SIMD_NAME, g_passes);

    /* first touch spread over the largest thread count's slices */
    int maxt = 1;
    for (int c = 0; c < ncounts; c++) if (counts[c] > maxt) maxt = counts[c];
    pthread_t th[MAX_THREADS];
    g_threads = maxt;
    for (int t = 0; t < maxt; t++) pthread_create(&th[t], NULL, fill_worker, (void *)(intptr_t)t);
    for (int t = 0; t < maxt; t++) pthread_join(th[t], NULL);

    double median[MAX_COUNTS];
    double *gbps = malloc(sizeof(double) * (size_t)g_passes);
    int failed = 0;
    for (int c = 0; c < ncounts; c++) {
        int nt = counts[c];
        if (nt > ncpu) fprintf(h, "note: %d threads on %ld online CPUs\n", nt, ncpu);
        g_threads = nt;
        pthread_barrier_init(&g_start, NULL, (unsigned)nt + 1);
        pthread_barrier_init(&g_done, NULL, (unsigned)nt + 1);
        for (int t = 0; t < nt; t++) {
            int rc = pthread_create(&th[t], NULL, sum_worker, (void *)(intptr_t)t);
            if (rc) { fprintf(stderr, "membw: pthread_create: %s\n", strerror(rc)); return 1; }
        }
        for (int pass = 0; pass <= g_passes; pass++) {
            pthread_barrier_wait(&g_start);
            pthread_barrier_wait(&g_done);
            /* first thread's start to last thread's end (the workers' own clocks: the main
             * thread may wake late from a barrier, e.g. with more threads than CPUs) */
            double t0 = g_t_start[0], t1 = g_t_end[0], s = 0.0;
            for (int t = 0; t < nt; t++) {
                if (g_t_start[t] < t0) t0 = g_t_start[t];
                if (g_t_end[t] > t1) t1 = g_t_end[t];
                s += g_partial[t];
            }
            double dt = t1 - t0;
            if (s != (double)g_n) {
                fprintf(stderr, "membw: check failed: sum %.1f, want %zu\n", s, g_n);
                failed = 1;
            }
            if (pass > 0) gbps[pass - 1] = (double)bytes / dt / 1e9; /* pass 0: warm-up */
        }
        for (int t = 0; t < nt; t++) pthread_join(th[t], NULL);
        pthread_barrier_destroy(&g_start);
        pthread_barrier_destroy(&g_done);
        qsort(gbps, (size_t)g_passes, sizeof(double), cmp_double);
        median[c] = g_passes % 2 ? gbps[g_passes / 2] : 0.5 * (gbps[g_passes / 2 - 1] + gbps[g_passes / 2]);
        fprintf(h, "threads %d: %.2f GB/s (median of %d; min %.2f, max %.2f)\n", nt, median[c], g_passes, gbps[0],
                gbps[g_passes - 1]);
        fflush(h);
    }

    if (json) {
        printf("{\"cpu\": ");
        json_string(stdout, cpu);
        printf(", \"threads\": {");
        for (int c = 0; c < ncounts; c++) printf("%s\"%d\": %.2f", c ? ", " : "", counts[c], median[c]);
        printf("}, \"buffer_mib\": %ld, \"passes\": %d, \"simd\": \"%s\"}\n", size_mib, g_passes, SIMD_NAME);
    }
    free(gbps);
    free(g_buf);
    return failed;
}
