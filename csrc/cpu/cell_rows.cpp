#include "cell_rows.h"

#include "../nrnm_cell.h"
#include "target_clones.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// Without it GCC keeps the branches of gate_tanh (whose large-|x| side divides, and a division
// may trap) and vectorizes these loops only where AVX-512 masks them: AVX2 ran one unit at a time.
#ifndef __NO_TRAPPING_MATH__
#error "csrc/cpu/cell_rows.cpp must be compiled with -fno-trapping-math (see setup.py)"
#endif
#endif

namespace nrnm {
namespace {

template <typename T>
NRNM_ALWAYS_INLINE void forward_row_impl(int64_t H, const T* __restrict a_in, const T* __restrict a_rec,
                                         const T* __restrict mc, T* __restrict h, T* __restrict c,
                                         T* __restrict gates, T* __restrict cell_out, T* __restrict h_out,
                                         T* __restrict line_out) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    GateActs<T> acts;
    T c_new;
    const T h_new = cell_forward(a_in[j] + a_rec[j], a_in[H + j] + a_rec[H + j], a_in[2 * H + j] + a_rec[2 * H + j],
                                 a_in[3 * H + j] + a_rec[3 * H + j], c[j], mc[j], &acts, &c_new);
    gates[j] = acts.i;
    gates[H + j] = acts.f;
    gates[2 * H + j] = acts.g;
    gates[3 * H + j] = acts.o;
    c[j] = c_new;
    cell_out[j] = c_new;
    h[j] = h_new;
    h_out[j] = h_new;
    line_out[j] = h_new;
  }
}

template <typename T>
NRNM_ALWAYS_INLINE void backward_row_impl(int64_t H, const T* __restrict gates, const T* __restrict c_prev,
                                          const T* __restrict cell, const T* __restrict dh,
                                          const T* __restrict d_out, const T* __restrict d_line, T* __restrict dc,
                                          T* __restrict da, T* __restrict dmc) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const GateActs<T> acts{gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]};
    const CellGrads<T> g = cell_backward(acts, c_prev[j], cell[j], dh[j] + d_out[j] + d_line[j], dc[j]);
    da[j] = g.da_i;
    da[H + j] = g.da_f;
    da[2 * H + j] = g.da_g;
    da[3 * H + j] = g.da_o;
    dc[j] = g.dc_prev;
    dmc[j] = g.dmc;
  }
}

}  // namespace

NRNM_CPU_CLONES void forward_row(int64_t H, const float* a_in, const float* a_rec, const float* mc, float* h,
                                 float* c, float* gates, float* cell_out, float* h_out, float* line_out) {
  forward_row_impl(H, a_in, a_rec, mc, h, c, gates, cell_out, h_out, line_out);
}

void forward_row(int64_t H, const double* a_in, const double* a_rec, const double* mc, double* h, double* c,
                 double* gates, double* cell_out, double* h_out, double* line_out) {
  forward_row_impl(H, a_in, a_rec, mc, h, c, gates, cell_out, h_out, line_out);
}

NRNM_CPU_CLONES void backward_row(int64_t H, const float* gates, const float* c_prev, const float* cell,
                                  const float* dh, const float* d_out, const float* d_line, float* dc, float* da,
                                  float* dmc) {
  backward_row_impl(H, gates, c_prev, cell, dh, d_out, d_line, dc, da, dmc);
}

void backward_row(int64_t H, const double* gates, const double* c_prev, const double* cell, const double* dh,
                  const double* d_out, const double* d_line, double* dc, double* da, double* dmc) {
  backward_row_impl(H, gates, c_prev, cell, dh, d_out, d_line, dc, da, dmc);
}

}  // namespace nrnm
