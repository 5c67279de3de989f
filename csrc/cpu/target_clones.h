// NRNM_CPU_CLONES: a float kernel compiled for AVX-512, AVX2 + FMA and baseline x86-64, the
// best picked at load time; NRNM_CPU_AVX512 (undefined where there are no clones): one for
// AVX-512 alone (GCC on x86-64; elsewhere the compiler's default target).
// Templates and lambdas are not cloned: a cloned function must be a plain one, with the work
// inlined into it (always_inline templates).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NRNM_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
// A kernel for AVX-512 only, for a caller that checks __builtin_cpu_supports("x86-64-v4") first.
#define NRNM_CPU_AVX512 __attribute__((target("arch=x86-64-v4")))
#else
#define NRNM_CPU_CLONES
#endif

#define NRNM_ALWAYS_INLINE __attribute__((always_inline)) inline
