"""benchmarks/runtime.py's real-size config path, run at a tiny size (a GPU session runs it at full size)."""
from __future__ import annotations

import json

import pytest

TINY = ["num_layers=1", "num_attention_heads=2", "attention_head_dim=8", "ffn_dim=16", "text_dim=16", "text_len=4",
        "height=32", "width=32", "num_frames=5"]


@pytest.fixture(scope="module")
def runtime_script(benchmark_script):
    return benchmark_script("runtime")


def test_real_size_config_is_wan_1_3b(runtime_script):
    config = runtime_script.model_config("wan2.1-1.3b", [])
    assert config == {"num_layers": 30, "num_attention_heads": 12, "attention_head_dim": 128, "ffn_dim": 8960,
                      "text_dim": 4096, "text_len": 512, "height": 480, "width": 832, "num_frames": 81,
                      "rope_max_seq_len": 1024, "dtype": "bfloat16"}
    assert "32760 tokens" in runtime_script.describe(config)
    with pytest.raises(ValueError, match="num_blocks"):
        runtime_script.model_config("wan2.1-1.3b", ["num_blocks=3"])


def test_the_config_path_runs_at_a_tiny_size(runtime_script, tmp_path, one_thread):
    out = tmp_path / "runtime.json"
    args = ["--config", "wan2.1-1.3b", *(x for o in TINY for x in ("--override", o)), "--device", "cpu", "--cfg",
            "--steps", "9", "--rounds", "2", "--overhead-quads", "0", "--hook-steps", "3", "--json", str(out)]
    res = runtime_script.main(args)
    assert json.loads(out.read_text())["setup"]["config"]["dtype"] == "bfloat16"
    assert res["setup"]["device"] == "cpu" and res["setup"]["config"]["num_layers"] == 1
    wall = res["results"]["wall"]
    variants = {row["variant"]: row for row in wall["rows"]}
    assert set(variants) == {"lemica B=9", "lemica B=4", "lemica B=3", "extrapolate B=3", "mean-velocity:1 B=3",
                             "mean-velocity:3 B=3"}
    assert variants["mean-velocity:3 B=3"]["rules"] == ["mean-velocity:1", "mean-velocity:3"]  # k=3 needs i >= 2
    assert variants["extrapolate B=3"]["rules"] == ["extrapolate", "residual"]
    assert [f["rule"] for f in wall["fill_rules"]] == ["residual", "extrapolate", "mean-velocity:1", "mean-velocity:3"]
    assert all(f["filled_step_ms"] > 0 and f["filled_over_computed"] < 1 for f in wall["fill_rules"])
    assert all(f["speedup"] > 0 for f in wall["fill_rules"])
