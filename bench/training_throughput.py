"""Training throughput (clips/s) and peak memory of TSM models, per batch size.

Each (backbone, batch size) configuration is trained by two engines, the
project's and the PyTorch reference, each run in its own fresh subprocess so
that the peak resident set size (`ru_maxrss`) is that run's alone:

- `tsm_keras`: the project's step, built exactly as `train/fit.py` builds it
  (`tsm_keras.training.trainer.build_model`, `build_optimizer`,
  `make_train_step`: forward, cross-entropy, gradients, `GroupedSGD` with the
  TSM parameter groups, weight decay and gradient clipping by global norm, the
  warmup learning-rate schedule) on the default (one-device) strategy, fed one
  fixed random batch from a repeated `tf.data` dataset (the input pipeline is
  measured by `bench/input_pipeline.py`);
- `pytorch`: the MMAction2-identical reference network of
  `tests/torch_reference.py` in train mode with MMAction2's `TSMHead` (dropout
  0.5, linear classifier, averaged consensus), cross-entropy, backward,
  `clip_grad_norm_(params, 20)` and `torch.optim.SGD(lr=0.01, momentum=0.9,
  weight_decay=1e-4)` on one fixed random `(B, T, 3, H, W)` batch.

Both engines use `--threads` intra-op threads. Each run takes `--warmup`
untimed steps (the first traces the graph), then times `--steps` steps;
clips/s is the batch over the median step. The engines alternate (tsm_keras,
pytorch, tsm_keras, pytorch, ... for `--rounds` rounds) so that a noisy
neighbour slows both; each engine keeps its best round (clips/s and that run's
peak RSS). The goal: tsm_keras >= 1.5x the reference's clips/s at no more peak
RSS, at every batch. The JSON records every round with the load average at its
start and its RSS before training (the peak once the runtime, model, optimizer
and batch exist, before the first step); tsm_keras rounds also record the peak
of TensorFlow's allocator statistics, the most its live tensors took at once
(the RSS also counts the free space its pool keeps).

    python bench/training_throughput.py [--configs mobilenet_v2:1,4,8 resnet50:1,4,8] [--engines tsm_keras pytorch]
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import RESULTS_DIR, print_table, summarize, write_json  # noqa: E402
from bench.report import TRAINING_MEMORY_GOAL, TRAINING_SPEED_GOAL, command_line  # noqa: E402

DEFAULT_CONFIGS = ("mobilenet_v2:1,4,8", "resnet50:1,4,8")
ENGINES = ("tsm_keras", "pytorch")
RESULT_MARKER = "TRAINING_THROUGHPUT_RESULT "
STEP_DESCRIPTION = (
    "tsm_keras: tsm_keras.training.trainer.make_train_step (the train/fit.py step): GroupedSGD with the TSM "
    "parameter groups, weight decay 1e-4, momentum 0.9, global-norm clipping at 20, warmup schedule; default "
    "strategy, float32. pytorch: the MMAction2-identical network of tests/torch_reference.py in train mode, "
    "TSMHead (dropout 0.5, fc_cls, average consensus), cross-entropy, clip_grad_norm_ 20, SGD lr 0.01, "
    "momentum 0.9, weight decay 1e-4; float32. Same intra-op thread count; best of the alternated rounds per engine"
)
# MMAction2's TSMHead dropout (docs/reference.md#head-and-consensus), as `TSMSpec.dropout`.
TORCH_HEAD_DROPOUT = 0.5
# Backbone -> (builder of the reference backbone for T segments, feature dimension).
TORCH_BACKBONES = {
    "mobilenet_v2": (lambda ref, segments: ref.MMMobileNetV2TSM(num_segments=segments), 1280),
    "resnet50": (lambda ref, segments: ref.MMResNetTSM(50, num_segments=segments), 2048),
    "resnet101": (lambda ref, segments: ref.MMResNetTSM(101, num_segments=segments), 2048),
}


def parse_configuration(text):
    """`"resnet50:1,2,4"` -> `("resnet50", [1, 2, 4])`."""
    backbone, separator, batches = text.partition(":")
    try:
        batch_sizes = [int(value) for value in batches.split(",")] if separator else []
    except ValueError:
        batch_sizes = []
    if not backbone or not batch_sizes or min(batch_sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected BACKBONE:B1,B2,... with batch sizes >= 1, got {text!r}")
    return backbone, batch_sizes


def training_config(backbone, batch_size, num_segments, size, num_classes, precision="float32"):
    """The validated training `Config` of one configuration (MMAction2 recipe defaults)."""
    from tsm_keras.training import Config

    return Config.from_dict({
        "model": {"backbone": backbone, "num_classes": num_classes, "layout": "torch"},
        # The data section only sets the clip shape: the benchmark feeds its own batch,
        # the list is never read.
        "data": {"source": "video", "train_list": "unused.txt", "num_clips": num_segments, "crop_size": size},
        "train": {"batch_per_replica": batch_size, "seed": 0, "precision": precision},
    })


def peak_rss_mib():
    """Peak resident set size of this process so far, MiB (`ru_maxrss` is KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def tsm_keras_step(backbone, batch_size, num_segments, size, num_classes, threads, precision="float32"):
    """The train/fit.py step on a fixed random batch: `(step() -> loss, parameter count)`.

    `precision` is `train.precision` (`bench/bfloat16.py` compares float32 and bfloat16).
    """
    import keras
    import tensorflow as tf

    from tsm_keras.models.precision import precision_scope
    from tsm_keras.training.schedule import build_schedule
    from tsm_keras.training.trainer import build_model, build_optimizer, make_train_step

    tf.config.threading.set_intra_op_parallelism_threads(threads)  # before the runtime starts
    config = training_config(backbone, batch_size, num_segments, size, num_classes, precision)
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    with precision_scope(precision):
        model = build_model(config)
    schedule = build_schedule(config, config.optimizer.lr, steps_per_epoch=1000)
    optimizer = build_optimizer(config, model, schedule)
    train_step = make_train_step(model, optimizer, strategy, global_batch=batch_size)

    clips = tf.random.normal((batch_size, num_segments, size, size, 3), seed=0)
    labels = tf.random.uniform((batch_size,), maxval=num_classes, dtype=tf.int32, seed=0)
    iterator = iter(tf.data.Dataset.from_tensors((clips, labels)).repeat())
    return (lambda: float(train_step(iterator)[0])), model.count_params()


def reference_network(backbone, num_segments, num_classes, threads):
    """The PyTorch reference TSM (`{"backbone", "head"}`), with torch's threads and seed set.

    The backbone is `tests/torch_reference.py`'s (MMAction2's architecture),
    the head MMAction2's TSMHead (dropout, linear); `reference_logits` runs it.
    """
    import torch
    from torch import nn

    from tests import torch_reference as ref

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    build_backbone, feature_dim = TORCH_BACKBONES[backbone]
    return nn.ModuleDict({
        "backbone": build_backbone(ref, num_segments),
        "head": nn.Sequential(nn.Dropout(TORCH_HEAD_DROPOUT), nn.Linear(feature_dim, num_classes)),
    })


def reference_logits(network, clips):
    """Clip logits of a `reference_network` for clips `(N, T, 3, H, W)`."""
    from tests import torch_reference as ref

    return ref.clip_forward(network["backbone"], network["head"], clips)


def pytorch_step(backbone, batch_size, num_segments, size, num_classes, threads):
    """MMAction2's TSM training step on the reference network: `(step() -> loss, parameter count)`."""
    import torch
    from torch import nn

    network = reference_network(backbone, num_segments, num_classes, threads).train()
    parameters = list(network.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=1e-4)
    clips = torch.randn(batch_size, num_segments, 3, size, size)
    labels = torch.randint(num_classes, (batch_size,))

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        logits = reference_logits(network, clips)
        loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 20.0)
        optimizer.step()
        return loss.item()

    # Like Keras' `count_params`: the BatchNorm moving statistics count (not the integer step counters).
    return train_step, sum(value.numel() for value in network.state_dict().values() if value.is_floating_point())


