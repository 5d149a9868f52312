"""bench/report.py: docs/benchmarks.md from sample benchmark JSON (no timing)."""

import argparse
import json
import os
import pathlib

import pytest

from tsm_keras.android_bench import records
from tsm_keras.android_bench.report import write_record
from bench import report
from bench.training_throughput import parse_configuration, training_config

MACHINE = {"date": "2026-01-01T00:00:00+00:00", "platform": "Linux-x86_64", "processor": "Test CPU",
           "cpu_count": 2, "python": "3.11.7", "tensorflow": "2.21.0", "keras": "3.15.0"}


def stats(median_ms):
    return {"median_ms": median_ms, "p90_ms": median_ms, "min_ms": median_ms, "runs": 5}


def shift_overhead_payload():
    # resnet50: 103 / 100 -> +3.0% (met, the goal is inclusive); 104.5 / 100 -> +4.5% (not met).
    return {
        "benchmark": "shift_overhead",
        "machine": MACHINE,
        "args": {"backbones": ["resnet50"], "num_segments": 8, "runs": 20, "engines": ["tf.function", "litert"],
                 "out": os.path.join(report.REPO_ROOT, "bench", "results", "shift_overhead.json")},
        "columns": ["model", "engine", "TSN ms (median)", "TSM ms (median)", "shift overhead", "<= 3%"],
        "rows": [["resnet50 x8", "tf.function", 100.0, 103.0, "+3.0%", "yes"],
                 ["resnet50 x8", "litert", 100.0, 104.5, "+4.5%", "no"]],
        "results": {"resnet50": {
            "tf.function": {"TSM": stats(103.0), "TSN": stats(100.0), "overhead": 0.03, "goal_met": True},
            "litert": {"TSM": stats(104.5), "TSN": stats(100.0), "overhead": 0.045, "goal_met": False},
        }},
    }


def online_latency_payload():
    return {
        "benchmark": "online_latency",
        "machine": MACHINE,
        "args": {"size": 224, "threads": [1, 2]},
        "columns": ["model", "quant", "size MB", "1T median ms", "1T p90 ms", "2T median ms", "2T p90 ms"],
        "rows": [["TSM / MobileNetV2", "int8", 1.0, "1.050x", "", "1.200x", ""]],
        "results": {"int8": {"ratio_threads_1": 1.05, "ratio_threads_2": 1.2},
                    "fp32": {"ratio_threads_1": 1.5}},
    }


def input_pipeline_payload():
    # No columns / rows: the report falls back to the recorded figures.
    return {
        "benchmark": "input_pipeline",
        "machine": MACHINE,
        "videos": ["bikes.mp4", "bigbuckbunny.mp4"],
        "clips_per_second": {"pipeline": {"median": 12.5, "rounds": [12.0, 12.5, 13.0]}},
        "speedup_vs_baseline": 2.5,
    }


def cli_startup_payload():
    # The slowest tsm-* command decides (1.2 s > 1 s); the `import tensorflow` reference row does not count.
    return {
        "benchmark": "cli_startup",
        "machine": MACHINE,
        "args": {"runs": 5},
        "columns": ["command", "median ms", "slowest ms", "< 1 s"],
        "rows": [["tsm-train --help", 400.0, 450.0, "yes"], ["tsm-export --help", 1200.0, 1300.0, "no"],
                 ["import tensorflow", 9000.0, 9500.0, "(reference)"]],
        "results": {"tsm-train": stats(400.0), "tsm-export": stats(1200.0), "import tensorflow": stats(9000.0)},
        "goal_s": 1.0,
    }


def bfloat16_payload():
    # top-1 99.0% in bfloat16 vs 100.0% in float32: -1.0 point (met, the goal is inclusive).
    return {
        "benchmark": "bfloat16",
        "machine": MACHINE,
        "args": {"backbones": ["resnet50"], "runs": 5},
        "columns": ["model", "workload", "batch", "float32 ms (median)", "bfloat16 ms (median)", "bfloat16 speed-up"],
        "rows": [["TSM-resnet50 x8 224", "inference", 1, 400.0, 250.0, 1.6]],
        "results": {"resnet50": {"train batch 1": {"float32": stats(2000.0), "bfloat16": stats(1600.0),
                                                   "speedup": 1.25},
                                 "inference batch 1": {"float32": stats(400.0), "bfloat16": stats(250.0),
                                                       "speedup": 1.6}}},
        "accuracy": {"float32": {"top1": 1.0}, "bfloat16": {"top1": 0.99}, "top1_difference_points": -1.0},
    }


