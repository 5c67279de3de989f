// Per-unit math of one NRNM recurrence step: the LSTM gates with the memory term.
//
// Shared by the CPU loops (csrc/cpu/) and the CUDA kernels, so that the CPU tests
// also cover the formulas the GPU runs. Plain C++ only: no ATen, no CUDA headers.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define NRNM_HD __host__ __device__ __forceinline__
#else
#define NRNM_HD inline __attribute__((always_inline))
#endif

namespace nrnm {

// exp and tanh of the gate math. double (and everything on the GPU) uses the library
// functions; float on the CPU uses branch-free Cephes polynomials (about 1 ulp), because
// compilers vectorize those loops but not loops that call libm.
NRNM_HD double gate_exp(double x) { return exp(x); }
NRNM_HD double gate_tanh(double x) { return tanh(x); }

#if defined(__CUDA_ARCH__)
NRNM_HD float gate_exp(float x) { return expf(x); }
NRNM_HD float gate_tanh(float x) { return tanhf(x); }
#else
// gate_exp(x) is exp(x) for |x| <= 40 and exp(+-40) beyond, where the gates have saturated in
// float (tanh and the sigmoid of x > 40 round to +-1; the sigmoid of x < -40 is under 5e-18,
// and so is its error). The clamp keeps the gate loops clear of subnormal numbers, each of
// which costs a microcode assist: GCC computes the clamped lanes' results, constants, on every
// lane and blends them in. At the former clamp to [-87, 88] one such constant, the sigmoid of
// -88, was itself subnormal (6e-39), so every vector of every step paid: the cell's loop ran
// 2.6x slower on a Xeon, in its AVX-512 and its AVX2 clone alike (docs/cpu.md). (The ctest
// csrc/test/test_layer.cpp checks a float32 layer for subnormal operands and results.)
inline float gate_exp(float x) {
  x = x < -40.f ? -40.f : x;
  x = x > 40.f ? 40.f : x;
  const float shifted = x * 1.44269504088896341f + 12582912.f;  // + 1.5 * 2^23 rounds to an integer
  const float fn = shifted - 12582912.f;
  int32_t shifted_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof(shifted_bits));
  const int32_t n = shifted_bits - 0x4B400000;
  const float r = (x - fn * 0.693359375f) - fn * -2.12194440e-4f;  // x - n ln 2, Cody-Waite
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (n + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float gate_tanh(float x) {
  const float ax = std::fabs(x);
  const float z = ax * ax;  // small |x|: odd polynomial, no cancellation
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * ax + ax;
  const float e = gate_exp(-2.f * ax);  // large |x|: (1 - e) / (1 + e), e = exp(-2|x|)
  const float large = (1.f - e) / (1.f + e);
  return std::copysign(ax < 0.625f ? small : large, x);
}
#endif

template <typename T>
NRNM_HD T sigmoid(T x) {
  return T(1) / (T(1) + gate_exp(-x));
}

// Activations of one unit at one step, as saved for the backward pass.
template <typename T>
struct GateActs {
  T i, f, g, o;  // sigma(a_i), sigma(a_f), tanh(a_g), sigma(a_o)
};

// Forward of one unit: pre-activations a_* (input + recurrent parts, biases included),
// the previous cell c_prev and the memory term mc = ((r * m) @ W_mc^T)[unit].
// Writes the activations to *acts and the new cell to *c; returns the new hidden value.
template <typename T>
NRNM_HD T cell_forward(T a_i, T a_f, T a_g, T a_o, T c_prev, T mc, GateActs<T>* acts, T* c) {
  acts->i = sigmoid(a_i);
  acts->f = sigmoid(a_f);
  acts->g = gate_tanh(a_g);
  acts->o = sigmoid(a_o);
  *c = acts->f * c_prev + acts->i * acts->g + mc;
  return acts->o * gate_tanh(*c);
}

// Gradients of one unit's step with respect to its inputs.
template <typename T>
struct CellGrads {
  T da_i, da_f, da_g, da_o;  // w.r.t. the pre-activations
  T dc_prev;                 // w.r.t. the previous cell
  T dmc;                     // w.r.t. the memory term
};

// Backward of one unit: the saved activations, c_prev and the new cell c, the total
// gradient dh reaching the new hidden value and dc reaching the new cell from later steps.
template <typename T>
NRNM_HD CellGrads<T> cell_backward(const GateActs<T>& a, T c_prev, T c, T dh, T dc) {
  const T tc = gate_tanh(c);
  const T dc_total = dc + dh * a.o * (T(1) - tc * tc);
  CellGrads<T> g;
  g.da_o = dh * tc * a.o * (T(1) - a.o);
  g.da_i = dc_total * a.g * a.i * (T(1) - a.i);
  g.da_f = dc_total * c_prev * a.f * (T(1) - a.f);
  g.da_g = dc_total * a.i * (T(1) - a.g * a.g);
  g.dc_prev = dc_total * a.f;
  g.dmc = dc_total;
  return g;
}

}  // namespace nrnm
