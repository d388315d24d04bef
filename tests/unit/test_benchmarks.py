"""The benchmarks run: they assert nothing themselves (speed goals live in bench/, not in timed tests), so without this
a change to the library could break them unseen until a GPU session, which has minutes to spend, found out."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llavamech import bench_results, patches, paths

ROOT = Path(__file__).resolve().parents[2]


def bench(script, *args):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU it builds the full 7B shape: the GPU tier runs it")
def test_bench_7b_runs_its_scaled_down_shape_on_a_cpu(tmp_path):
    out = bench("bench_7b.py", "--repeats", "1", "--ig-steps", "2")
    assert "no GPU here: a scaled-down shape" in out
    (tmp_path / "bench.txt").write_text(out)   # and appendix C's reader reads what it prints
    rows, summary = bench_results.read_bench(tmp_path / "bench.txt")
    assert list(rows.loc["float32"].index) == ["forward, eager", "forward, SDPA", "SDPA, from image", "explain (tool)",
                                               *list(patches.METHODS)[1:]]
    assert summary.loc["float32", "explain items/s"] > 0 and summary.loc["float32", "sequence length"] == 595


def test_the_shipped_gpu_runs_read_back_whole():
    """data/gpu/: what the H200 printed, as appendix C reads it."""
    run = paths.GPU_RUNS_DIR / "h200-2026-11-29"
    rows, summary = bench_results.read_bench(run / "bench_7b.txt")
    assert set(rows.index.get_level_values("dtype")) == {"bfloat16", "float32"}
    assert {"ablation", "gradient", "ig"} <= set(rows.loc["bfloat16"].index)
    assert summary.loc["bfloat16", "capped at (GB)"] == 24
    assert bench_results.read_phases(run / "profile_explain.txt")["explain, all of it"] > 0
    assert bench_results.read_tier(run / "gpu-tier.xml")["failed"].sum() == 0
    assert len(bench_results.tier_cases(run / "gpu-tier-first-run.xml", "test_every_chapter_runs_on_cuda")) == \
        len(list((ROOT / "book").glob("*.py")))


def test_the_tier_reader_counts_every_outcome(tmp_path):
    (tmp_path / "tier.xml").write_text(
        '<testsuites><testsuite timestamp="2026-11-29T23:01:38"><testcase name="test_a[x]"/>'
        '<testcase name="test_a[y]"><failure/></testcase><testcase name="test_b"><skipped/></testcase>'
        '<testcase time="0.0"/></testsuite></testsuites>')
    counts = bench_results.read_tier(tmp_path / "tier.xml")
    assert counts.loc["test_a"].tolist() == [1, 1, 0, 0] and counts.loc["test_b", "skipped"] == 1
    assert counts["stopped"].sum() == 1
    assert bench_results.tier_cases(tmp_path / "tier.xml", "test_a") == {"x": "passed", "y": "failed"}
    assert bench_results.tier_when(tmp_path / "tier.xml") == "2026-11-29"


def test_bench_tool_times_every_method_at_both_grids():
    out = bench("bench_tool.py", "--repeats", "1")
    assert "(8x8 patches)" in out and "(24x24 patches)" in out
    assert all(out.count(f"  {method} ") == 2 for method in patches.METHODS), out


def test_bench_explain_prints_its_ratio():
    assert "ratio explain / plain forward" in bench("bench_explain.py", "--repeats", "2")


def test_bench_host_times_explain_beside_a_forward_pass_at_the_7b_depth():
    out = bench("bench_host.py", "--rounds", "2")
    assert "explain / forward from the image:" in out and "trace (lean, explain's)" in out


def test_a_bench_refuses_a_count_below_one_in_one_line():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_host.py"), "--rounds", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "0 is too few: give 1 or more" in done.stderr and "Traceback" not in done.stderr
