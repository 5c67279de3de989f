"""The CUDA sources build with nvcc, without warnings, spills or local memory. No GPU needed.

Each csrc/cuda/*.cu is compiled once for sm_80 and sm_90 with torch's half / bfloat16
defines and ptxas's resource report, which is parsed per kernel and arch. Run as a script
to print the register table:

    .venv/bin/python tests/test_cuda_build.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = sorted((CSRC / "cuda").glob("*.cu"))
ARCHS = ("sm_80", "sm_90")

NVCC_FLAGS = [
    "-std=c++17", "-O3", "-c",
    *(f for arch in ARCHS for f in ("-gencode", f"arch=compute_{arch[3:]},code={arch}")),
    "--resource-usage", "-Xptxas", "--warn-on-spills,--warn-on-local-memory-usage",
    "-Werror", "all-warnings",
    # torch's build switches these off; the kernels must convert explicitly.
    "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
    "-I", str(CSRC),
]

requires_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")


@dataclass
class KernelUsage:
    arch: str
    kernel: str  # mangled
    stack: int = -1  # bytes; -1 until its line is seen
    spill_stores: int = -1
    spill_loads: int = -1
    registers: int = -1
    lmem: int = 0  # older ptxas reports local memory apart from the stack frame, and only when used
    smem: int = 0  # ptxas names shared memory only when a kernel uses some


ENTRY = re.compile(r"ptxas info\s*: Compiling entry function '([^']+)' for '(sm_\d+a?)'")
PROPERTIES = re.compile(r"ptxas info\s*: Function properties for (\S+)")
FRAME = re.compile(r"^\s*(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads\s*$")
USED = re.compile(r"ptxas info\s*: Used (\d+) registers")


def _bytes_of(kind: str, line: str) -> int:
    match = re.search(rf"(\d+) bytes {kind}\b", line)
    return int(match.group(1)) if match else 0


def parse_resource_usage(log: str) -> tuple[list[KernelUsage], list[tuple[str, int, int, int]]]:
    """Kernels (one per entry function and arch) and the stack frames of any non-inlined callees.

    Strict: raises ValueError on a report without kernels, or a kernel missing its frame or
    register line, so that a change of ptxas's format fails instead of passing with nothing checked.
    """
    kernels: list[KernelUsage] = []
    callees: list[tuple[str, int, int, int]] = []  # (name, stack, spill stores, spill loads)
    lines = log.splitlines()
    for n, line in enumerate(lines):
        if entry := ENTRY.search(line):
            kernels.append(KernelUsage(arch=entry.group(2), kernel=entry.group(1)))
        elif properties := PROPERTIES.search(line):
            frame = FRAME.match(lines[n + 1]) if n + 1 < len(lines) else None
            if frame is None:
                raise ValueError(f"no stack frame line after: {line!r}")
            stack, stores, loads = map(int, frame.groups())
            name = properties.group(1)
            if kernels and kernels[-1].kernel == name:
                kernels[-1].stack, kernels[-1].spill_stores, kernels[-1].spill_loads = stack, stores, loads
            else:
                callees.append((name, stack, stores, loads))
        elif used := USED.search(line):
            if not kernels:
                raise ValueError(f"register line before any entry function: {line!r}")
            kernels[-1].registers = int(used.group(1))
            kernels[-1].lmem, kernels[-1].smem = _bytes_of("lmem", line), _bytes_of("smem", line)
    if not kernels:
        raise ValueError("no kernels in the ptxas report")
    for k in kernels:
        if min(k.stack, k.spill_stores, k.spill_loads, k.registers) < 0:
            raise ValueError(f"incomplete report for {k.kernel} ({k.arch}): {k}")
    return kernels, callees


def compile_cu(source: Path, out_dir: Path) -> subprocess.CompletedProcess:
    """One nvcc call for both archs; ptxas writes its report to stderr."""
    obj = out_dir / (source.stem + ".o")
    return subprocess.run(
        ["nvcc", *NVCC_FLAGS, str(source), "-o", str(obj)], capture_output=True, text=True, timeout=600
    )


def demangle(names: list[str]) -> list[str]:
    """Short names (`step_forward_kernel<float>`) via c++filt; the mangled names without it."""
    if not names or shutil.which("c++filt") is None:
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return [short_name(d) for d in out.splitlines()]


def short_name(demangled: str) -> str:
    """`void nrnm::cuda::detail::k<float>(nrnm::cuda::P<float>)` -> `k<float>`."""
    signature = demangled.split("(", 1)[0].removeprefix("void ")
    head, bracket, args = signature.partition("<")
    return head.rsplit("::", 1)[-1] + bracket + args


SAMPLE_REPORT = """\
ptxas info    : 0 bytes gmem
ptxas info    : Function properties for helper
    8 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function '_Z1kPf' for 'sm_80'
