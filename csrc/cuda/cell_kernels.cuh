// Kernels and launchers of csrc/cuda/cell_kernels.h, instantiated per dtype by
// cell_kernels_{fp32,fp64,fp16,bf16}.cu so that each dtype compiles in its own nvcc job.
//
// One thread per unit of one row: blockIdx.y walks the rows, so whether a row is active is
// the same for a whole block and padding costs no divergence. Units of a row are contiguous
// and so are the H units of each gate block, so every load and store is coalesced.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../nrnm_cell.h"
#include "cell_kernels.h"

namespace nrnm::cuda {
namespace detail {

// How T is read into the type its math runs in and written back. Spelled out because torch
// builds with the implicit __half / __nv_bfloat16 conversions and operators switched off;
// the half types compute in float so that their math is the float math of nrnm_cell.h.
template <typename T>
struct Scalar;

template <>
struct Scalar<float> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(float x) { return x; }
  static __device__ __forceinline__ float from_acc(float x) { return x; }
};

template <>
struct Scalar<double> {
  using Acc = double;
  static __device__ __forceinline__ double to_acc(double x) { return x; }
  static __device__ __forceinline__ double from_acc(double x) { return x; }
};

template <>
struct Scalar<__half> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from_acc(float x) { return __float2half_rn(x); }
};

template <>
struct Scalar<__nv_bfloat16> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from_acc(float x) { return __float2bfloat16_rn(x); }
};

// Also the launch bound, which lets ptxas budget registers for full blocks.
constexpr int kMaxThreads = 256;

struct LaunchShape {
  dim3 grid, block;
};

// Blocks of H rounded up to a warp, at most kMaxThreads: a small H would otherwise leave
// most of every block idle. gridDim.y is capped at its hardware limit; the kernels loop
// over the rows beyond it.
inline LaunchShape launch_shape(int64_t B, int64_t H) {
  const int64_t threads = H < kMaxThreads ? (H + 31) / 32 * 32 : kMaxThreads;
  const int64_t rows = B < 65535 ? B : 65535;
  return {dim3(static_cast<unsigned>((H + threads - 1) / threads), static_cast<unsigned>(rows)),
          dim3(static_cast<unsigned>(threads))};
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) step_forward_kernel(const StepForwardParams<T> p) {
  using S = Scalar<T>;
  using A = typename S::Acc;
  const int64_t H = p.H;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= H) return;
  for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
    const int64_t u = b * H + j;             // unit j of row b in the (B, H) arrays
    T* gates = p.gates + 4 * b * H + j;      // its gate i; f, g and o follow H apart
    if (p.t < p.lengths[b]) {
      const T* xw = p.xw + b * p.xw_stride + j;
      const T* rec = p.rec + 4 * b * H + j;
      auto pre = [&](int gate) { return S::to_acc(xw[gate * H]) + S::to_acc(rec[gate * H]); };
      GateActs<A> acts;
      A c_new;
      const T h_new = S::from_acc(cell_forward(pre(0), pre(1), pre(2), pre(3), S::to_acc(p.c[u]),
                                               S::to_acc(p.mc[u]), &acts, &c_new));
      gates[0] = S::from_acc(acts.i);
      gates[H] = S::from_acc(acts.f);
      gates[2 * H] = S::from_acc(acts.g);
      gates[3 * H] = S::from_acc(acts.o);
      p.c[u] = p.cells[u] = S::from_acc(c_new);
      p.h[u] = p.out[u] = p.h_row[u] = h_new;
    } else {
      const T zero = S::from_acc(A(0));
      for (int gate = 0; gate < 4; ++gate) gates[gate * H] = zero;
      p.cells[u] = p.c[u];
      p.h_row[u] = p.h[u];
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) step_backward_kernel(const StepBackwardParams<T> p) {
  using S = Scalar<T>;
  using A = typename S::Acc;
  const int64_t H = p.H;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= H) return;
  for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
    const int64_t u = b * H + j;          // unit j of row b in the (B, H) arrays
    T* da = p.da + b * p.da_stride + j;   // its gate i; f, g and o follow H apart
    if (p.t < p.lengths[b]) {
      const T* gates = p.gates + 4 * b * H + j;
      const GateActs<A> acts{S::to_acc(gates[0]), S::to_acc(gates[H]), S::to_acc(gates[2 * H]),
                             S::to_acc(gates[3 * H])};
      const A dh = S::to_acc(p.dh[u]) + S::to_acc(p.d_out[u]) + S::to_acc(p.d_h_row[u]);
      const CellGrads<A> g =
          cell_backward(acts, S::to_acc(p.c_prev[u]), S::to_acc(p.cells[u]), dh, S::to_acc(p.dc[u]));
      da[0] = S::from_acc(g.da_i);
      da[H] = S::from_acc(g.da_f);
      da[2 * H] = S::from_acc(g.da_g);
      da[3 * H] = S::from_acc(g.da_o);
      p.dc[u] = S::from_acc(g.dc_prev);
      p.dmc[u] = S::from_acc(g.dmc);
    } else {
      const T zero = S::from_acc(A(0));
      for (int gate = 0; gate < 4; ++gate) da[gate * H] = zero;
      p.dmc[u] = zero;
    }
  }
}

}  // namespace detail

// The launchers need nvcc; the kernels above also compile on the host, where
// csrc/test/test_cell_kernels_emulated.cpp runs them one emulated thread at a time.
#if defined(__CUDACC__)
template <typename T>
cudaError_t step_forward(const StepForwardParams<T>& p, cudaStream_t stream) {
  if (p.B == 0 || p.H == 0) return cudaSuccess;  // an empty grid is a launch error
  const detail::LaunchShape s = detail::launch_shape(p.B, p.H);
  detail::step_forward_kernel<T><<<s.grid, s.block, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t step_backward(const StepBackwardParams<T>& p, cudaStream_t stream) {
  if (p.B == 0 || p.H == 0) return cudaSuccess;  // an empty grid is a launch error
  const detail::LaunchShape s = detail::launch_shape(p.B, p.H);
  detail::step_backward_kernel<T><<<s.grid, s.block, 0, stream>>>(p);
  return cudaGetLastError();
}
#endif

}  // namespace nrnm::cuda