def training_payload():
    # Batch 1: 1.5x at 0.9x the peak RSS (met); batch 2: 2x faster but 1.25x the memory (not met);
    # batch 4: the reference failed (not measured).
    def engine(clips_per_s, peak_rss_mib):
        return {"status": "ok", "clips_per_s": clips_per_s, "peak_rss_mib": peak_rss_mib, "best_round": 0,
                "rounds": [{"status": "ok", "clips_per_s": clips_per_s, "peak_rss_mib": peak_rss_mib}]}

    failed = {"status": "failed", "error": "exit code -9: killed", "rounds": []}
    return {
        "benchmark": "training_throughput", "machine": MACHINE,
        "command": "python bench/training_throughput.py --configs resnet50:1,2,4",
        "args": {"configs": ["resnet50:1,2,4"], "engines": ["tsm_keras", "pytorch"], "num_segments": 8},
        "columns": ["model", "batch", "tsm_keras clips/s", "pytorch clips/s", "clips/s ratio (>= 1.5x)",
                    "tsm_keras peak RSS GiB", "pytorch peak RSS GiB", "peak RSS ratio (<= 1x)", "status"],
        "rows": [["TSM-resnet50 x8", 1, 0.75, 0.5, "1.50x", 1.8, 2.0, "0.90x", "ok"]],
        "results": {"resnet50": {
            "1": {"tsm_keras": engine(0.75, 1843.2), "pytorch": engine(0.5, 2048.0),
                  "ratio": 0.75 / 0.5, "memory_ratio": 1843.2 / 2048.0},
            "2": {"tsm_keras": engine(1.0, 3840.0), "pytorch": engine(0.5, 3072.0),
                  "ratio": 2.0, "memory_ratio": 1.25},
            "4": {"tsm_keras": engine(0.5, 6144.0), "pytorch": failed, "ratio": None, "memory_ratio": None},
        }},
    }


def write_results(directory, *payloads):
    directory.mkdir(parents=True, exist_ok=True)
    for payload in payloads:
        (directory / f"{payload['benchmark']}.json").write_text(json.dumps(payload))
    return directory


def render(results_dir, tmp_path):
    out = tmp_path / "benchmarks.md"
    assert report.main(["--results-dir", str(results_dir), "--out", str(out)]) == 0
    return out.read_text()


