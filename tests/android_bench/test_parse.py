"""android_bench.parse on verbatim outputs of every benchmark_model format.

Expected values are read by hand from the fixture files (see
tests/fixtures/benchmark_model/README.md for where each one comes from) and
converted to milliseconds here, not by the code under test.
"""


import pytest

from tsm_keras.android_bench.parse import (
    BenchmarkOutputError,
    failure_advice,
    failure_reason,
    parse_benchmark_output,
)

from tests import FIXTURES



def fixture(name):
    return (FIXTURES / "benchmark_model" / name).read_text()


def test_current_format_with_info_prefix_percentiles_and_peak_memory():
    result = parse_benchmark_output(fixture("tflite_current_android.txt"))
    assert result.output_format == "current"
    # "Inference timings in us: Init: 38217, First inference: 9120, Warmup (avg): 5141.39, Inference (avg): 4968.74"
    assert result.init_ms == pytest.approx(38.217)
    assert result.first_ms == pytest.approx(9.120)
    assert result.warmup_avg_ms == pytest.approx(5.14139)
    assert result.avg_ms == pytest.approx(4.96874)
    # Second count line: count=201 ... min=4795 max=6318 avg=4968.74 std=187 p5=4806 median=4901 p95=5389
    assert result.count == 201
    assert result.warmup_count == 97
    assert (result.min_ms, result.max_ms, result.std_ms) == pytest.approx((4.795, 6.318, 0.187))
    assert (result.p5_ms, result.median_ms, result.p95_ms) == pytest.approx((4.806, 4.901, 5.389))
    assert (result.memory_init_mb, result.memory_overall_mb) == pytest.approx((7.26172, 9.47266))
    assert result.memory_peak_mb == pytest.approx(16.3828)
    assert result.fully_accelerated is True


def test_current_format_scientific_notation_single_warmup_and_op_profiling():
    result = parse_benchmark_output(fixture("tflite_current_profiling.txt"))
    assert result.output_format == "current"
    # "Inference (avg): 3.38291e+06" us -> 3382.91 ms; "Init: 412502" us.
    assert result.avg_ms == pytest.approx(3382.91)
    assert result.init_ms == pytest.approx(412.502)
    assert result.warmup_avg_ms == pytest.approx(3417.76)
    # The warm-up line is "count=1 curr=3417764": one run, so every statistic is that run.
    assert result.warmup_count == 1
    # The timed line follows the second "Running benchmark for" header, not the
    # op-profiling "Timings (microseconds): count=50 first=3363020 ..." line.
    assert result.count == 50
    assert result.min_ms == pytest.approx(3351.207)
    assert result.max_ms == pytest.approx(3482.950)
    assert result.std_ms == pytest.approx(27.101)
    assert result.median_ms is None  # this build printed no percentiles
    assert (result.memory_init_mb, result.memory_overall_mb) == pytest.approx((112.387, 398.016))
    assert result.memory_peak_mb is None


def test_legacy_native_format_with_no_stats_label():
    result = parse_benchmark_output(fixture("tflite_legacy_native.txt"))
    assert result.output_format == "legacy"
    # "Average inference timings in us: Warmup: 152304, Init: 5126, no stats: 140912"
    assert result.avg_ms == pytest.approx(140.912)
    assert result.init_ms == pytest.approx(5.126)
    assert result.warmup_avg_ms == pytest.approx(152.304)
    assert result.first_ms == pytest.approx(152.304)  # "count=1 curr=152304"
    assert result.count == 50
    assert (result.min_ms, result.max_ms, result.std_ms) == pytest.approx((139.860, 146.915, 1.043))


def test_legacy_benchmark_apk_logcat_line():
    result = parse_benchmark_output(fixture("tflite_legacy_apk_logcat.txt"))
    assert result.output_format == "legacy"
    # "Average inference timings in us: Warmup: 93518.5, Init: 4371, Inference: 81206.2"
    assert result.avg_ms == pytest.approx(81.2062)
    assert result.init_ms == pytest.approx(4.371)
    assert result.warmup_avg_ms == pytest.approx(93.5185)
    assert result.count is None and result.min_ms is None


