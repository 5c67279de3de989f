"""The tables `python -m benchmarks` prints from a pytest-benchmark report: each row from its
own benchmarks, the streaming rows per step and kept out of the layer table."""

from __future__ import annotations

from benchmarks.__main__ import speed_table, streaming_table


def _row(shape, impl, mode, median_s, **extra):
    return {"extra_info": {"device": "cpu", "shape": shape, "impl": impl, "mode": mode, **extra},
            "stats": {"median": median_s}}


REPORT = {
    "machine_info": {"cpu_model": "test cpu", "torch_threads": 2, "torch": "2.13.0"},
    "benchmarks": [
        _row("T256-B32-D128-H128", "nn.LSTM", "fwd", 0.020),
        _row("T256-B32-D128-H128", "nrnm-cpu", "fwd", 0.050),
        _row("T1-B1-D128-H128", "nn.LSTM", "streamed", 64 * 200e-6, steps=64),
        _row("T1-B1-D128-H128", "nrnm-cpu", "streamed", 64 * 300e-6, steps=64),
        _row("T1-B1-D128-H128", "nrnm-reference", "streamed", 64 * 1500e-6, steps=64),
    ],
}


def test_streaming_table_reports_microseconds_a_step_and_ratios():
    lines = streaming_table(REPORT).splitlines()
    assert "rounds of 64 steps" in lines[0]
    rows = {line.split(" | ")[1]: line for line in lines[3:]}
    assert rows.keys() == {"nn.LSTM", "nrnm-cpu", "nrnm-reference"}
    assert rows["nn.LSTM"] == "| T1-B1-D128-H128 | nn.LSTM | 200 | 1.00x | - |"
    assert rows["nrnm-cpu"] == "| T1-B1-D128-H128 | nrnm-cpu | 300 | 1.50x | 5.0x |"
    assert rows["nrnm-reference"] == "| T1-B1-D128-H128 | nrnm-reference | 1500 | 7.50x | 1.0x |"


def test_layer_table_leaves_the_streaming_rows_out():
    table = speed_table(REPORT)
    assert "T256-B32-D128-H128 | fwd | nrnm-cpu | 50.0 | 2.50x" in table
    assert "T1-B1" not in table and "streamed" not in table


def test_no_streaming_rows_no_table():
    assert streaming_table({**REPORT, "benchmarks": REPORT["benchmarks"][:2]}) == ""


def test_layer_table_says_which_cpu_kernels_ran():
    """Reports since the CPU path's AVX-512 kernels name them; older reports have no such field."""
    info = {**REPORT["machine_info"], "cpu_kernels": "AVX-512 kernels"}
    table = speed_table({**REPORT, "machine_info": info})
    assert "test cpu, 2 threads, nrnm-cpu on AVX-512 kernels, torch 2.13.0" in table
    assert "test cpu, 2 threads, torch 2.13.0" in speed_table(REPORT)


def test_layer_table_shows_the_paired_ratio_of_fast_paths():
    report = {**REPORT, "benchmarks": [REPORT["benchmarks"][0],
                                       _row("T256-B32-D128-H128", "nrnm-cpu", "fwd", 0.050, paired_vs_lstm=2.345)]}
    table = speed_table(report)
    assert "| T256-B32-D128-H128 | fwd | nrnm-cpu | 50.0 | 2.50x | 2.35x |" in table
    assert "| T256-B32-D128-H128 | fwd | nn.LSTM | 20.0 | 1.00x | - |" in table


def test_layer_table_shows_the_reference_paired_with_each_fast_path():
    """The reference's row carries its paired ratio over each fast path; the table shows it on the
    fast path's row, beside the ratio of the two medians."""
    report = {**REPORT, "benchmarks": [
        REPORT["benchmarks"][0], REPORT["benchmarks"][1],
        _row("T256-B32-D128-H128", "nrnm-reference", "fwd", 0.600, paired_over={"nrnm-cpu": 9.46})]}
    rows = {line.split(" | ")[2]: line for line in speed_table(report).splitlines()[3:]}
    assert rows["nrnm-cpu"].endswith("| 12.0x | 9.5x | - | - |")
    assert rows["nrnm-reference"].endswith("| 1.0x | - | - | - |")
    assert rows["nn.LSTM"].endswith("| - | - | - | - |")
