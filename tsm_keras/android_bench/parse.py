"""Parse what the LiteRT / TFLite benchmark tools print.

Three output formats are recognised, in this order:

- `"litert"`: the `BENCHMARK RESULTS` block of LiteRT's tools, both the C++
  `benchmark_model` built from `litert/tools` (every line behind a
  `INFO: [file:line]` log prefix, values in ms, plus a `Memory Usage:` part)
  and the Python `litert-benchmark` shipped with ai-edge-litert (`=` rules,
  median / p5 / p95 and `Fully accelerated:`).
- `"current"`: TFLite's `benchmark_model` since TF 2.3:
  `Inference timings in us: Init: X, First inference: Y, Warmup (avg): Z,
  Inference (avg): W`, the two `count= first= curr= min= max= avg= std=`
  lines (newer builds append `p5= median= p95=`), and the memory lines
  `Memory footprint delta from the start of the tool (MB): init= overall=`
  (older: `Peak memory footprint (MB): init= overall=`) and
  `Overall peak memory footprint (MB) via periodic monitoring: P`.
  Lines may carry an `INFO: ` prefix (TF >= 2.13).
- `"legacy"`: TF 1.x / early 2.x and the Android benchmark APK:
  `Average inference timings in us: Warmup: A, Init: B, Inference: C`
  (the native binary printed `no stats: C` instead of `Inference: C`).

Every time is returned in milliseconds and every memory figure in MB. The formats are
summarised in docs/reference.md#benchmark_model-output.
"""

import dataclasses
import re

LITERT = "litert"
CURRENT = "current"
LEGACY = "legacy"

# C++ streams print doubles with 6 significant digits, switching to
# scientific notation (1.23457e+06) for large values; "nan" / "-nan" appear
# for empty statistics.
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"

_CURRENT_SUMMARY = re.compile(
    rf"Inference timings in us: Init: (?P<init>{NUMBER}), "
    rf"First inference: (?P<first>{NUMBER}), "
    rf"Warmup \(avg\): (?P<warmup>{NUMBER}), "
    rf"Inference \(avg\): (?P<avg>{NUMBER})"
)
_LEGACY_SUMMARY = re.compile(r"Average inference timings in us:(?P<rest>.*)")
_LEGACY_FIELD = re.compile(rf"(?P<key>[A-Za-z][A-Za-z ()]*?):\s*(?P<value>{NUMBER})")
_STAT_FIELD = re.compile(rf"\b(?P<key>count|first|curr|min|max|avg|std|p5|median|p95)=(?P<value>{NUMBER})")
_RUN_HEADER = re.compile(r"Running benchmark for")
_MEMORY_DELTA = re.compile(
    rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=(?P<init>{NUMBER}) overall=(?P<overall>{NUMBER})"
)
_MEMORY_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>{NUMBER})")
_DELEGATE_APPLIED = re.compile(
    r"Explicitly applied \S+ delegate, and the model graph will be (?P<how>completely|partially) executed"
    r"|(?P<not>Though \S+ delegate is explicitly applied, the model graph will not be executed)"
)
_LITERT_MARKER = re.compile(r"BENCHMARK RESULTS")
_LITERT_LINE = re.compile(
    r"(?P<label>Model initialization|Warmup \((?:first|avg)\)|"
    r"Inference \((?:avg|min|max|median|std|p5|p95)\)|"
    r"Init footprint|Overall footprint|Peak memory|Fully accelerated):\s*"
    rf"(?P<value>{NUMBER}|True|False|true|false)(?:\s*(?:ms|MB))?(?:\s*\((?P<runs>\d+) runs\))?"
)
_LITERT_FIELDS = {
    "Model initialization": "init_ms",
    "Warmup (first)": "first_ms",
    "Warmup (avg)": "warmup_avg_ms",
    "Inference (avg)": "avg_ms",
    "Inference (min)": "min_ms",
    "Inference (max)": "max_ms",
    "Inference (median)": "median_ms",
    "Inference (std)": "std_ms",
    "Inference (p5)": "p5_ms",
    "Inference (p95)": "p95_ms",
    "Init footprint": "memory_init_mb",
    "Overall footprint": "memory_overall_mb",
    "Peak memory": "memory_peak_mb",
}

# Lines that explain a failed run, most specific first.
_ERROR_LINE = re.compile(r"\bERROR\b:?\s*(?P<message>.*\S)")
_LOCATION = re.compile(r"^\[[^\]]*:\d+\]\s*")
_FAILURE_LINE = re.compile(
    r"(Failed to .*|Benchmarking failed.*|.*not executable.*|.*Permission denied.*|"
    r".*inaccessible or not found.*|.*No such file or directory.*|.*Segmentation fault.*|Aborted.*)"
)

