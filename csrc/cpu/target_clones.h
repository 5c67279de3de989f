// NRNM_CPU_CLONES: a float kernel compiled for AVX-512, AVX2 + FMA and baseline x86-64, the
// best picked at load time; NRNM_CPU_AVX512 (undefined where there are no clones): one for
// AVX-512 alone (GCC on x86-64; elsewhere the compiler's default target).
// Templates and lambdas are not cloned: a cloned function must be a plain one, with the work
// inlined into it (always_inline templates).
#pragma once

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NRNM_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
// A kernel for AVX-512 only, for a caller that checks avx512_kernels_enabled() first.
#define NRNM_CPU_AVX512 __attribute__((target("arch=x86-64-v4")))
#else
#define NRNM_CPU_CLONES
#endif

namespace nrnm {

// Whether the NRNM_CPU_AVX512 kernels run: the CPU has AVX-512 (x86-64-v4) and the environment
// does not set NRNM_DISABLE_AVX512=1, with which the tests run the other kernels (the 32-byte
// vectors of CPUs without AVX-512) on such a CPU. Decided once per process.
inline bool avx512_kernels_enabled() {
#ifdef NRNM_CPU_AVX512
  static const bool enabled = [] {
    const char* off = std::getenv("NRNM_DISABLE_AVX512");
    return __builtin_cpu_supports("x86-64-v4") && !(off && std::strcmp(off, "1") == 0);
  }();
  return enabled;
#else
  return false;
#endif
}

}  // namespace nrnm

#define NRNM_ALWAYS_INLINE __attribute__((always_inline)) inline
