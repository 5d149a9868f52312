"""bench/training_throughput.py: the PyTorch reference step and the per-engine bookkeeping (no timing)."""

import json
import math

import pytest

from bench import report
from bench.training_throughput import (
    COLUMNS,
    TORCH_BACKBONES,
    TORCH_HEAD_DROPOUT,
    best_round,
    compare,
    main,
    table_row,
    training_config,
)


def run(clips_per_s, peak_rss_mib):
    return {"status": "ok", "clips_per_s": clips_per_s, "peak_rss_mib": peak_rss_mib}


def test_each_engine_keeps_its_fastest_round_and_that_rounds_memory():
    rounds = [run(1.0, 900.0), {"status": "failed", "error": "exit code -9: killed"}, run(1.2, 1000.0)]
    assert best_round(rounds) == {"status": "ok", "clips_per_s": 1.2, "peak_rss_mib": 1000.0, "best_round": 2,
                                  "rounds": rounds}
    failed = [{"status": "failed", "error": "timed out after 900 s"}]
    assert best_round(failed) == {"status": "failed", "error": "timed out after 900 s", "rounds": failed}


def test_ratios_are_tsm_keras_over_pytorch_and_need_both():
    ours, reference = best_round([run(1.5, 1536.0)]), best_round([run(0.5, 2048.0)])
    assert compare({"tsm_keras": ours, "pytorch": reference}) == {"ratio": 3.0, "memory_ratio": 0.75}
    assert compare({"tsm_keras": ours}) == {"ratio": None, "memory_ratio": None}
    failed = best_round([{"status": "failed", "error": "exit code 1: boom"}])
    result = {"tsm_keras": ours, "pytorch": failed, **compare({"tsm_keras": ours, "pytorch": failed})}
    assert result["ratio"] is None
    row = table_row("TSM-resnet50 x8", 4, result)
    assert len(row) == len(COLUMNS)
    assert row == ["TSM-resnet50 x8", 4, 1.5, "-", "-", 1.5, "-", "-", "pytorch: exit code 1: boom"]


def test_the_reference_head_drops_out_as_the_project_model():
    config = training_config("mobilenet_v2", batch_size=1, num_segments=8, size=224, num_classes=400)
    assert config.model_spec().dropout == TORCH_HEAD_DROPOUT


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_the_reference_step_trains_the_same_sized_network(backbone):
    torch = pytest.importorskip("torch")
    from bench.training_throughput import pytorch_step
    from tsm_keras.training.trainer import build_model

    assert backbone in TORCH_BACKBONES
    threads = torch.get_num_threads()
    step, params = pytorch_step(backbone, batch_size=2, num_segments=2, size=32, num_classes=5, threads=threads)
    # Same weights and BatchNorm statistics as the project's network of the same configuration.
    model = build_model(training_config(backbone, batch_size=2, num_segments=2, size=32, num_classes=5))
    assert params == model.count_params()
    # Cross-entropy of 5 classes starts near log(5) and the step changes the weights (the loss moves).
    first, second = step(), step()
    assert math.isfinite(first) and math.isfinite(second) and first != second
    assert 0.0 < first < 5 * math.log(5)


@pytest.mark.slow
def test_both_engines_run_alternately_and_the_report_judges_them(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "results" / "training_throughput.json"
    main(["--configs", "mobilenet_v2:1", "--num-segments", "2", "--size", "32", "--num-classes", "5",
          "--steps", "1", "--warmup", "1", "--rounds", "2", "--threads", "1", "--out", str(out)])
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("TSM-mobilenet_v2 x2 batch 1")]
    assert [line.split(",")[1].split(":")[0].strip() for line in printed] == ["tsm_keras", "pytorch"] * 2
    payload = json.loads(out.read_text())
    result = payload["results"]["mobilenet_v2"]["1"]
    for engine in ("tsm_keras", "pytorch"):
        rounds = result[engine]["rounds"]
        assert [entry["status"] for entry in rounds] == ["ok", "ok"]
        assert result[engine]["clips_per_s"] == max(entry["clips_per_s"] for entry in rounds)
        assert result[engine]["peak_rss_mib"] == rounds[result[engine]["best_round"]]["peak_rss_mib"]
    # TensorFlow's allocator counts its live tensors: more than the model's weights, at most the
    # process's anonymous memory. PyTorch's CPU allocator keeps no statistics.
    for entry in result["tsm_keras"]["rounds"]:
        weights_mib = entry["params"] * 4 / 2**20
        assert weights_mib < entry["allocator_peak_mib"] <= entry["peak_anonymous_mib"]
    assert all(entry["allocator_peak_mib"] is None for entry in result["pytorch"]["rounds"])
    assert any("the tensors alive at once took at most GiB" in note for note in payload["notes"])
    assert result["ratio"] == result["tsm_keras"]["clips_per_s"] / result["pytorch"]["clips_per_s"]
    assert result["tsm_keras"]["rounds"][0]["params"] == result["pytorch"]["rounds"][0]["params"]
    assert payload["args"]["engines"] == ["tsm_keras", "pytorch"] and payload["columns"] == COLUMNS
    goals = {goal.name: goal for goal in report.training_goals(payload)}
    goal = goals["training clips/s vs PyTorch reference, TSM-mobilenet_v2 x2, batch 1"]
    assert goal.measured == f"{result['ratio']:.2f}x, peak RSS {result['memory_ratio']:.2f}x"
