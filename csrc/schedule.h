// When each batch element updates its memory, and the chunks of steps between updates.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace nrnm {

// Steps t0..t1 (0-based within the call, inclusive) during which no element's memory
// changes; after step t1 the elements in `event` update their memory.
struct Chunk {
  int64_t t0, t1;
  std::vector<int64_t> event;
};

// The chunks of one call. Element b is active at step t < lengths[b], and updates its
// memory after step t when its global step steps0[b] + t + 1 is a multiple of `stride`.
struct Schedule {
  std::vector<Chunk> chunks;

  // Memory updates in the call: chunks that end with one (of any number of elements).
  int64_t updates() const {
    return std::count_if(chunks.begin(), chunks.end(), [](const Chunk& c) { return !c.event.empty(); });
  }

  // Upper bound on the updates of one element in T steps: ceil(T / stride).
  static int64_t max_updates(int64_t T, int64_t stride) { return (T + stride - 1) / stride; }

  // Leading size of the saved `kept` and `memories` (csrc/layer.h LayerSaved): max_updates + 1.
  // memories holds each element's memory before its first update as well; kept's last row stays
  // zero, so that neither size can be 1: tracing a symbolic T, torch.export would guard on T > stride.
  static int64_t saved_update_rows(int64_t T, int64_t stride) { return max_updates(T, stride) + 1; }

  // steps0 (B,) and lengths (B,) are host arrays.
  Schedule(const int64_t* steps0, const int64_t* lengths, int64_t B, int64_t T, int64_t stride) {
    std::vector<int64_t> next(B);
    for (int64_t t = 0; t < T;) {
      int64_t t1 = T - 1;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t phase = (steps0[b] + t + 1) % stride;
        next[b] = t + (phase == 0 ? 0 : stride - phase);  // first step >= t that ends on a multiple
        if (next[b] < lengths[b]) t1 = std::min(t1, next[b]);
      }
      Chunk chunk{t, t1, {}};
      for (int64_t b = 0; b < B; ++b)
        if (next[b] == t1 && t1 < lengths[b]) chunk.event.push_back(b);
      chunks.push_back(std::move(chunk));
      t = t1 + 1;
    }
  }
};

}  // namespace nrnm
