"""The main job: time every available backend and nn.LSTM on the registered shapes and streaming, then check numerics.

    python -m benchmarks [--shapes NAME,...] [--threads N] [--json PATH]

Prints the speed table (medians, ratios to nn.LSTM and to the reference), the
streaming table (a step at a time), where the CPU path's time goes (its phases under
torch.profiler, benchmarks/phases.py) and the numerics table (each backend against
the float64 reference).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import pytest

from benchmarks.flops import multiply_adds
from benchmarks.paired import PAIRS, REFERENCE_PAIRS
from benchmarks.phases import phases_table
from benchmarks.shapes import LSTM, SHAPES, bench_threads, selected_shapes
from nrnm_fast import available_backends


def speed_table(report: dict, device: str = "cpu") -> str:
    """The table of one device's rows of a pytest-benchmark report ("" if it has none)."""
    info = report["machine_info"]
    rows = [b for b in report["benchmarks"]
            if b["extra_info"].get("device") == device and b["extra_info"]["mode"] != "streamed"]
    if not rows:
        return ""
    where = rows[0]["extra_info"].get("gpu") if device == "cuda" else (
        f"{info['cpu_model']}, {info['torch_threads']} threads"
        + (f", nrnm-cpu on {info['cpu_kernels']}" if "cpu_kernels" in info else ""))
    memory = "GPU memory allocated" if device == "cuda" else "resident memory"
    lines = [f"Speed: {where}, torch {info['torch']}; "
             f"median ms of one layer; fwd = inference (no grad), fwd+bwd = one training step; "
             f"paired = the median time ratio over {PAIRS} pairs of calls alternating with nn.LSTM's "
             f"(benchmarks/paired.py: the machine's drift cancels in a pair), and over {REFERENCE_PAIRS} "
             f"pairs of the reference's calls with the implementation's; "
             f"GFLOP/s = the implementation's products (benchmarks/flops.py) over the median, and "
             f"arithmetic = its products over nn.LSTM's: the time ratio it would have at nn.LSTM's GFLOP/s; "
             f"peak MB = peak extra {memory} of one fwd+bwd",
             "| shape | mode | impl | median ms | / nn.LSTM | paired / nn.LSTM | GFLOP/s | arithmetic / nn.LSTM "
             "| reference / impl | paired reference / impl | peak MB | / nn.LSTM |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    medians, peaks, paired, paired_ref = {}, {}, {}, {}
    for b in rows:
        e = b["extra_info"]
        key = (e["shape"], e["mode"], e["impl"])
        medians[key] = b["stats"]["median"] * 1e3
        if "paired_vs_lstm" in e:
            paired[key] = f"{e['paired_vs_lstm']:.2f}x"
        for fast, ratio in e.get("paired_over", {}).items():
            paired_ref[(e["shape"], e["mode"], fast)] = f"{ratio:.1f}x"
        if "peak_extra_bytes" in e:
            peaks[key] = e["peak_extra_bytes"] / 2**20
    by_name = {s.name: s for s in SHAPES}
    for (shape, mode, impl), ms in sorted(medians.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != LSTM)):
        lstm = medians.get((shape, mode, LSTM))
        ref = medians.get((shape, mode, "nrnm-reference"))
        vs_lstm = f"{ms / lstm:.2f}x" if lstm else "-"
        vs_ref = f"{ref / ms:.1f}x" if ref and impl != LSTM else "-"
        macs, lstm_macs = multiply_adds(impl, by_name[shape], mode), multiply_adds(LSTM, by_name[shape], mode)
        gflops = f"{2 * macs / ms / 1e6:.0f}" if macs else "-"
        arithmetic = f"{macs / lstm_macs:.2f}x" if macs and impl != LSTM else "-"
        peak, lstm_peak = peaks.get((shape, mode, impl)), peaks.get((shape, mode, LSTM))
        peak_cols = f"{peak:.0f} | {peak / lstm_peak:.2f}x" if peak is not None and lstm_peak else "- | -"
        lines.append(f"| {shape} | {mode} | {impl} | {ms:.1f} | {vs_lstm} | {paired.get((shape, mode, impl), '-')} "
                     f"| {gflops} | {arithmetic} | {vs_ref} | {paired_ref.get((shape, mode, impl), '-')} | {peak_cols} |")
    return "\n".join(lines)


def streaming_table(report: dict) -> str:
    """The streaming rows (benchmarks/test_streaming_speed.py) of a report: microseconds a step."""
    rows = [b for b in report["benchmarks"] if b["extra_info"].get("mode") == "streamed"]
    if not rows:
        return ""
    lines = ["Streaming: one step per call, batch 1, the state carried without a gradient; "
             "median us a step (rounds of {} steps)".format(rows[0]["extra_info"]["steps"]),
             "| shape | impl | us / step | / nn.LSTM | reference / impl |",
             "|---|---|---|---|---|"]
    per_step = {(b["extra_info"]["shape"], b["extra_info"]["impl"]):
                b["stats"]["median"] * 1e6 / b["extra_info"]["steps"] for b in rows}
    for (shape, impl), us in sorted(per_step.items(), key=lambda kv: (kv[0][0], kv[0][1] != LSTM)):
        lstm, ref = per_step.get((shape, LSTM)), per_step.get((shape, "nrnm-reference"))
        vs_lstm = f"{us / lstm:.2f}x" if lstm else "-"
        vs_ref = f"{ref / us:.1f}x" if ref and impl != LSTM else "-"
        lines.append(f"| {shape} | {impl} | {us:.0f} | {vs_lstm} | {vs_ref} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", help="comma-separated shape names (default: all registered)")
    parser.add_argument("--threads", type=int, help="torch threads (default: every core)")
    parser.add_argument("--json", help="also keep pytest-benchmark's JSON report here")
    args = parser.parse_args(argv)
    if args.shapes:
        os.environ["NRNM_BENCH_SHAPES"] = args.shapes
    if args.threads:
        os.environ["NRNM_BENCH_THREADS"] = str(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.json or os.path.join(tmp, "bench.json")
        code = pytest.main([os.path.dirname(os.path.abspath(__file__)), "-q", "-p", "no:cacheprovider",
                            f"--benchmark-json={path}", "--benchmark-columns=median,iqr,rounds",
                            "--benchmark-sort=name"])
        if code != 0:
            return int(code)
        with open(path) as f:
            report = json.load(f)
    for device in ("cpu", "cuda"):
        table = speed_table(report, device)
        if table:
            print("\n" + table + "\n")
    table = streaming_table(report)
    if table:
        print(table + "\n")
    if "cpu" in available_backends("cpu"):
        print(phases_table(selected_shapes(), bench_threads()) + "\n")

    from benchmarks.numerics import format_table, numerics_rows

    print(format_table(numerics_rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