# (pattern in the output, what the user should do)
_ADVICE = (
    (
        r"Regular TensorFlow ops are not supported|Flex delegate|Select TensorFlow op",
        "the model contains Select-TF (Flex) ops: re-export it restricted to TFLITE_BUILTINS",
    ),
    (
        r"Didn't find op for builtin opcode|Unsupported builtin op|is not supported by this interpreter|"
        r"Registration failed",
        "the binary does not know an op (or op version) in the model: use a newer benchmark_model "
        "(LiteRT nightly) or re-export the model with builtin ops only",
    ),
    (
        r"Could not open|Failed to mmap|Failed to load model|No such file or directory|"
        r"The model is not a valid Flatbuffer|not a valid",
        "the model could not be read on the device: check that it is a valid .tflite and that the push succeeded",
    ),
    (
        r"Failed to allocate tensors|AllocateTensors",
        "the interpreter could not allocate the tensors: give the inputs static shapes "
        "(export with a fixed batch size) and check the free memory on the device",
    ),
    (
        r"GPU|OpenCL|delegate",
        "the delegate could not be applied on this device: benchmark with another --delegates choice",
    ),
)


class BenchmarkOutputError(ValueError):
    """The output holds no timing summary: the run failed or was cut short.

    Attributes:
        reason: the line of the output that best explains the failure.
        advice: what the user should do about it.
    """

    def __init__(self, reason, advice):
        super().__init__(f"{reason} -> {advice}")
        self.reason = reason
        self.advice = advice


@dataclasses.dataclass
class BenchmarkResult:
    """Latency and memory figures of one benchmark run.

    Times are in milliseconds, memory in MB; `None` where the tool's output
    format does not report the figure.

    Args:
        output_format: `"litert"`, `"current"` or `"legacy"`.
        avg_ms: mean latency of the timed (steady-state) runs.
        init_ms: model load + interpreter / compiled-model creation.
        first_ms: the first inference (first warm-up run).
        warmup_avg_ms: mean latency of the warm-up runs.
        warmup_count: number of warm-up runs performed.
        count: number of timed runs performed (benchmark_model keeps running
            until `min_secs` have passed, so it can exceed `--num_runs`).
        min_ms, max_ms, std_ms, median_ms, p5_ms, p95_ms: statistics of the
            timed runs (`std` is the population standard deviation).
        memory_init_mb, memory_overall_mb: memory footprint increase after
            initialisation and at the end of the run.
        memory_peak_mb: peak footprint from periodic monitoring.
        fully_accelerated: whether the accelerator took the whole graph
            (LiteRT tools only).

    Example:

    >>> result = parse_benchmark_output(
    ...     "Inference timings in us: Init: 1500, First inference: 9000, "
    ...     "Warmup (avg): 8000, Inference (avg): 7500.5")
    >>> result.avg_ms, result.init_ms
    (7.5005, 1.5)
    """

    output_format: str
    avg_ms: float
    init_ms: float | None = None
    first_ms: float | None = None
    warmup_avg_ms: float | None = None
    warmup_count: int | None = None
    count: int | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    median_ms: float | None = None
    p5_ms: float | None = None
    p95_ms: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    memory_peak_mb: float | None = None
    fully_accelerated: bool | None = None

    def latency_ms(self):
        """The `latency_ms` block of a result record."""
        return {
            "init": self.init_ms,
            "first": self.first_ms,
            "warmup_avg": self.warmup_avg_ms,
            "avg": self.avg_ms,
            "min": self.min_ms,
            "max": self.max_ms,
            "std": self.std_ms,
            "median": self.median_ms,
            "p5": self.p5_ms,
            "p95": self.p95_ms,
            "count": self.count,
            "warmup_count": self.warmup_count,
        }

    def memory_mb(self):
        """The `memory_mb` block of a result record."""
        return {"init": self.memory_init_mb, "overall": self.memory_overall_mb, "peak": self.memory_peak_mb}


def _number(text):
    return float(text)


def _us_to_ms(value):
    return None if value is None else round(float(value) / 1000.0, 6)


def _stat_lines(lines):
    """The `count=...` line printed after each `Running benchmark for` line.

    The first is the warm-up phase, the second the timed runs. Anchoring on
    the header skips the `Timings (microseconds): count=...` lines of op
    profiling, which use the same syntax.
    """
    stats = []
    waiting = False
    for line in lines:
        if _RUN_HEADER.search(line):
            waiting = True
            continue
        if waiting and "count=" in line:
            fields = {m["key"]: _number(m["value"]) for m in _STAT_FIELD.finditer(line)}
            if "curr" in fields and "min" not in fields:
                # "count=1 curr=X" / "count=5 curr=X(all same)": every run took X.
                for key in ("first", "min", "max", "avg"):
                    fields[key] = fields["curr"]
                fields["std"] = 0.0
            stats.append(fields)
            waiting = False
    return stats