ptxas info    : Function properties for _Z1kPf
    16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 24 bytes lmem, 1024 bytes smem, 360 bytes cmem[0]
ptxas info    : Compile time = 1.000 ms
ptxas info    : Compiling entry function '_Z1kPf' for 'sm_90'
ptxas info    : Function properties for _Z1kPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
"""


def test_parser_reads_every_field_and_is_strict():
    """The parser itself, on a fixed report: a silent parse would make the build test vacuous."""
    kernels, callees = parse_resource_usage(SAMPLE_REPORT)
    assert kernels == [
        KernelUsage("sm_80", "_Z1kPf", stack=16, spill_stores=4, spill_loads=8, registers=40, lmem=24, smem=1024),
        KernelUsage("sm_90", "_Z1kPf", stack=0, spill_stores=0, spill_loads=0, registers=32),
    ]
    assert callees == [("helper", 8, 0, 0)]
    with pytest.raises(ValueError, match="no kernels"):
        parse_resource_usage("ptxas info    : 0 bytes gmem\n")
    without_registers = "\n".join(line for line in SAMPLE_REPORT.splitlines() if "Used 32" not in line)
    with pytest.raises(ValueError, match="incomplete"):
        parse_resource_usage(without_registers)


@requires_nvcc
@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_cu_builds_without_spills(source: Path, tmp_path: Path):
    result = compile_cu(source, tmp_path)
    assert result.returncode == 0, f"nvcc failed on {source.name}:\n{result.stderr}"
    kernels, callees = parse_resource_usage(result.stderr)
    for arch in ARCHS:
        assert any(k.arch == arch for k in kernels), f"no kernel reported for {arch}:\n{result.stderr}"
    for k in kernels:
        where = f"{k.kernel} ({k.arch})"
        assert (k.spill_stores, k.spill_loads) == (0, 0), f"{where} spills: {k}"
        assert (k.stack, k.lmem) == (0, 0), f"{where} uses local memory: {k}"
    assert all(c[1:] == (0, 0, 0) for c in callees), f"non-inlined callees with a stack frame or spills: {callees}"


GLUE = sorted((CSRC / "cuda").glob("*.cpp"))


def _cuda_include() -> Path | None:
    """The CUDA toolkit's headers: $CUDA_HOME, torch's guess, or the default install path."""
    from torch.utils.cpp_extension import CUDA_HOME

    for home in (os.environ.get("CUDA_HOME"), CUDA_HOME, "/usr/local/cuda"):
        if home and (Path(home) / "include" / "cuda_runtime.h").exists():
            return Path(home) / "include"
    return None


@pytest.mark.skipif(_cuda_include() is None, reason="no CUDA toolkit headers (set CUDA_HOME)")
@pytest.mark.parametrize("source", GLUE, ids=[s.name for s in GLUE])
def test_cuda_glue_compiles_against_torch_headers(source: Path, tmp_path: Path):
    """The torch glue of the CUDA path (g++, syntax only: this torch may have no CUDA libraries to link)."""
    from torch.utils.cpp_extension import include_paths

    # A CPU wheel ships c10's CUDA headers without the one CMake generates; it only sets the DLL macro.
    stub = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    stub.parent.mkdir(parents=True)
    stub.write_text("#define C10_CUDA_BUILD_SHARED_LIBS\n")
    system = [str(tmp_path), str(_cuda_include()), *include_paths()]
    result = subprocess.run(
        ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-I", str(CSRC),
         *(f for p in system for f in ("-isystem", p)), str(source)],
        capture_output=True, text=True)
    assert result.returncode == 0, f"g++ failed on {source.name}:\n{result.stderr}"


def test_there_are_cuda_sources():
    """The glob above found the sources, so the parametrized test cannot pass by having no cases."""
    assert SOURCES and GLUE, f"no .cu or .cpp files under {CSRC / 'cuda'}"


def main() -> int:
    if shutil.which("nvcc") is None:
        print("nvcc not on PATH", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in SOURCES:
            result = compile_cu(source, Path(tmp))
            if result.returncode != 0:
                print(f"nvcc failed on {source.name}:\n{result.stderr}", file=sys.stderr)
                return 1
            kernels, _ = parse_resource_usage(result.stderr)
            names = demangle([k.kernel for k in kernels])
            rows += [(source.name, k, name) for k, name in zip(kernels, names)]
    print("| file | arch | kernel | registers | spill bytes (stores / loads) | shared bytes |")
    print("|---|---|---|---|---|---|")
    for file, k, name in sorted(rows, key=lambda r: (r[0], r[1].arch, r[2])):
        print(f"| {file} | {k.arch} | `{name}` | {k.registers} | {k.spill_stores} / {k.spill_loads} | {k.smem} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
