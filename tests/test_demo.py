"""`make demo`'s job end to end, at a small size: calibrate → plan → generate → table, GIF and plots on disk."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def test_demo_runs_the_whole_loop_and_lemica_beats_the_baselines(tmp_path):
    out = tmp_path / "demo_out"
    cmd = [sys.executable, "-m", "lemica.demo", "--out", str(out), "--calibration-prompts", "1", "--max-skip", "4",
           "--heldout-prompts", "2", "--threads", "1"]
    subprocess.run(cmd, check=True, env=ENV, timeout=600, capture_output=True)
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(rows) == {"vanilla", "lemica 2x", "uniform B=15", "15 steps", "lemica 3x", "uniform B=10", "10 steps"}
    for lemica_row, budget in (("lemica 2x", 15), ("lemica 3x", 10)):
        assert rows[lemica_row]["full_steps"] == budget
        for baseline in (f"uniform B={budget}", f"{budget} steps"):  # same full steps, the embedded model
            assert rows[lemica_row]["psnr"] > rows[baseline]["psnr"], (lemica_row, baseline)
            assert rows[lemica_row]["lpips"] < rows[baseline]["lpips"], (lemica_row, baseline)
    for name in ("graph.json", "schedule_2x.json", "schedule_3x.json", "side_by_side.gif"):
        assert (out / name).stat().st_size > 0, name
    assert sorted((out / "calibration.work").glob("sample_*.json"))  # resumable calibration kept