BUILDERS = {"tsm_keras": tsm_keras_step, "pytorch": pytorch_step}


def resident_mib(field):
    """`RssAnon` (the process's own data) or `RssFile` (mapped files: shared libraries) now, MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def allocator_peak_mib(engine):
    """The most memory the engine's tensors held at once so far, MiB, where its allocator counts it.

    TensorFlow's CPU allocator (oneDNN's, a BFC pool) keeps statistics; its
    peak is the live tensors' high-water mark, while the anonymous memory
    also holds the pool's free space. PyTorch's CPU allocator keeps none: None.
    """
    if engine != "tsm_keras":
        return None
    import tensorflow as tf

    try:
        return tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2.0**20
    except ValueError:  # an allocator without statistics (oneDNN off)
        return None


class PeakAnonymousMemory:
    """Samples `RssAnon` every `interval` seconds on a thread; `.peak` is the largest sample (MiB).

    Both engines release the GIL inside their kernels, so the sampler runs
    during the step; a peak shorter than the interval can be missed.
    """

    def __init__(self, interval=0.01):
        import threading

        self.interval = interval
        self.peak = resident_mib("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, resident_mib("RssAnon"))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()


def measure_configuration(engine, backbone, batch_size, num_segments, size, num_classes, threads, steps, warmup):
    """Runs in the subprocess: builds `engine`'s training step and times it.

    Besides wall time, records the CPU time of each step (user + system, all
    threads): CPU time over wall time is how many of the cores the step kept
    busy, and CPU time per clip is its work, whatever the load.
    """
    train_step, params = BUILDERS[engine](backbone, batch_size, num_segments, size, num_classes, threads)
    built_rss = peak_rss_mib()

    with PeakAnonymousMemory() as anonymous:
        start = time.perf_counter()
        for _ in range(warmup):
            loss = train_step()
        warmup_seconds = time.perf_counter() - start
        seconds, cpu_seconds = [], []
        for _ in range(steps):
            start, cpu_start = time.perf_counter(), sum(os.times()[:2])
            loss = train_step()
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(sum(os.times()[:2]) - cpu_start)
    median = seconds.index(sorted(seconds)[(len(seconds) - 1) // 2])
    return {
        "status": "ok",
        "step_seconds": seconds,
        "step": summarize(seconds),
        "clips_per_s": batch_size / (summarize(seconds)["median_ms"] / 1000.0),
        "warmup_seconds": warmup_seconds,
        "loss": loss,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_training_mib": built_rss,
        "peak_anonymous_mib": anonymous.peak,
        "allocator_peak_mib": allocator_peak_mib(engine),
        "file_rss_mib": resident_mib("RssFile"),
        "cpu_seconds": cpu_seconds,
        "cpu_per_clip_s": cpu_seconds[median] / batch_size,
        "cores_busy": cpu_seconds[median] / seconds[median],
        "params": params,
    }


def run_configuration(engine, backbone, batch_size, args):
    """Runs one engine on one configuration in a fresh Python process; returns its result dict."""
    request = {"engine": engine, "backbone": backbone, "batch_size": batch_size, "num_segments": args.num_segments,
               "size": args.size, "num_classes": args.num_classes, "threads": args.threads, "steps": args.steps,
               "warmup": args.warmup}
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(request)]
    record = {"load_average": [round(value, 2) for value in os.getloadavg()]}
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**record, "status": "failed", "error": f"timed out after {args.timeout} s"}
    record["wall_seconds"] = time.perf_counter() - start
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return {**json.loads(line[len(RESULT_MARKER):]), **record}
    # Killed by the kernel's OOM killer (-9) or an exception: keep the reason.
    tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
    return {**record, "status": "failed", "error": f"exit code {completed.returncode}: {tail}"}


def best_round(rounds):
    """An engine's figures: its fastest successful round (clips/s and that run's peak RSS), plus every round."""
    ok = [index for index, result in enumerate(rounds) if result["status"] == "ok"]
    if not ok:
        return {"status": "failed", "error": rounds[-1]["error"], "rounds": rounds}
    best = max(ok, key=lambda index: rounds[index]["clips_per_s"])
    return {"status": "ok", "clips_per_s": rounds[best]["clips_per_s"], "peak_rss_mib": rounds[best]["peak_rss_mib"],
            "best_round": best, "rounds": rounds}


def compare(engines):
    """tsm_keras over pytorch: `{"ratio": clips/s ratio, "memory_ratio": peak RSS ratio}`, None when not both ran."""
    ours, reference = engines.get("tsm_keras"), engines.get("pytorch")
    if not (ours and reference and ours["status"] == reference["status"] == "ok"):
        return {"ratio": None, "memory_ratio": None}
    return {"ratio": ours["clips_per_s"] / reference["clips_per_s"],
            "memory_ratio": ours["peak_rss_mib"] / reference["peak_rss_mib"]}


def table_row(label, batch_size, result):
    """One table row: both engines' clips/s and peak RSS (GiB), the ratios, the errors."""
    engines = [result.get(engine) for engine in ENGINES]
    clips = [engine["clips_per_s"] if engine and engine["status"] == "ok" else "-" for engine in engines]
    rss = [engine["peak_rss_mib"] / 1024.0 if engine and engine["status"] == "ok" else "-" for engine in engines]
    ratio = "-" if result["ratio"] is None else f"{result['ratio']:.2f}x"
    memory = "-" if result["memory_ratio"] is None else f"{result['memory_ratio']:.2f}x"
    errors = [f"{name}: {engine['error']}" for name, engine in zip(ENGINES, engines)
              if engine and engine["status"] != "ok"]
    return [label, batch_size, *clips, ratio, *rss, memory, "; ".join(errors) or "ok"]


