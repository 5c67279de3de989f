"""The Triton kernels build for sm_80 and sm_90 without a GPU (kernels/aot.py): every kernel, dtype and
head layout compiles ahead of time at the tiles launch_config picks, within the shared-memory limit,
without register spills, and ptxas's report is still parsed (a format change fails here, loudly).

Cold, this compiles about 60 distinct kernels (a few minutes on 2 cores); Triton's on-disk cache makes
later runs take seconds.
"""

import os

import pytest

if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("TRITON_INTERPRET=1 turns @triton.jit into the interpreter: no ahead-of-time compilation",
                allow_module_level=True)  # fmt: skip
pytest.importorskip("triton", reason="triton is not installed")
pytest.importorskip("triton.backends.nvidia.compiler", reason="triton has no NVIDIA backend")

from nrnm_fast.kernels import aot  # noqa: E402

CASES = aot.default_cases()


def _id(case):
    kernel, cap, dtype, H, nh, N, k, B, t = case
    return f"{kernel}-sm{cap}-{dtype}-H{H}-nh{nh}-N{N}-k{k}" + ("" if B is None else f"-B{B}-t{t}")


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_compiles_without_spills(case):
    row = aot.compile_one(*case)  # compiles are memoized: cases sharing tiles and hints compile once
    assert row.registers is not None, "ptxas -v printed no register count: its output format changed?"
    assert 0 < row.registers <= 255
    assert row.spill_stores == 0 and row.spill_loads == 0, f"register spills: {row}"
    assert row.shared <= aot.SHARED_LIMIT[row.cap], f"too much shared memory: {row}"
    assert row.ok


def test_ptxas_log_parser():
    log = (
        "ptxas info    : Compiling entry function 'k' for 'sm_80'\n"
        "ptxas info    : Function properties for k\n"
        "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 96 registers, used 1 barriers, 8 bytes cumulative stack size, 480 bytes cmem[0]\n"
    )
    assert aot.parse_ptxas_log(log) == {"registers": 96, "stack": 8, "spill_stores": 4, "spill_loads": 12}
    assert aot.parse_ptxas_log("garbage")["registers"] is None


def test_table_lists_every_row():
    rows = [aot.compile_one(*c) for c in CASES[:2]]
    table = aot.markdown_table(rows).splitlines()
    assert len(table) == 2 + len(rows) and all(line.startswith("|") for line in table)