def _apply_stats(result, stats):
    if stats:
        warmup = stats[0]
        result.warmup_count = int(warmup["count"]) if "count" in warmup else None
        if result.first_ms is None and "first" in warmup:
            result.first_ms = _us_to_ms(warmup["first"])
    if len(stats) > 1:
        timed = stats[1]
        result.count = int(timed["count"]) if "count" in timed else None
        result.min_ms = _us_to_ms(timed.get("min"))
        result.max_ms = _us_to_ms(timed.get("max"))
        result.std_ms = _us_to_ms(timed.get("std"))
        result.median_ms = _us_to_ms(timed.get("median"))
        result.p5_ms = _us_to_ms(timed.get("p5"))
        result.p95_ms = _us_to_ms(timed.get("p95"))


def _apply_memory(result, text):
    delta = _MEMORY_DELTA.search(text)
    if delta:
        result.memory_init_mb = _number(delta["init"])
        result.memory_overall_mb = _number(delta["overall"])
    peak = _MEMORY_PEAK.search(text)
    if peak:
        result.memory_peak_mb = _number(peak["peak"])


def _parse_litert(lines):
    fields = {}
    for line in lines:
        match = _LITERT_LINE.search(line)
        if not match:
            continue
        label, value = match["label"], match["value"]
        if label == "Fully accelerated":
            fields["fully_accelerated"] = value.lower() == "true"
            continue
        fields[_LITERT_FIELDS[label]] = _number(value)
        if match["runs"] is not None:
            fields["warmup_count" if label == "Warmup (avg)" else "count"] = int(match["runs"])
    if "avg_ms" not in fields:
        return None
    return BenchmarkResult(output_format=LITERT, **fields)


def _fill_missing(result, other):
    """Copies into `result` the figures it lacks and `other` has."""
    for field in dataclasses.fields(BenchmarkResult):
        if getattr(result, field.name) is None and getattr(other, field.name) is not None:
            setattr(result, field.name, getattr(other, field.name))


def _apply_delegate(result, text):
    matches = list(_DELEGATE_APPLIED.finditer(text))
    if matches and result.fully_accelerated is None:
        result.fully_accelerated = all(m["how"] == "completely" for m in matches)


def parse_benchmark_output(text):
    """Parses the output of one benchmark run.

    Args:
        text: str, everything the tool printed (stdout and stderr together;
            the tools log to stderr).

    Returns:
        A `BenchmarkResult`.

    Raises:
        BenchmarkOutputError: no timing summary was found; its `reason` is
            the error line of the output and `advice` what to do about it.
    """
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if _LITERT_MARKER.search(line):
            result = _parse_litert(lines[index + 1 :])
            if result is not None:
                # The C++ tool also prints benchmark_model's `count=` lines,
                # which hold the percentiles its block leaves out.
                from_stats = BenchmarkResult(output_format=LITERT, avg_ms=result.avg_ms)
                _apply_stats(from_stats, _stat_lines(lines))
                _fill_missing(result, from_stats)
                return result
            break

    summary = _CURRENT_SUMMARY.search(text)
    if summary:
        result = BenchmarkResult(
            output_format=CURRENT,
            avg_ms=_us_to_ms(summary["avg"]),
            init_ms=_us_to_ms(summary["init"]),
            first_ms=_us_to_ms(summary["first"]),
            warmup_avg_ms=_us_to_ms(summary["warmup"]),
        )
        _apply_stats(result, _stat_lines(lines))
        _apply_memory(result, text)
        _apply_delegate(result, text)
        return result

    legacy = _LEGACY_SUMMARY.search(text)
    if legacy:
        fields = {m["key"].strip(): _number(m["value"]) for m in _LEGACY_FIELD.finditer(legacy["rest"])}
        average = fields.get("Inference", fields.get("no stats"))
        if average is not None:
            result = BenchmarkResult(
                output_format=LEGACY,
                avg_ms=_us_to_ms(average),
                init_ms=_us_to_ms(fields.get("Init")),
                warmup_avg_ms=_us_to_ms(fields.get("Warmup")),
            )
            _apply_stats(result, _stat_lines(lines))
            _apply_memory(result, text)
            return result

    reason = failure_reason(text)
    raise BenchmarkOutputError(reason, failure_advice(text, reason))


def failure_reason(text):
    """The line of a failed run's output that best explains the failure."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("WARNING", "W0", "INFO")):
            continue
        match = _ERROR_LINE.search(line)
        if not match:
            continue
        # Drop LiteRT's "[file.cc:123]" location prefix; skip bare locations.
        message = _LOCATION.sub("", match["message"]).strip()
        if message and not message.startswith("Benchmarking failed"):
            return message
    for line in lines:
        match = _FAILURE_LINE.search(line)
        if match:
            return match.group(0).strip()
    if not lines:
        return "the tool printed nothing"
    return f"no timing summary in the output (last line: {lines[-1]!r})"


def failure_advice(text, reason=None):
    """What to do about a failed run.

    The patterns are matched against `reason` (the line from
    `failure_reason`) first, then against the whole output.
    """
    for source in (reason, text):
        for pattern, advice in _ADVICE:
            if source and re.search(pattern, source):
                return advice
    return "run the logged command by hand to see the whole output"
