"""Multiply-adds of one benchmarked layer call, per implementation: the speed table's GFLOP/s
and its arithmetic ratio to nn.LSTM come from these counts.

The benchmark's call: one layer, time-major input x (T, B, D) that needs no gradient, the zero
initial state, no lengths; "fwd+bwd" backpropagates the output. Counted are the matrix products
(GEMMs, and the attention's products of queries with block rows); element-wise work,
LayerNorms and softmaxes are not. A multiply-add is two FLOPs.

- ``nn.LSTM``: 4H (D + H) per step and element; its backward (oneDNN's) twice that: it computes
  the input's gradient whether or not it is needed (a T128-B64-H512 fwd+bwd is no faster without).
- The fast paths (``nrnm-cpu``, ``nrnm-cuda``: one orchestration, csrc/layer.cpp): the algorithm of
  docs/cpu.md, "Where the time goes": input products hoisted, attention for the N memory query
  rows over the block's valid rows with the key and value projections folded, and a backward that
  recomputes each memory update's queries and attention (the forward keeps every step's memory gate
  r and the outputs of the updates' other products).
- ``nrnm-reference``: its transcription of the spec: m W_mr^T every step, full self-attention over
  the N + 2k rows of every block; autograd's backward, which skips the products of what needs no
  gradient (x, and the zero initial h and M).
"""

from __future__ import annotations

from benchmarks.shapes import LSTM, MEMORY, Shape

FAST = ("nrnm-cpu", "nrnm-cuda")
REFERENCE = "nrnm-reference"


def lstm_multiply_adds(shape: Shape, backward: bool) -> int:
    T, B, D, H = shape
    forward = T * B * 4 * H * (D + H)
    return forward * (3 if backward else 1)


def _memory_update_products(B: int, H: int, N: int, F: int, nh: int, rows: int) -> tuple[int, int]:
    """The fast path's products of one memory update of B elements whose blocks hold `rows`
    (N memory rows and 2w time-line rows): all of them (queries, their folded keys, the
    attention's scores and mixing, values, output projection, MLP, both gate products; m W_mr^T
    counted apart), and those the backward computes again (queries, folded keys, attention)."""
    queries_attention = 2 * N * H * H + 2 * nh * N * rows * H
    rest = 2 * N * H * H + 2 * N * H * F + 2 * N * H * H + 2 * H * H
    return B * (queries_attention + rest), B * queries_attention


def fast_multiply_adds(shape: Shape, backward: bool, memory: dict = MEMORY) -> int:
    T, B, D, H = shape
    k, s, N, nh = memory["block_size"], memory["stride"], memory["num_slots"], memory["num_heads"]
    F, NH = memory.get("mlp_size", H), memory["num_slots"] * H
    G = 4 * H + NH + H  # the hoisted input weight's rows: gates, memory gate, embedding
    updates = [min(k, tau) for tau in range(s, T + 1, s)]  # each update's valid block rows w
    products = [_memory_update_products(B, H, N, F, nh, N + 2 * w) for w in updates]
    per_update, recomputed = sum(p for p, _ in products), sum(r for _, r in products)
    mr = B * NH * NH  # m W_mr^T, once for the initial memory and after each update

    forward = T * B * (G * D + 4 * H * H + NH * H) + per_update + (len(updates) + 1) * mr
    if not backward:
        return forward
    # Per step: dh W_hh and W_hh's gradient; the hoisted weight's gradient; the memory term's input
    # and weight gradients. Per update: its queries and attention again and the gradient of each
    # product (two); m W_mr^T: its input and weight gradients, after each update and for the
    # initial memory.
    steps = T * B * (8 * H * H + G * D + 2 * NH * H)
    return forward + steps + recomputed + 2 * per_update + (2 * len(updates) + 2) * mr


def reference_multiply_adds(shape: Shape, backward: bool, memory: dict = MEMORY) -> int:
    T, B, D, H = shape
    k, s, N, nh = memory["block_size"], memory["stride"], memory["num_slots"], memory["num_heads"]
    F, NH = memory.get("mlp_size", H), memory["num_slots"] * H
    G, R = 4 * H + NH + H, N + 2 * k  # the reference's block is always N + 2k rows, masked
    n_updates = T // s
    x_side = T * B * G * D  # x_t W_ih^T, x_t W_xr^T, x_t W_x^T
    h_side = T * B * 4 * H * H
    m_side = T * B * (NH * NH + NH * H)  # m W_mr^T and (r * m) W_mc^T, every step
    block = B * (R * H * 3 * H + 2 * R * R * H + R * H * H + 2 * R * H * F)  # in-projection, attention, W_o, MLP
    gates = B * (2 * H * H + N * H * 2 * H)  # xh W_gx^T and tanh(M) W_gm^T
    forward = x_side + h_side + m_side + n_updates * (block + gates)
    if not backward:
        return forward
    # Every product's weight gradient, and its input's where that input needs one: not x, not
    # the zero initial h (step 0's h W_hh^T), not the initial memory (the first min(s, T) steps'
    # m W_mr^T, the first update's tanh(M) W_gm^T). The embeddings of the steps after the last
    # update reach only the final ewindow, which the benchmark does not backpropagate.
    first_m_steps = min(s, T) * B * NH * NH
    first_gm = B * N * H * 2 * H if n_updates else 0
    unused_embeddings = (T - n_updates * s) * B * H * D
    return (forward + x_side - unused_embeddings + (2 * h_side - B * 4 * H * H) + (2 * m_side - first_m_steps)
            + n_updates * 2 * (block + gates) - first_gm)


def multiply_adds(impl: str, shape: Shape, mode: str) -> int | None:
    """Multiply-adds of one call of ``impl`` (an IMPLS name) in ``mode`` ("fwd" or "fwd+bwd");
    None for an implementation not counted here."""
    backward = mode == "fwd+bwd"
    if impl == LSTM:
        return lstm_multiply_adds(shape, backward)
    if impl in FAST:
        return fast_multiply_adds(shape, backward)
    if impl == REFERENCE:
        return reference_multiply_adds(shape, backward)
    return None
