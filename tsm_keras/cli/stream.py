"""Stream videos frame by frame through an online TSM exported to LiteRT.

    tsm-stream MODEL_online.tflite VIDEO [VIDEO ...] \\
        [--history 12] [--frame-step 1] [--threads 2] [--every 1] [--quiet]

Every frame is decoded, resized, centre-cropped and normalised as the model's
`FILE.tflite.json` sidecar says, and run with the states of the previous
frame (zero at the start of every video). A frame's prediction is the argmax
of the sum of the last --history logit vectors (the authors' demo).
`--frame-step N` feeds every N-th frame, to match the frame spacing of the
training clips (see `tsm_keras.inference.stream`). Each
frame prints its prediction and the interpreter latency; a latency summary
(median, p90, mean) ends each video and the run. Exit status 1 when no video
could be streamed.
"""

import os

from tsm_keras.cli import common


def build_parser():
    description, epilog = common.docstring_help(__doc__)
    parser = common.ArgumentParser("tsm-stream", description, epilog=epilog)
    parser.add_argument("model", help="online .tflite exported by tsm-export --mode online")
    parser.add_argument("videos", nargs="+", help="video files (states reset between videos)")
    parser.add_argument("--history", type=int, default=12, help="logit vectors summed per prediction (12)")
    parser.add_argument("--frame-step", type=int, default=1, metavar="N",
                        help="feed every N-th frame, to match the frame spacing of the training clips (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="LiteRT CPU threads")
    parser.add_argument("--every", type=int, default=1, help="print every N-th frame (default every frame)")
    parser.add_argument("--quiet", action="store_true", help="only the per-video and final summaries")
    return parser


def format_latency(title, latencies_ms):
    from tsm_keras.benchmarking import latency_stats

    stats = latency_stats(latencies_ms)
    return (f"{title}: {stats['count']} frames, latency median {stats['median']:.2f} ms, "
            f"p90 {stats['p90']:.2f} ms, mean {stats['avg']:.2f} ms")


def stream_video(stream, video, args):
    """Prints the frames of one video; returns its final label and latencies."""
    latencies, last = [], None
    for result in stream.run_video(video, frame_step=args.frame_step):
        latencies.append(result.latency_ms)
        last = result
        if not args.quiet and result.index % args.every == 0:
            print(f"frame {result.index:5d}  {stream.labels[result.label]:<32s} "
                  f"score {result.score:8.3f}  {result.latency_ms:7.2f} ms")
    return (None if last is None else stream.labels[last.label]), latencies


def run(args):
    if not os.path.isfile(args.model):
        raise common.UsageError(f"{args.model}: no such file")
    if args.every < 1:
        raise common.UsageError(f"--every must be >= 1, got {args.every}")
    if args.frame_step < 1:
        raise common.UsageError(f"--frame-step must be >= 1, got {args.frame_step}")
    if args.history < 1:
        raise common.UsageError(f"--history must be >= 1, got {args.history}")
    from tsm_keras.data import DataError
    from tsm_keras.inference.stream import OnlineStream

    stream = OnlineStream(args.model, history=args.history, num_threads=args.threads)
    all_latencies, failed, predictions = [], [], {}
    for video in args.videos:
        print(f"== {video}")
        try:
            label, latencies = stream_video(stream, video, args)
        except DataError as error:
            print(f"skipped: {error}")
            failed.append(video)
            continue
        if label is None:
            print("skipped: no frames")
            failed.append(video)
            continue
        predictions[video] = label
        all_latencies += latencies
        print(f"final prediction: {label}")
        print(format_latency("latency", latencies))
    if all_latencies:
        print(format_latency(f"all {len(predictions)} video(s)", all_latencies))
    if failed:
        print(f"{len(failed)} video(s) could not be read: {', '.join(failed)}")
    if not predictions:
        raise RuntimeError("no video could be streamed")


def main(argv=None):
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
