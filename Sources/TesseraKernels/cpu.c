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
