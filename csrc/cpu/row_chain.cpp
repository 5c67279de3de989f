#include "row_chain.h"

#include <ATen/Dispatch.h>

#include <cmath>

#include "loop_matmul.h"
#include "target_clones.h"

namespace nrnm {
namespace {

// x (R, H) += r (R, H) (unless r is null), then each row through the LayerNorm with weight w,
// bias b: into y, its mean and 1 / sqrt(var + eps) into mean, rstd (R,).
template <typename T>
NRNM_ALWAYS_INLINE void add_layer_norm_impl(int64_t R, int64_t H, T* __restrict x, const T* __restrict r,
                                            const T* __restrict w, const T* __restrict b, T* __restrict y,
                                            T* __restrict mean, T* __restrict rstd) {
  for (int64_t i = 0; i < R; ++i) {
    T* xi = x + i * H;
    T sum = 0;
    if (r) {
      const T* ri = r + i * H;
#pragma omp simd reduction(+ : sum)
      for (int64_t d = 0; d < H; ++d) {
        xi[d] += ri[d];
        sum += xi[d];
      }
    } else {
#pragma omp simd reduction(+ : sum)
      for (int64_t d = 0; d < H; ++d) sum += xi[d];
    }
    const T mu = sum / static_cast<T>(H);
    T var = 0;
#pragma omp simd reduction(+ : var)
    for (int64_t d = 0; d < H; ++d) var += (xi[d] - mu) * (xi[d] - mu);
    const T rs = T(1) / std::sqrt(var / static_cast<T>(H) + static_cast<T>(kLayerNormEps));
    T* yi = y + i * H;
#pragma omp simd
    for (int64_t d = 0; d < H; ++d) yi[d] = (xi[d] - mu) * rs * w[d] + b[d];
    mean[i] = mu;
    rstd[i] = rs;
  }
}

// The LayerNorm's backward: dx (R, H) from dy (R, H), its input x (R, H) and statistics;
// adds sum_i dy_i * xhat_i to dw and sum_i dy_i to db (H,).
template <typename T>
NRNM_ALWAYS_INLINE void layer_norm_backward_impl(int64_t R, int64_t H, const T* __restrict dy, const T* __restrict x,
                                                 const T* __restrict mean, const T* __restrict rstd,
                                                 const T* __restrict w, T* __restrict dx, T* __restrict dw,
                                                 T* __restrict db) {
  for (int64_t i = 0; i < R; ++i) {
    const T* dyi = dy + i * H;
    const T* xi = x + i * H;
    const T mu = mean[i], rs = rstd[i];
    T g_sum = 0, gx_sum = 0;
#pragma omp simd reduction(+ : g_sum, gx_sum)
    for (int64_t d = 0; d < H; ++d) {
      const T xhat = (xi[d] - mu) * rs, g = dyi[d] * w[d];
      g_sum += g;
      gx_sum += g * xhat;
      dw[d] += dyi[d] * xhat;
      db[d] += dyi[d];
    }
    const T g_mean = g_sum / static_cast<T>(H), gx_mean = gx_sum / static_cast<T>(H);
    T* dxi = dx + i * H;
#pragma omp simd
    for (int64_t d = 0; d < H; ++d) dxi[d] = rs * (dyi[d] * w[d] - g_mean - (xi[d] - mu) * rs * gx_mean);
  }
}

NRNM_CPU_CLONES void add_layer_norm(int64_t R, int64_t H, float* x, const float* r, const float* w, const float* b,
                                    float* y, float* mean, float* rstd) {
  add_layer_norm_impl(R, H, x, r, w, b, y, mean, rstd);
}

void add_layer_norm(int64_t R, int64_t H, double* x, const double* r, const double* w, const double* b, double* y,
                    double* mean, double* rstd) {
  add_layer_norm_impl(R, H, x, r, w, b, y, mean, rstd);
}

NRNM_CPU_CLONES void layer_norm_backward(int64_t R, int64_t H, const float* dy, const float* x, const float* mean,
                                         const float* rstd, const float* w, float* dx, float* dw, float* db) {
  layer_norm_backward_impl(R, H, dy, x, mean, rstd, w, dx, dw, db);
}

void layer_norm_backward(int64_t R, int64_t H, const double* dy, const double* x, const double* mean,
                         const double* rstd, const double* w, double* dx, double* dw, double* db) {
  layer_norm_backward_impl(R, H, dy, x, mean, rstd, w, dx, dw, db);
}

template <typename T>
T* ptr(const at::Tensor& t) {
  return t.data_ptr<T>();
}

void check_contiguous(const char* what, std::initializer_list<const at::Tensor*> ts) {
  for (const at::Tensor* t : ts)
    TORCH_CHECK(t->is_contiguous(), "nrnm_fast: ", what, " takes contiguous rows, got strides ", t->strides(),
                " for sizes ", t->sizes());
}

}  // namespace

void row_chain_forward(const at::Tensor& attn, const at::Tensor& memory_rows, const RowChainWeights& w,
                       RowChain& out) {
  check_contiguous("row_chain_forward", {&attn, &memory_rows, &w.ln1_w, &w.ln1_b, &w.ln2_w, &w.ln2_b});
  const int64_t R = attn.size(0), H = attn.size(1), F = w.b_1.size(0);
  const at::TensorOptions opts = attn.options();
  for (at::Tensor* t : {&out.y1_in, &out.y1, &out.y2_in, &out.mt}) out_tensor(*t, {R, H}, opts);
  out_tensor(out.hid, {R, F}, opts);
  for (at::Tensor* t : {&out.mean1, &out.rstd1, &out.mean2, &out.rstd2}) out_tensor(*t, {R, 1}, opts);
  AT_DISPATCH_FLOATING_TYPES(attn.scalar_type(), "nrnm_row_chain_forward", [&] {
    using T = scalar_t;
    cpu_loop_matmul(attn, w.w_o, w.b_o, out.y1_in);
    add_layer_norm(R, H, ptr<T>(out.y1_in), ptr<T>(memory_rows), ptr<T>(w.ln1_w), ptr<T>(w.ln1_b), ptr<T>(out.y1),
                   ptr<T>(out.mean1), ptr<T>(out.rstd1));
    cpu_loop_matmul(out.y1, w.w_1, w.b_1, out.hid);
    T* hid = ptr<T>(out.hid);
    for (int64_t i = 0; i < R * F; ++i) hid[i] = hid[i] > T(0) ? hid[i] : T(0);
    cpu_loop_matmul(out.hid, w.w_2, w.b_2, out.y2_in);
    add_layer_norm(R, H, ptr<T>(out.y2_in), ptr<T>(out.y1), ptr<T>(w.ln2_w), ptr<T>(w.ln2_b), ptr<T>(out.mt),
                   ptr<T>(out.mean2), ptr<T>(out.rstd2));
  });
}

void row_chain_norms(RowChain& c, const RowChainWeights& w) {
  check_contiguous("row_chain_norms", {&c.y1_in, &c.y2_in, &w.ln1_w, &w.ln1_b, &w.ln2_w, &w.ln2_b});
  const int64_t R = c.y1_in.size(0), H = c.y1_in.size(1);
  const at::TensorOptions opts = c.y1_in.options();
  for (at::Tensor* t : {&c.y1, &c.mt}) out_tensor(*t, {R, H}, opts);
  for (at::Tensor* t : {&c.mean1, &c.rstd1, &c.mean2, &c.rstd2}) out_tensor(*t, {R, 1}, opts);
  AT_DISPATCH_FLOATING_TYPES(c.y1_in.scalar_type(), "nrnm_row_chain_norms", [&] {
    using T = scalar_t;
    // with r null, y1_in and y2_in are only read
    add_layer_norm(R, H, ptr<T>(c.y1_in), nullptr, ptr<T>(w.ln1_w), ptr<T>(w.ln1_b), ptr<T>(c.y1),
                   ptr<T>(c.mean1), ptr<T>(c.rstd1));
    add_layer_norm(R, H, ptr<T>(c.y2_in), nullptr, ptr<T>(w.ln2_w), ptr<T>(w.ln2_b), ptr<T>(c.mt),
                   ptr<T>(c.mean2), ptr<T>(c.rstd2));
  });
}

void row_chain_backward(const RowChain& f, const at::Tensor& d_mt, const RowChainWeights& w, RowChainGrads& grads) {
  check_contiguous("row_chain_backward", {&d_mt, &f.y1_in, &f.y2_in, &f.hid, &w.ln1_w, &w.ln2_w, &grads.ln1_w,
                                          &grads.ln1_b, &grads.ln2_w, &grads.ln2_b});
  const int64_t R = d_mt.size(0), H = d_mt.size(1), F = f.hid.size(1);
  const at::TensorOptions opts = d_mt.options();
  for (at::Tensor* t : {&grads.d_y2_in, &grads.d_y1_in, &grads.d_attn}) out_tensor(*t, {R, H}, opts);
  out_tensor(grads.d_hid, {R, F}, opts);
  const at::Tensor& d_y1 = grads.d_attn;  // d_attn's storage until d_attn is written, last
  AT_DISPATCH_FLOATING_TYPES(d_mt.scalar_type(), "nrnm_row_chain_backward", [&] {
    using T = scalar_t;
    layer_norm_backward(R, H, ptr<T>(d_mt), ptr<T>(f.y2_in), ptr<T>(f.mean2), ptr<T>(f.rstd2), ptr<T>(w.ln2_w),
                        ptr<T>(grads.d_y2_in), ptr<T>(grads.ln2_w), ptr<T>(grads.ln2_b));
    cpu_loop_matmul(grads.d_y2_in, w.w_2, at::Tensor(), grads.d_hid);
    T* d_hid = ptr<T>(grads.d_hid);
    const T* hid = ptr<T>(f.hid);
    for (int64_t i = 0; i < R * F; ++i) d_hid[i] = hid[i] > T(0) ? d_hid[i] : T(0);
    cpu_loop_matmul(grads.d_hid, w.w_1, at::Tensor(), d_y1);
    T* dy1 = ptr<T>(d_y1);
    const T* dy2 = ptr<T>(grads.d_y2_in);
    for (int64_t i = 0; i < R * H; ++i) dy1[i] += dy2[i];
    layer_norm_backward(R, H, dy1, ptr<T>(f.y1_in), ptr<T>(f.mean1), ptr<T>(f.rstd1), ptr<T>(w.ln1_w),
                        ptr<T>(grads.d_y1_in), ptr<T>(grads.ln1_w), ptr<T>(grads.ln1_b));
    cpu_loop_matmul(grads.d_y1_in, w.w_o, at::Tensor(), grads.d_attn);
  });
}

}  // namespace nrnm