def goal_rows(text):
    """`{goal name: (measured, verdict)}` of the Goals table."""
    section = text.split("## Goals", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("goal", "---"):
            rows[cells[0]] = (cells[2], cells[3])
    return rows


def test_goals_are_judged_from_the_recorded_figures(tmp_path):
    results = write_results(tmp_path / "results", shift_overhead_payload(), online_latency_payload(),
                            input_pipeline_payload(), cli_startup_payload(), bfloat16_payload())
    text = render(results, tmp_path)
    goals = goal_rows(text)
    assert goals == {
        "quickstart top-1 bf16 within 1 point of float32": ("99.0% vs 100.0% (-1.0 points)", "met"),
        "tsm-* --help wall time (median), slowest command (tsm-export)": ("1.20 s", "**not met**"),
        "shift overhead, resnet50 x8, tf.function": ("+3.0%", "met"),
        "shift overhead, resnet50 x8, litert": ("+4.5%", "**not met**"),
        "online int8 TSM-MobileNetV2 / plain MobileNetV2 per frame, 1 thread": ("1.050x", "met"),
        "online int8 TSM-MobileNetV2 / plain MobileNetV2 per frame, 2 threads": ("1.200x", "**not met**"),
        "input pipeline clips/s over the sequential baseline": ("2.50x", "met"),
        "training clips/s vs PyTorch reference": ("-", "not measured"),
        "offline inference TSM-resnet50 x8, fraction of the float32 matmul peak": ("-", "not measured"),
    }
    assert ("- bf16 speed-up over float32 (median time ratio, >1 = bf16 faster): TSM-resnet50 train batch 1 "
            "1.25x, inference batch 1 1.60x.") in text


def test_training_goals_compare_speed_and_memory_with_the_pytorch_reference(tmp_path):
    text = render(write_results(tmp_path / "results", training_payload()), tmp_path)
    name = "training clips/s vs PyTorch reference, TSM-resnet50 x8, batch"
    assert {goal: row for goal, row in goal_rows(text).items() if goal.startswith("training")} == {
        f"{name} 1": ("1.50x, peak RSS 0.90x", "met"),
        f"{name} 2": ("2.00x, peak RSS 1.25x", "**not met**"),
        f"{name} 4": ("-", "not measured"),
    }
    assert "| training clips/s vs PyTorch reference, TSM-resnet50 x8, batch 1 | >= 1.5x at no more peak RSS |" in text
    section = text.split("## Training throughput and peak memory", 1)[1].split("\n## ", 1)[0]
    assert "| model | batch | tsm_keras clips/s | pytorch clips/s | clips/s ratio (>= 1.5x) |" in section
    assert "| TSM-resnet50 x8 | 1 | 0.75 | 0.5 | 1.50x | 1.8 | 2.0 | 0.90x | ok |" in section
    # Absolute figures per engine; the engine that failed at batch 4 says so.
    assert "- Training TSM-resnet50, tsm_keras: best 1.00 clips/s (batch 2); peak RSS 6.0 GiB at batch 4." in text
    assert ("- Training TSM-resnet50, PyTorch reference: best 0.50 clips/s (batch 1); peak RSS 3.0 GiB at batch 2; "
            "failed at batch 4.") in text


def test_training_run_of_one_engine_is_not_measured_against_the_reference(tmp_path):
    payload = training_payload()
    payload["args"]["engines"] = ["tsm_keras"]
    payload["results"] = {"resnet50": {"1": {"tsm_keras": payload["results"]["resnet50"]["1"]["tsm_keras"],
                                             "ratio": None, "memory_ratio": None}}}
    text = render(write_results(tmp_path / "results", payload), tmp_path)
    assert goal_rows(text)["training clips/s vs PyTorch reference, TSM-resnet50 x8, batch 1"] == ("-", "not measured")
    assert "- Training TSM-resnet50, tsm_keras: best 0.75 clips/s (batch 1); peak RSS 1.8 GiB at batch 1." in text
    assert "PyTorch reference:" not in text


def test_missing_benchmarks_are_reported_not_measured(tmp_path):
    text = render(write_results(tmp_path / "results", input_pipeline_payload()), tmp_path)
    goals = goal_rows(text)
    assert goals["shift overhead"] == ("-", "not measured")
    assert goals["training clips/s vs PyTorch reference"] == ("-", "not measured")
    assert goals["online int8 TSM-MobileNetV2 / plain MobileNetV2 per frame"] == ("-", "not measured")
    assert goals["quickstart top-1 bf16 within 1 point of float32"] == ("-", "not measured")
    assert "No results yet (`bench/results/training_throughput.json` is missing)." in text


def test_sections_hold_table_machine_and_command(tmp_path):
    payload = shift_overhead_payload()
    text = render(write_results(tmp_path / "results", payload), tmp_path)
    section = text.split("## Temporal shift overhead", 1)[1].split("\n## ", 1)[0]
    assert "| model | engine | TSN ms (median) | TSM ms (median) | shift overhead | <= 3% |" in section
    assert "| resnet50 x8 | litert | 100.0 | 104.5 | +4.5% | no |" in section
    assert "Test CPU, 2 cores" in section and "TensorFlow 2.21.0" in section
    # No `command` in the JSON: rebuilt from its args, paths in the repository made relative.
    assert ("- Command: `python bench/shift_overhead.py --backbones resnet50 --num-segments 8 --runs 20 "
            "--engines tf.function litert --out bench/results/shift_overhead.json`") in section


def test_recorded_command_wins_and_figures_fall_back_to_a_table(tmp_path):
    payload = {**input_pipeline_payload(), "command": "python bench/input_pipeline.py --videos 4"}
    section = render(write_results(tmp_path / "results", payload), tmp_path).split("## Input pipeline", 1)[1]
    assert "- Command: `python bench/input_pipeline.py --videos 4`" in section
    assert "| clips_per_second.pipeline.median | 12.5 |" in section
    assert "| clips_per_second.pipeline.rounds | 12, 12.5, 13 |" in section
    assert "| videos | bikes.mp4, bigbuckbunny.mp4 |" in section
    assert "| speedup_vs_baseline | 2.5 |" in section


def test_headline_figures_of_training_and_inference(tmp_path):
    # A training JSON from before the PyTorch comparison (no `engines`): rendered as before, no goal rows.
    training = {
        "benchmark": "training_throughput", "machine": MACHINE, "command": "python bench/training_throughput.py",
        "columns": ["model", "batch"], "rows": [],
        "results": {"resnet50": {
            "1": {"status": "ok", "clips_per_s": 0.5, "peak_rss_mib": 2048.0},
            "2": {"status": "ok", "clips_per_s": 0.75, "peak_rss_mib": 3072.0},
            "4": {"status": "failed", "error": "exit code -9: killed"},
        }},
    }
    # 2 x 4096^3 FLOP in 0.5 s = 274.9 GFLOP/s; 1 clip of 60 GFLOP in 0.5 s = 120 GFLOP/s = 43.7%.
    inference = {
        "benchmark": "inference_efficiency", "machine": MACHINE, "columns": ["workload"], "rows": [],
        "args": {"backbone": "resnet50", "num_segments": 8}, "clip_flop": 60e9,
        "results": {"matmul": {"flop_per_s": 2 * 4096**3 / 0.5},
                    "batch 1": {"batch": 1, "clips_per_s": 2.0, "fraction_of_peak": 120e9 / (2 * 4096**3 / 0.5)}},
    }
    text = render(write_results(tmp_path / "results", training, inference), tmp_path)
    assert ("- Training TSM-resnet50: best 0.75 clips/s (batch 2); peak RSS 3.0 GiB at batch 2; "
            "failed at batch 4.") in text
    assert not any(goal.startswith("training") for goal in goal_rows(text))
    assert ("- Offline inference TSM-resnet50 x8 (60.0 GFLOP a clip) as a fraction of the measured peak "
            "(275 GFLOP/s, float32 matmul): batch 1: 2.00 clips/s = 44%.") in text
    assert goal_rows(text)["offline inference TSM-resnet50 x8, fraction of the float32 matmul peak, batch 1"] == (
        "44%", "**not met**")


def test_inference_goals_compare_with_the_peak_and_the_pytorch_reference(tmp_path):
    peak = 2 * 4096**3 / 0.5
    inference = {
        "benchmark": "inference_efficiency", "machine": MACHINE, "columns": ["workload"], "rows": [],
        "args": {"backbone": "resnet50", "num_segments": 8}, "clip_flop": 60e9,
        "results": {
            "matmul": {"flop_per_s": peak},
            # 4 clips/s x 60 GFLOP = 240 GFLOP/s = 87% of 274.9; 1.70 clips/s = 37%.
            "batch 1": {"batch": 1, "clips_per_s": 4.0, "fraction_of_peak": 240e9 / peak,
                        "speedup_over_reference": 4.0 / 2.5},
            "batch 4": {"batch": 4, "clips_per_s": 1.7, "fraction_of_peak": 102e9 / peak,
                        "speedup_over_reference": 1.7 / 1.25},
            "pytorch batch 1": {"batch": 1, "clips_per_s": 2.5, "fraction_of_peak": 150e9 / peak},
        },
    }
    goals = goal_rows(render(write_results(tmp_path / "results", inference), tmp_path))
    name = "offline inference TSM-resnet50 x8"
    assert {goal: row for goal, row in goals.items() if goal.startswith(name)} == {
        f"{name}, fraction of the float32 matmul peak, batch 1": ("87%", "met"),
        f"{name} clips/s vs PyTorch reference, batch 1": ("1.60x", "met"),
        f"{name}, fraction of the float32 matmul peak, batch 4": ("37%", "**not met**"),
        f"{name} clips/s vs PyTorch reference, batch 4": ("1.36x", "**not met**"),
    }


def test_load_average_is_recorded_and_flagged(tmp_path, monkeypatch):
    results = write_results(tmp_path / "results", shift_overhead_payload())
    for load, moment in (((3.0, 2.0, 1.0), "start"), ((0.5, 0.25, 0.75), "end")):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: load)
        assert report.main(["--results-dir", str(results), "--record-load", "shift_overhead", moment]) == 0
    assert json.loads((results / report.LOAD_FILE).read_text()) == {
        "shift_overhead": {"start": [3.0, 2.0, 1.0], "end": [0.5, 0.25, 0.75]}}
    text = render(results, tmp_path)
    assert "- Load average (1 / 5 / 15 min): 3 / 2 / 1 at the start, 0.5 / 0.25 / 0.75 at the end" in text
    assert "above 1.5 during: shift_overhead" in text


