"""Numerics table: each available backend against the reference on the default shape.

Baselines frame the numbers: the reference's own float32 rounding, the problem's
conditioning (how far the float32 reference moves when the input moves by one
float32 rounding, up to 2e-7 relative), and the LSTM limit (reference with W_mc = 0
against ``nn.LSTM``). Two float32 implementations cannot be expected to agree
better than the conditioning row.
"""

from __future__ import annotations

import torch

from benchmarks.shapes import DEFAULT, MEMORY, Shape
from nrnm_fast import NRNM, NRNMState, available_backends
from nrnm_fast.testing import max_relative_error, outputs_and_grads

GROUPS = ("output", "state.", "grad.input", "grad.state.", "grad.")  # matched in order; "grad." = parameters


def _group(name: str) -> str:
    return next(g for g in GROUPS if name == g or (g.endswith(".") and name.startswith(g)))


def compare(actual: dict, expected: dict) -> dict[str, float]:
    """Worst relative error per group of quantities (output, final state, input/state/parameter grads)."""
    worst = {g: 0.0 for g in GROUPS}
    for name, e in expected.items():
        g = _group(name)
        worst[g] = max(worst[g], max_relative_error(actual[name], e))
    return worst


def _worst(rows: list[dict[str, float]]) -> dict[str, float]:
    return {g: max(r[g] for r in rows) for g in GROUPS}


def _case(shape: Shape, dtype: torch.dtype, backend: str):
    """The same model, input, state and lengths for every dtype (drawn in float64, then cast)."""
    torch.manual_seed(0)
    model = NRNM(shape.D, shape.H, backend=backend, dtype=torch.float64, **MEMORY).to(dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape.T, shape.B, shape.D, generator=gen, dtype=torch.float64).to(dtype)
    lengths = torch.randint(shape.T // 2, shape.T + 1, (shape.B,), generator=gen)
    zero = model.initial_state(shape.B)
    state = NRNMState(*(torch.randn(t.shape, generator=gen, dtype=torch.float64).to(dtype) * 0.5 for t in zero[:5]),
                      torch.randint(0, 2 * MEMORY["block_size"], (shape.B,), generator=gen))
    return model, x, state, lengths


def _run(shape: Shape, dtype: torch.dtype, backend: str, input_scale: float = 1.0) -> dict:
    model, x, state, lengths = _case(shape, dtype, backend)
    return outputs_and_grads(model, x * input_scale, state, lengths, seed=2)


def _lstm_limit(shape: Shape) -> dict[str, float]:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(shape.D, shape.H).double()
    model = NRNM.from_lstm(lstm, **MEMORY)
    x = torch.randn(shape.T, shape.B, shape.D, dtype=torch.float64)
    grad_out = torch.randn(shape.T, shape.B, shape.H, dtype=torch.float64)
    results = []
    for module in (model, lstm):
        xi = x.clone().requires_grad_(True)
        out, (h, c) = module(xi)
        weights = [module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0]
        grads = torch.autograd.grad(out, [xi, *weights], grad_out)
        results.append({"output": out, "state.h": h, "state.c": c, "grad.input": grads[0],
                        **{f"grad.{i}": g for i, g in enumerate(grads[1:])}})
    return compare(results[0], results[1])


def numerics_rows(shape: Shape = DEFAULT) -> list[tuple[str, dict[str, float]]]:
    """(comparison, worst relative error per group) rows."""
    expected = {torch.float64: _run(shape, torch.float64, "reference"),
                torch.float32: _run(shape, torch.float32, "reference")}
    rows = [("reference fp32 vs reference fp64", compare(expected[torch.float32], expected[torch.float64])),
            ("conditioning: reference fp32, input x (1 + e), e in {+-1e-7, +-2e-7}, vs reference fp32",
             _worst([compare(_run(shape, torch.float32, "reference", 1 + e), expected[torch.float32])
                     for e in (1e-7, -1e-7, 2e-7, -2e-7)]))]
    for backend in available_backends("cpu"):
        if backend == "reference":
            continue
        for dtype, tag in ((torch.float64, "fp64"), (torch.float32, "fp32")):
            rows.append((f"{backend} {tag} vs reference {tag}", compare(_run(shape, dtype, backend), expected[dtype])))
    rows.append(("reference (W_mc = 0) vs nn.LSTM, fp64", _lstm_limit(shape)))
    return rows


def format_table(rows, shape: Shape = DEFAULT) -> str:
    heads = ["comparison", "output", "final state", "grad input", "grad state", "grad params"]
    lines = [f"Numerics at {shape.name} (random state, steps and lengths; max |a - b| / max |b| per group)",
             "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for name, worst in rows:
        lines.append(f"| {name} | " + " | ".join(f"{worst[g]:.1e}" for g in GROUPS) + " |")
    return "\n".join(lines)
