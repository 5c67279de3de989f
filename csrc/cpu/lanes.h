// Lanes<T>: 32 bytes of T as one GCC vector (an AVX2 register; two SSE ones on the baseline
// clone), for loops GCC leaves scalar when written on arrays.
#pragma once

#include <cstdint>

namespace nrnm {

template <typename T>
struct Lanes {
  typedef T type __attribute__((vector_size(32)));
  // The same at any address of a T, read or written in place.
  typedef T unaligned __attribute__((vector_size(32), aligned(sizeof(T)), may_alias));
  static constexpr int64_t kCount = 32 / sizeof(T);
  static const unaligned& at(const T* p) { return *reinterpret_cast<const unaligned*>(p); }
  static unaligned& at(T* p) { return *reinterpret_cast<unaligned*>(p); }
};

}  // namespace nrnm