def test_litert_python_tool_block_captured_on_this_machine():
    result = parse_benchmark_output(fixture("litert_python_host.txt"))
    assert result.output_format == "litert"
    assert result.init_ms == pytest.approx(2.39)
    assert result.first_ms == pytest.approx(0.36)
    assert result.warmup_avg_ms == pytest.approx(0.48)
    assert result.warmup_count == 3
    assert result.avg_ms == pytest.approx(0.31)
    assert result.count == 30
    assert (result.min_ms, result.max_ms, result.median_ms) == pytest.approx((0.18, 1.65, 0.18))
    assert (result.std_ms, result.p5_ms, result.p95_ms) == pytest.approx((0.38, 0.18, 1.22))
    assert result.fully_accelerated is True
    assert result.memory_peak_mb is None


def test_litert_cpp_tool_block_behind_log_prefixes_and_its_count_lines():
    result = parse_benchmark_output(fixture("litert_cpp_android.txt"))
    assert result.output_format == "litert"
    assert result.init_ms == pytest.approx(612.44)
    assert result.first_ms == pytest.approx(14.21)
    assert result.warmup_avg_ms == pytest.approx(2.76)
    assert result.warmup_count == 181
    assert result.avg_ms == pytest.approx(2.68)
    assert result.count == 372
    assert (result.min_ms, result.max_ms) == pytest.approx((2.50, 3.35))
    assert result.std_ms == pytest.approx(0.10)  # printed without a unit
    assert (result.memory_init_mb, result.memory_overall_mb, result.memory_peak_mb) == pytest.approx(
        (61.23, 74.80, 81.52)
    )
    # The block has no percentiles; they come from "count=372 ... p5=2541 median=2671 p95=2867".
    assert (result.p5_ms, result.median_ms, result.p95_ms) == pytest.approx((2.541, 2.671, 2.867))


def test_rejected_model_names_the_missing_op_and_what_to_do():
    with pytest.raises(BenchmarkOutputError) as raised:
        parse_benchmark_output(fixture("tflite_rejected_model.txt"))
    assert raised.value.reason.startswith("Didn't find op for builtin opcode 'STABLEHLO_COMPOSITE' version '1'")
    assert "newer benchmark_model" in raised.value.advice
    assert "\n" not in str(raised.value)


def test_unavailable_gpu_reason_skips_warnings_and_location_only_errors():
    text = fixture("litert_python_gpu_unavailable.txt")
    # The first "ERROR:" in the file is a bare "[litert/...cc:259]" location inside a WARNING line.
    assert failure_reason(text) == "Failed to initialize WebGPU environment: INTERNAL: No adapters found"
    assert "delegate could not be applied" in failure_advice(text, failure_reason(text))


@pytest.mark.parametrize(
    "output, advice",
    [
        (
            "ERROR: Regular TensorFlow ops are not supported by this interpreter. Make sure you apply/link "
            "the Flex delegate before inference.\nERROR: Node number 0 (FlexConv3D) failed to prepare.\n",
            "TFLITE_BUILTINS",
        ),
        ("ERROR: Could not open '/data/local/tmp/x.tflite'.\nFailed to mmap model /data/local/tmp/x.tflite\n", "valid .tflite"),
        ("Loaded model m.tflite\nFailed to allocate tensors!\nBenchmarking failed.\n", "static shapes"),
        ("", "by hand"),
    ],
)
def test_failure_advice_by_pattern(output, advice):
    with pytest.raises(BenchmarkOutputError) as raised:
        parse_benchmark_output(output)
    assert advice in raised.value.advice


def test_empty_output_reason():
    assert failure_reason("\n\n") == "the tool printed nothing"
