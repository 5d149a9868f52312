"""android_bench: LiteRT latency of .tflite models on an Android phone or on this host.

The command line is `tsm-android-bench` (`tsm_keras/cli/android_bench.py`;
`python android_bench/run.py` still works). The
pieces other scripts reuse:

- `parse_benchmark_output(text)`: a `BenchmarkResult` from any known output of
  `benchmark_model` / `litert-benchmark`.
- `benchmark_tflite(path, threads, use_xnnpack, runs, warmup)`: host latency
  with the ai-edge-litert interpreter, in benchmark_model's protocol.
- `BenchError`: the one-line, user-facing failure.

Importing the package loads neither ai-edge-litert nor matplotlib.
"""

from tsm_keras.android_bench.errors import BenchError
from tsm_keras.android_bench.host import benchmark_tflite
from tsm_keras.android_bench.parse import BenchmarkOutputError, BenchmarkResult, parse_benchmark_output
