"""Ahead-of-time compilation of the block attention kernels for sm_80 / sm_90, without a GPU.

For every kernel (forward, backward), capability (80, 90), dtype (fp32, fp16, bf16) and hidden size H
in {64, 128, 256, 512} with num_heads in {1, 4}, at the tile sizes ``launch_config`` picks for N = 2
slots and block size 8 (the defaults), plus the largest tiles the launchers accept (N = MAX_NUM_SLOTS,
k = MAX_BLOCK_SIZE) and a head dim that is not a multiple of 16 (see default_cases): compile with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", cap, 32))``, read the shared memory from the
compiled metadata, and run Triton's bundled ptxas (``-v``) on the PTX to read registers, spill stores /
loads and stack frame.

    python -m nrnm_fast.kernels.aot            # markdown table; exit status 1 if a row fails a check

Must run without TRITON_INTERPRET=1 (with it, @triton.jit returns interpreter objects).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Shared memory a block may use (the opt-in maximum per block) on sm_80 / sm_90.
SHARED_LIMIT = {80: 166912, 90: 232448}
CAPS = (80, 90)
DTYPES = ("fp32", "fp16", "bf16")
HIDDEN = (64, 128, 256, 512)
HEADS = (1, 4)
NUM_SLOTS = 2
BLOCK_SIZE = 8
KERNEL_NAMES = ("forward", "backward")
_INT_ARGS = ("t", "B", "N", "H", "NUM_HEADS", "HEAD_DIM", "K")


@dataclass(frozen=True)
class AotRow:
    kernel: str
    cap: int
    dtype: str
    H: int
    nh: int
    N: int
    k: int
    B: int | None  # batch size and t compiled for: None for any value but 1 (no hint on them)
    t: int | None
    BLOCK_N: int
    BLOCK_K: int
    BLOCK_D: int
    num_warps: int
    registers: int | None  # None: ptxas printed no register count (its output format changed)
    spill_stores: int
    spill_loads: int
    stack: int
    shared: int

    @property
    def spill_bytes(self) -> int:
        return self.spill_stores + self.spill_loads

    @property
    def ok(self) -> bool:
        return self.registers is not None and self.spill_bytes == 0 and self.shared <= SHARED_LIMIT[self.cap]


def _source(kernel_name: str, dtype: str, cfg: dict, divisible_ints: tuple, unit_ints: tuple):
    """ASTSource of one kernel, specialized as a launch specializes it: pointers 16-byte aligned, int
    arguments divisible by 16 marked so (tt.divisibility), int arguments equal to 1 made constexpr (Triton's
    runtime does both), tiles constexpr."""
    import triton.language as tl
    from triton.compiler import ASTSource

    from .block_attention import KERNELS

    fn = KERNELS[kernel_name]
    ptr, probs = f"*{dtype}", "*fp32"  # probs are in the compute dtype: fp32 for fp32 / fp16 / bf16
    if kernel_name == "forward":
        ptrs = {"qkv_ptr": ptr, "kv_emb_ptr": ptr, "kv_hid_ptr": ptr, "elems_ptr": "*i64", "n_valid_ptr": "*i64",
                "out_ptr": ptr, "probs_ptr": probs}  # fmt: skip
    else:
        ptrs = {"qkv_ptr": ptr, "kv_emb_ptr": ptr, "kv_hid_ptr": ptr, "elems_ptr": "*i64", "n_valid_ptr": "*i64",
                "probs_ptr": probs, "d_out_ptr": ptr, "d_qkv_ptr": ptr, "d_kv_emb_ptr": ptr,
                "d_kv_hid_ptr": ptr}  # fmt: skip
    constexprs = {"CDT": tl.float32, "BLOCK_N": cfg["BLOCK_N"], "BLOCK_K": cfg["BLOCK_K"], "BLOCK_D": cfg["BLOCK_D"]}
    constexprs.update({n: 1 for n in unit_ints})
    signature = {**ptrs, **{n: "constexpr" if n in unit_ints else "i32" for n in _INT_ARGS}}
    signature.update({n: "constexpr" for n in constexprs if n not in signature})
    assert list(signature) == fn.arg_names, (list(signature), fn.arg_names)
    divisible = [*ptrs, *divisible_ints]
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def ptxas_path(cap: int) -> str:
    """The ptxas Triton itself runs for this capability (bundled with the triton wheel)."""
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(cap).path


def gpu_name(cap: int) -> str:
    """sm_80 / sm_90a: the name Triton targets (its PTX for capability 90 says .target sm_90a)."""
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    return sm_arch_from_capability(cap)


_RE_REGS = re.compile(r"Used (\d+) registers")
_RE_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> dict:
    """registers (None when absent), stack, spill_stores, spill_loads from ``ptxas -v`` output."""
    regs, spill = _RE_REGS.search(log), _RE_SPILL.search(log)
    return {
        "registers": int(regs.group(1)) if regs else None,
        "stack": int(spill.group(1)) if spill else 0,
        "spill_stores": int(spill.group(2)) if spill else 0,
        "spill_loads": int(spill.group(3)) if spill else 0,
    }


def ptxas_resources(ptx: str, cap: int) -> tuple[dict, str]:
    """Assemble PTX with ptxas -v; returns (parse_ptxas_log's dict, the log)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        # --regAllocOptLevel=2: the register allocation flag Triton's own make_cubin passes.
        cmd = [ptxas_path(cap), "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu_name(cap)}", src,
               "-o", os.path.join(tmp, "kernel.cubin")]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
    log = res.stdout + res.stderr
    if res.returncode:
        raise RuntimeError(f"ptxas failed ({res.returncode}): {' '.join(cmd)}\n{log}")
    return parse_ptxas_log(log), log


@functools.lru_cache(maxsize=None)
def _compile_and_measure(kernel_name: str, cap: int, dtype: str, cfg: tuple, divisible_ints: tuple,
                         unit_ints: tuple) -> dict:  # fmt: skip
    """Compile once per distinct specialization (many (H, nh) pairs share tiles and hints)."""
    import triton
    from triton.backends.compiler import GPUTarget

    from .block_attention import COMPILE_OPTIONS

    cfg = dict(cfg)
    src = _source(kernel_name, dtype, cfg, divisible_ints, unit_ints)
    options = {"num_warps": cfg["num_warps"], **COMPILE_OPTIONS}
    compiled = triton.compile(src, target=GPUTarget("cuda", cap, 32), options=options)
    res, _ = ptxas_resources(compiled.asm["ptx"], cap)
    return {"shared": int(compiled.metadata.shared), **res}


def compile_one(kernel_name: str, cap: int, dtype: str, H: int, nh: int, num_slots: int = NUM_SLOTS,
                block_size: int = BLOCK_SIZE, batch: int | None = None, t: int | None = None,
                cfg: dict | None = None) -> AotRow:  # fmt: skip
    """Compile one kernel for one target and measure it, at launch_config's tiles (or at cfg's).

    batch, t: the values of B and t to specialize for (None: a value that is neither 1 nor a multiple of 16).
    """
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("kernels.aot needs a process without TRITON_INTERPRET=1")
    from .block_attention import launch_config

    cfg = cfg or launch_config(num_slots, block_size, H // nh)
    ints = {"t": t, "B": batch, "N": num_slots, "H": H, "NUM_HEADS": nh, "HEAD_DIM": H // nh, "K": block_size}
    ints = {n: v for n, v in ints.items() if v is not None}
    divisible_ints = tuple(n for n in _INT_ARGS if n in ints and ints[n] % 16 == 0)
    unit_ints = tuple(n for n in _INT_ARGS if ints.get(n) == 1)
    res = _compile_and_measure(kernel_name, cap, dtype, tuple(sorted(cfg.items())), divisible_ints, unit_ints)
    return AotRow(
        kernel=kernel_name, cap=cap, dtype=dtype, H=H, nh=nh, N=num_slots, k=block_size, B=batch, t=t,
        BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], BLOCK_D=cfg["BLOCK_D"], num_warps=cfg["num_warps"], **res,
    )  # fmt: skip


def default_cases() -> list[tuple]:
    """(kernel, cap, dtype, H, nh, N, k, B, t) of the check: the defaults over the whole grid; the largest N
    and k the launchers accept at the largest and smallest head dims of the grid and at dh = 24; dh = 24
    (not a multiple of 16) at the defaults; and every int argument 1 (constexpr in a launch)."""
    from .block_attention import MAX_BLOCK_SIZE, MAX_NUM_SLOTS

    every = [(kn, cap, dt) for kn in KERNEL_NAMES for cap in CAPS for dt in DTYPES]
    cases = [(*x, H, nh, NUM_SLOTS, BLOCK_SIZE, None, None) for x in every for H in HIDDEN for nh in HEADS]
    cases += [(*x, H, nh, MAX_NUM_SLOTS, MAX_BLOCK_SIZE, None, None) for x in every
              for H, nh in ((512, 1), (64, 4), (96, 4))]  # fmt: skip
    # A head dim that is not a multiple of 16 (no divisibility hint: other vector widths).
    cases += [(*x, 96, 4, NUM_SLOTS, BLOCK_SIZE, None, None) for x in every]
    # N = nh = k = B = t = 1: Triton's runtime makes int arguments equal to 1 constexpr.
    cases += [(*x, 64, 1, 1, 1, 1, 1) for x in every]
    return cases


def aot_rows(cases=None) -> list[AotRow]:
    """Compile and measure every case (default_cases() when None)."""
    return [compile_one(*case) for case in (cases or default_cases())]


def markdown_table(rows: list[AotRow]) -> str:
    """One line per row; B and t read "any" where compiled for any value (neither 1 nor a multiple of 16)."""
    head = ("kernel", "sm", "dtype", "H", "nh", "N", "k", "B", "t", "BLOCK_N", "BLOCK_K", "BLOCK_D", "warps",
            "registers", "spill bytes", "stack", "shared bytes", "ok")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = (r.kernel, r.cap, r.dtype, r.H, r.nh, r.N, r.k, "any" if r.B is None else r.B,
                 "any" if r.t is None else r.t, r.BLOCK_N, r.BLOCK_K, r.BLOCK_D, r.num_warps, r.registers,
                 r.spill_bytes, r.stack, r.shared, "yes" if r.ok else "NO")  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    rows = aot_rows()
    print(f"Shared memory limits (bytes): {SHARED_LIMIT}; ptxas: {ptxas_path(80)}, {ptxas_path(90)}\n")
    print(markdown_table(rows))
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"\n{len(bad)} of {len(rows)} rows fail (spills, too much shared memory, or no register count)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