COLUMNS = ["model", "batch", "tsm_keras clips/s", "pytorch clips/s", f"clips/s ratio (>= {TRAINING_SPEED_GOAL:g}x)",
           "tsm_keras peak RSS GiB", "pytorch peak RSS GiB", f"peak RSS ratio (<= {TRAINING_MEMORY_GOAL:g}x)",
           "status"]


def work_and_memory_notes(results, engines):
    """Bullets per backbone and engine: CPU s per clip and cores busy per batch (what explains
    clips/s changing with the batch), and the peak RSS split into the engine's own data (peak
    anonymous memory, sampled) and its mapped files (shared libraries)."""
    notes = []
    for backbone, batches in results.items():
        for engine in engines:
            best = {batch: result[engine]["rounds"][result[engine]["best_round"]] for batch, result in batches.items()
                    if engine in result and result[engine]["status"] == "ok"}
            runs = {batch: run for batch, run in best.items() if "cpu_per_clip_s" in run}
            if not runs:
                continue
            work = ", ".join(f"{run['cpu_per_clip_s']:.2f} s on {run['cores_busy']:.2f} cores (batch {batch})"
                             for batch, run in runs.items())
            memory = ", ".join(f"{run['peak_anonymous_mib'] / 1024:.2f} (batch {batch})" for batch, run in runs.items())
            libraries = max(run["file_rss_mib"] for run in runs.values()) / 1024
            live = ", ".join(f"{run['allocator_peak_mib'] / 1024:.2f} (batch {batch})" for batch, run in runs.items()
                             if run.get("allocator_peak_mib") is not None)
            live = f"; of that anonymous memory, the tensors alive at once took at most GiB {live}" if live else ""
            notes.append(f"TSM-{backbone}, {engine}: CPU time per clip {work}; peak anonymous memory GiB {memory}, "
                         f"plus {libraries:.2f} GiB of mapped files (shared libraries) in the peak RSS{live}.")
    return notes


