"""Tiny cases whose expected numbers are computed here, independently of nrnm_fast.reference.

One case is worked out by hand (zero weights, where every term has a closed form);
the other recomputes SPEC.md in NumPy, element by element, slicing the block's
valid rows instead of masking them and attending from every token.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import random_model, random_state
from nrnm_fast import NRNM, NRNMState


def sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_zero_weights_by_hand(backend):
    """H = 2, N = 1, k = s = 1: all weights zero except the fixed init of norms and gate bias."""
    model = NRNM(1, 2, block_size=1, stride=1, num_slots=1, num_heads=1, dtype=torch.float64, backend=backend)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith(("norm", "gate_bias")):
                p.zero_()
    state = model.initial_state(1)._replace(
        c=torch.tensor([[[1.0, -2.0]]], dtype=torch.float64),
        memory=torch.tensor([[[[1.0, 3.0]]]], dtype=torch.float64),
    )
    out, new = model(torch.zeros(1, 1, 1, dtype=torch.float64), state)

    # every gate pre-activation is 0: c' = c / 2 (the memory term is zero since W_mc = 0), h' = tanh(c') / 2
    c_new = [0.5, -1.0]
    h_new = [0.5 * math.tanh(0.5), 0.5 * math.tanh(-1.0)]
    # memory update: q = k = v = 0, so Z + attention = Z; the memory row [1, 3] has mean 2, variance 1
    eps = 1e-5
    y1 = [-1 / math.sqrt(1 + eps), 1 / math.sqrt(1 + eps)]
    var1 = 1 / (1 + eps)  # the MLP adds 0; the second LayerNorm normalises y1 again
    y2 = [v / math.sqrt(var1 + eps) for v in y1]
    # gates: sigma(0 + 0 + b_g) with b_g = [0, 0 | 1, 1]
    m_new = [0.5 * math.tanh(y) + (1 / (1 + math.exp(-1))) * m for y, m in zip(y2, [1.0, 3.0])]

    torch.testing.assert_close(new.c[0, 0], torch.tensor(c_new, dtype=torch.float64), rtol=1e-14, atol=0)
    torch.testing.assert_close(out[0, 0], torch.tensor(h_new, dtype=torch.float64), rtol=1e-14, atol=0)
    torch.testing.assert_close(new.memory[0, 0, 0], torch.tensor(m_new, dtype=torch.float64), rtol=1e-12, atol=0)


def numpy_layer(x, lengths, st, W, k, s, nh):
    """SPEC.md in NumPy for one layer, one element at a time. x (T, B, D); returns out (T, B, H), state."""
    T, B, _ = x.shape
    H = W["weight_hh"].shape[1]
    N = st["memory"].shape[1]
    dh = H // nh
    out = np.zeros((T, B, H))
    final = {name: v.copy() for name, v in st.items()}

    def layer_norm(v, g, b):
        mu = v.mean(-1, keepdims=True)
        var = ((v - mu) ** 2).mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-5) * g + b

    for b in range(B):
        h, c, M = st["h"][b].copy(), st["c"][b].copy(), st["memory"][b].copy()
        win, ewin, steps = st["window"][b].copy(), st["ewindow"][b].copy(), int(st["steps"][b])
        for t in range(lengths[b]):
            xt = x[t, b]
            m = M.reshape(-1)
            a = W["weight_ih"] @ xt + W["bias_ih"] + W["weight_hh"] @ h + W["bias_hh"]
            i, f, g, o = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]
            r = sig(W["weight_xr"] @ xt + W["weight_mr"] @ m + W["bias_r"])
            c = sig(f) * c + sig(i) * np.tanh(g) + W["weight_mc"] @ (r * m)
            h = sig(o) * np.tanh(c)
            win = np.vstack([win[1:], h])
            ewin = np.vstack([ewin[1:], W["input_proj_weight"] @ xt + W["input_proj_bias"]])
            steps += 1
            out[t, b] = h
            if steps % s:
                continue
            w = min(k, steps)
            E, Hb = ewin[k - w:], win[k - w:]
            Z = np.vstack([M, E, Hb])  # (N + 2w, H): only valid rows, so no mask is needed
            qkv = Z @ W["attn_in_weight"].T + W["attn_in_bias"]
            q, kk, v = qkv[:, :H], qkv[:, H:2 * H], qkv[:, 2 * H:]
            A = np.zeros_like(Z)
            for head in range(nh):
                sl = slice(head * dh, (head + 1) * dh)
                sc = q[:, sl] @ kk[:, sl].T / math.sqrt(dh)
                p = np.exp(sc - sc.max(-1, keepdims=True))
                A[:, sl] = (p / p.sum(-1, keepdims=True)) @ v[:, sl]
            Y = layer_norm(Z + A @ W["attn_out_weight"].T + W["attn_out_bias"], W["norm1_weight"], W["norm1_bias"])
            hidden = np.maximum(Y @ W["mlp1_weight"].T + W["mlp1_bias"], 0)
            Y = layer_norm(Y + hidden @ W["mlp2_weight"].T + W["mlp2_bias"], W["norm2_weight"], W["norm2_bias"])
            gates = sig(E.mean(0) @ W["gate_x_weight"].T + np.tanh(M) @ W["gate_m_weight"].T + W["gate_bias"])
            M = gates[:, :H] * np.tanh(Y[:N]) + gates[:, H:] * M
        for name, v in (("h", h), ("c", c), ("memory", M), ("window", win), ("ewindow", ewin), ("steps", steps)):
            final[name][b] = v
    return out, final


@pytest.mark.parametrize("nh", [1, 2])
def test_matches_numpy_transcription(nh, backend):
    k, s = 3, 2
    model = random_model(2, 2, block_size=k, stride=s, num_slots=2, num_heads=nh, mlp_size=3, backend=backend)
    x = torch.randn(6, 3, 2, dtype=torch.float64)
    lengths = [6, 3, 5]
    start = random_state(model, 3, [0, 1, 4])
    out, state = model(x, start, lengths=torch.tensor(lengths))

    W = {name[:-3]: p.detach().numpy() for name, p in model.named_parameters()}
    st = {name: t[0].numpy() if name != "steps" else t.numpy() for name, t in start._asdict().items()}
    exp_out, exp = numpy_layer(x.numpy(), lengths, st, W, k, s, nh)

    np.testing.assert_allclose(out.detach().numpy(), exp_out, rtol=1e-11, atol=1e-13)
    for name in ("h", "c", "memory", "window", "ewindow"):
        np.testing.assert_allclose(getattr(state, name)[0].detach().numpy(), exp[name], rtol=1e-11, atol=1e-13,
                                   err_msg=name)
    assert state.steps.tolist() == list(exp["steps"])
    assert (state.memory - start.memory).abs().max() > 0.01  # the memory was really updated
    assert isinstance(state, NRNMState)
