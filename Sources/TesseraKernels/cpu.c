// CPU feature detection (cpuid), for choosing kernels at start-up and for reports.
#include "tessera_kernels.h"

int tsr_cpu_features(void) {
    int f = 0;
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) f |= TSR_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= TSR_CPU_FMA;
    if (__builtin_cpu_supports("avx512f")) f |= TSR_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512vnni")) f |= TSR_CPU_AVX512VNNI;
    if (__builtin_cpu_supports("f16c")) f |= TSR_CPU_F16C;
    if (__builtin_cpu_supports("avx512vl")) f |= TSR_CPU_AVX512VL;
    if (__builtin_cpu_supports("avx512bw")) f |= TSR_CPU_AVX512BW;
#endif
    return f;
}

#include <sys/mman.h>
#include <stdint.h>

enum { HUGE_PAGE = 2 << 20 };

void *tsr_huge_alloc(int64_t bytes, int64_t *mapped) {
    const int64_t size = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    uint8_t *p = mmap(NULL, (size_t)(size + HUGE_PAGE), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    const uintptr_t a = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (a > (uintptr_t)p) munmap(p, a - (uintptr_t)p);
    const uintptr_t end = (uintptr_t)p + (uintptr_t)(size + HUGE_PAGE);
    if (end > a + (uintptr_t)size) munmap((void *)(a + (uintptr_t)size), end - (a + (uintptr_t)size));
#ifdef MADV_HUGEPAGE
    madvise((void *)a, (size_t)size, MADV_HUGEPAGE);
#endif
    *mapped = size;
    return (void *)a;
}

void tsr_huge_free(void *p, int64_t mapped) { if (p) munmap(p, (size_t)mapped); }