def worker(request_text):
    request = json.loads(request_text)
    result = measure_configuration(**request)
    print(RESULT_MARKER + json.dumps(result), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=parse_configuration,
                        default=[parse_configuration(text) for text in DEFAULT_CONFIGS],
                        metavar="BACKBONE:B1,B2", help="backbones and batch sizes (default: %(default)s)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES),
                        help="engines to run (default: both, alternated)")
    parser.add_argument("--num-segments", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="intra-op threads of both engines (default: the CPU count, TensorFlow's default)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (the first traces the graph)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per engine and configuration, alternated")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "training_throughput.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    for name in ("threads", "steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: expected an integer >= 1, got {getattr(args, name)}")
    if "pytorch" in args.engines:
        unknown = sorted({backbone for backbone, _ in args.configs} - set(TORCH_BACKBONES))
        if unknown:
            parser.error(f"--configs: the pytorch engine has no reference network for {', '.join(unknown)} "
                         f"(expected one of {', '.join(TORCH_BACKBONES)}; or --engines tsm_keras)")
    engines = [engine for engine in ENGINES if engine in args.engines]

    results = {}
    rows = []
    for backbone, batch_sizes in args.configs:
        results[backbone] = {}
        label = f"TSM-{backbone} x{args.num_segments}"
        for batch_size in batch_sizes:
            rounds = {engine: [] for engine in engines}
            for _ in range(args.rounds):
                for engine in engines:
                    run = run_configuration(engine, backbone, batch_size, args)
                    rounds[engine].append(run)
                    figures = (f"{run['clips_per_s']:.2f} clips/s, step {run['step']['median_ms'] / 1000:.2f} s, "
                               f"peak RSS {run['peak_rss_mib']:.0f} MiB" if run["status"] == "ok" else run["error"])
                    print(f"{label} batch {batch_size}, {engine}: {figures} (load {run['load_average'][0]})",
                          flush=True)
            result = {engine: best_round(engine_rounds) for engine, engine_rounds in rounds.items()}
            result.update(compare(result))
            results[backbone][str(batch_size)] = result
            rows.append(table_row(label, batch_size, result))
    print_table(f"Training throughput, {args.size}x{args.size} x {args.num_segments} frames, {args.threads} threads",
                COLUMNS, rows)
    args_record = {key: value for key, value in vars(args).items() if key != "worker"}
    args_record["configs"] = [f"{backbone}:{','.join(map(str, sizes))}" for backbone, sizes in args.configs]
    args_record["engines"] = engines
    write_json(args.out, {"benchmark": "training_throughput", "command": command_line(),
                          "args": args_record, "step": STEP_DESCRIPTION, "columns": COLUMNS, "rows": rows,
                          "results": results, "notes": work_and_memory_notes(results, engines)})


if __name__ == "__main__":
    main()