def test_quiet_load_is_not_flagged(tmp_path, monkeypatch):
    results = write_results(tmp_path / "results", shift_overhead_payload())
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    report.main(["--results-dir", str(results), "--record-load", "shift_overhead", "start"])
    assert "shared" not in render(results, tmp_path)


def test_android_host_records_get_their_section(tmp_path):
    results = write_results(tmp_path / "results", shift_overhead_payload())
    android = results / report.ANDROID_HOST_DIR
    android.mkdir()
    model = tmp_path / "tsm_online_int8.tflite"
    model.write_bytes(b"\0" * 8)
    spec = records.RunSpec(model, "xnnpack", threads=2, runs=50, warmup=5)
    target = {**records.empty_target("host"), "name": "host", "soc": "Test CPU"}
    record = records.make_record(spec, target, "interpreter", records.OK,
                                 latency_ms={"avg": 4.5, "median": 4.25, "count": 50})
    write_record(record, android)
    (android / report.ANDROID_COMMAND_FILE).write_text("python android_bench/run.py --host --models m.tflite\n")
    section = render(results, tmp_path).split("## LiteRT on this machine", 1)[1]
    assert "| host (interpreter) | tsm_online_int8.tflite | xnnpack | 2 | 4.50 | 4.25 |" in section
    assert "- Command: `python android_bench/run.py --host --models m.tflite`" in section


