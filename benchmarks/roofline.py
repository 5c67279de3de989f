"""A prediction of the CUDA path's time on an H100 at the registered shapes, to judge the first GPU run by.

    python -m benchmarks.roofline

The forward of one layer is the sequence of kernels csrc/layer.cpp launches (docs/gpu.md):
hoisted GEMMs once; per step a recurrent GEMM and the fused step kernel; per chunk of s steps
the memory-term GEMM and a few element-wise ops; per memory update about 32 small ATen
ops and one Triton launch that goes through Python. Each kernel takes at least a launch
latency on the GPU, or its roofline time (FLOPs over peak, bytes over bandwidth) if longer;
the host must issue every launch, at a cost per ATen op. The predicted time is the larger of
the GPU's sum and the host's sum (they overlap: launches are asynchronous).

All constants are assumptions, stated here; the point is the order of magnitude and which
term dominates, not the third digit.
"""

from __future__ import annotations

from typing import NamedTuple

from benchmarks.shapes import MEMORY, SHAPES, Shape

# H100 SXM, float32 without TF32 (torch's default for matmul), HBM3.
PEAK_FLOPS = 67e12
BANDWIDTH = 3.35e12
BYTES = 4  # float32
KERNEL_MIN_S = 3e-6  # the shortest a launched kernel takes on the GPU
HOST_PER_OP_S = 6e-6  # ATen dispatch and launch of one op from C++
HOST_TRITON_S = 30e-6  # one Triton launch through the dispatcher into Python (the GIL, argument binding)
# ATen ops per memory update besides the Triton launch, counted in csrc/layer.cpp and
# csrc/memory_update.cpp (index_select / index_copy of the memory, the qkv GEMM, output projection
# and residual, two LayerNorms, the MLP, the block mean, the gates and the new memory), and per chunk
# (memory gate, memory term GEMM, keys / values GEMM). The loop has no host-to-device copy.
OPS_PER_UPDATE = 32
OPS_PER_CHUNK = 5


class Kernel(NamedTuple):
    flops: float
    bytes: float

    def gpu_s(self) -> float:
        return max(KERNEL_MIN_S, self.flops / PEAK_FLOPS, self.bytes / BANDWIDTH)


def gemm(m: int, n: int, k: int) -> Kernel:
    return Kernel(2.0 * m * n * k, BYTES * (m * k + k * n + m * n))


class Prediction(NamedTuple):
    shape: Shape
    flops: float  # forward, whole sequence
    bytes: float
    gpu_s: float
    host_s: float

    @property
    def predicted_s(self) -> float:
        return max(self.gpu_s, self.host_s)


def forward_prediction(shape: Shape, block_size: int = MEMORY["block_size"], stride: int = MEMORY["stride"],
                       num_slots: int = MEMORY["num_slots"]) -> Prediction:
    T, B, D, H = shape
    N, k, s = num_slots, block_size, stride
    NH, G = N * H, (5 + N) * H
    updates = -(-T // s)
    once = [gemm(T * B, G, D), gemm((k + T) * B, 2 * H, H)]  # input GEMM, keys / values of the embeddings
    per_step = [gemm(B, 4 * H, H), Kernel(20.0 * B * H, BYTES * 20 * B * H)]
    per_chunk = [gemm(s * B, H, NH), gemm(s * B, 2 * H, H), Kernel(4.0 * s * B * NH, BYTES * 3 * s * B * NH)]
    rows = B * N  # every element updates at once when the phases agree (the benchmark's case)
    per_update = [gemm(rows, 3 * H, H), gemm(rows, H, H), gemm(rows, H, H), gemm(rows, H, H),  # qkv, out, MLP
                  gemm(rows, 2 * H, H), gemm(B, 2 * H, H), gemm(B, NH, NH),  # gates, m @ W_mr^T
                  Kernel(4.0 * rows * (N + 2 * k) * H, BYTES * B * 2 * k * 2 * H)]  # the attention
    kernels = once + per_step * T + per_chunk * updates + per_update * updates
    gpu = sum(kn.gpu_s() for kn in kernels) + (OPS_PER_UPDATE - len(per_update) + 1) * KERNEL_MIN_S * updates
    host = HOST_PER_OP_S * (len(once) + 2 * T + OPS_PER_CHUNK * updates + OPS_PER_UPDATE * updates) \
        + HOST_TRITON_S * updates
    return Prediction(shape, sum(kn.flops for kn in kernels), sum(kn.bytes for kn in kernels), gpu, host)


def table() -> str:
    lines = ["| shape | MFLOP / step | MB / step | roofline ms | GPU ms (with launch minimum) | host ms "
             "| predicted fwd ms | predicted fwd+bwd ms |",
             "|---|---|---|---|---|---|---|---|"]
    for shape in SHAPES:
        p = forward_prediction(shape)
        roof = max(p.flops / PEAK_FLOPS, p.bytes / BANDWIDTH)
        # The backward mirrors the forward with about twice the kernels and FLOPs.
        lines.append(f"| {shape.name} | {p.flops / shape.T / 1e6:.1f} | {p.bytes / shape.T / 1e6:.2f} | {roof * 1e3:.3f} | "
                     f"{p.gpu_s * 1e3:.1f} | {p.host_s * 1e3:.1f} | {p.predicted_s * 1e3:.1f} | "
                     f"{3 * p.predicted_s * 1e3:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
