"""Benchmark session set-up: a fixed thread count, recorded with the machine info."""

from __future__ import annotations

import platform

import torch

from benchmarks.shapes import MEMORY, bench_threads


def pytest_configure(config):
    torch.set_num_threads(bench_threads())


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_model"] = _cpu_model()
    machine_info["cpu_kernels"] = _cpu_kernels()
    machine_info["memory_config"] = MEMORY


def _cpu_kernels() -> str:
    """Which vector width the CPU path's own kernels run on (csrc/cpu/target_clones.h)."""
    try:
        from nrnm_fast import _C
    except ImportError:
        return "extension not built"
    return "AVX-512 kernels" if _C.avx512_kernels_enabled() else "32-byte-vector kernels"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