def test_unreadable_or_unnamed_json_is_refused_naming_the_file(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "broken.json").write_text("{not json")
    assert report.main(["--results-dir", str(results), "--out", str(tmp_path / "out.md")]) == 2
    assert "broken.json: not a readable JSON file" in capsys.readouterr().err
    (results / "broken.json").write_text(json.dumps({"rows": []}))
    assert report.main(["--results-dir", str(results), "--out", str(tmp_path / "out.md")]) == 2
    assert "broken.json: not a bench result" in capsys.readouterr().err
    assert not (tmp_path / "out.md").exists()


def test_command_line_is_relative_to_the_repository():
    script = os.path.join(report.REPO_ROOT, "bench", "training_throughput.py")
    assert report.command_line([script, "--configs", "resnet50:1,2", "--out", "a b.json"]) == (
        "python bench/training_throughput.py --configs resnet50:1,2 --out 'a b.json'")


def test_training_configurations_parse_and_validate():
    assert parse_configuration("resnet50:1,2,8") == ("resnet50", [1, 2, 8])
    for bad in ("resnet50", "resnet50:", "resnet50:0,2", "resnet50:a", ":4"):
        with pytest.raises(argparse.ArgumentTypeError, match="BACKBONE:B1,B2"):
            parse_configuration(bad)
    config = training_config("mobilenet_v2", batch_size=4, num_segments=8, size=224, num_classes=400)
    spec = config.model_spec()
    assert (spec.backbone, spec.num_segments, spec.input_shape) == ("mobilenet_v2", 8, (224, 224, 3))
    assert config.train.batch_per_replica == 4
    assert config.optimizer.clip_grad_norm == 20.0


def test_the_committed_doc_is_what_the_committed_results_render(tmp_path):
    """docs/benchmarks.md is generated: re-rendering bench/results must give the same text."""
    doc = pathlib.Path(report.DEFAULT_OUT)
    assert doc.is_file() and os.path.isdir(report.RESULTS_DIR), "docs/benchmarks.md and bench/results are committed"
    assert render(pathlib.Path(report.RESULTS_DIR), tmp_path) == doc.read_text()


def test_inference_goals_judge_the_deploy_form_and_show_the_as_built_one(tmp_path):
    peak = 2 * 4096**3 / 0.5
    inference = {
        "benchmark": "inference_efficiency", "machine": MACHINE, "columns": ["workload"], "rows": [],
        "args": {"backbone": "resnet50", "num_segments": 8, "as_built": "yes"}, "clip_flop": 60e9,
        "results": {
            "matmul": {"flop_per_s": peak},
            # deploy form 4.2 clips/s = 252 GFLOP/s = 92%; as built 4.0 clips/s: 4.2 / 4.0 = 1.05x.
            "batch 1": {"batch": 1, "clips_per_s": 4.2, "fraction_of_peak": 252e9 / peak,
                        "speedup_over_as_built": 4.2 / 4.0},
            "as built batch 1": {"batch": 1, "clips_per_s": 4.0, "fraction_of_peak": 240e9 / peak},
        },
    }
    text = render(write_results(tmp_path / "results", inference), tmp_path)
    name = "offline inference TSM-resnet50 x8 (deploy form)"
    assert {goal: row for goal, row in goal_rows(text).items() if goal.startswith("offline")} == {
        f"{name}, fraction of the float32 matmul peak, batch 1": ("92%", "met"),
    }
    assert "batch 1: 4.20 clips/s = 92% (1.05x the as-built form)." in text
