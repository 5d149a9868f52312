#!/usr/bin/env bash
# Runs every benchmark of bench/ and rewrites docs/benchmarks.md from bench/results/*.json.
#
#   bash bench/run_all.sh                 # everything (about 40 minutes on 2 quiet cores, 2026-11-30)
#   bash bench/run_all.sh shift_overhead training_throughput   # some of them, then the report
#
# Each benchmark is run with its defaults (the command recorded in its JSON and shown in the
# doc); the 1/5/15-minute load average before and after each one goes to
# bench/results/load_averages.json so the doc can say when the machine was shared.
# A benchmark that fails does not stop the others; the script exits non-zero at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2

ALL=(shift_overhead online_latency input_pipeline training_throughput inference_efficiency bfloat16 android_bench_host cli_startup)
if [ "$#" -gt 0 ]; then SELECTED=("$@"); else SELECTED=("${ALL[@]}"); fi

ANDROID_DIR=bench/results/android_bench_host
ANDROID_MODELS=/tmp/tsm_keras_bench_models

android_bench_host() {
    # The on-device tool's host mode on the online TSM-MobileNetV2 (untrained weights:
    # latency does not depend on them) in fp32 and int8, 1 and 2 threads.
    mkdir -p "$ANDROID_MODELS" && rm -rf "$ANDROID_DIR" && mkdir -p "$ANDROID_DIR" || return 1
    python - "$ANDROID_MODELS/tsm_mobilenet_v2_online.keras" <<'EOF' || return 1
import sys
from tsm_keras import build_tsm
build_tsm("mobilenet_v2", num_classes=400, num_segments=8, direction="unidirectional",
          shift_place="block", layout="torch", dropout=0.0).save(sys.argv[1])
EOF
    for quant in fp32 int8; do
        python convert/to_tflite.py "$ANDROID_MODELS/tsm_mobilenet_v2_online.keras" --mode online \
            --quant "$quant" --calib-videos 8 --out "$ANDROID_MODELS/tsm_mobilenet_v2_online_$quant.tflite" || return 1
    done
    local command=(python android_bench/run.py --host
                   --models "$ANDROID_MODELS/tsm_mobilenet_v2_online_fp32.tflite"
                   "$ANDROID_MODELS/tsm_mobilenet_v2_online_int8.tflite"
                   --threads 1 2 --delegates xnnpack --runs 50 --warmup 5 --out "$ANDROID_DIR")
    echo "${command[*]}" > "$ANDROID_DIR/command.txt"
    "${command[@]}" || return 1
    # docs/benchmarks.md holds the table; keep only the JSON records (and command.txt).
    rm -f "$ANDROID_DIR/results.md" "$ANDROID_DIR/latency.png" "$ANDROID_DIR"/*.log
}

failed=()
for name in "${SELECTED[@]}"; do
    if [ "$name" != android_bench_host ] && [ ! -f "bench/$name.py" ]; then
        echo "== $name: bench/$name.py does not exist, skipped"
        continue
    fi
    echo "== $name ($(uptime | sed 's/.*load average/load average/'))"
    python bench/report.py --record-load "$name" start
    if [ "$name" = android_bench_host ]; then
        android_bench_host || failed+=("$name")
    else
        python "bench/$name.py" || failed+=("$name")
    fi
    python bench/report.py --record-load "$name" end
done

python bench/report.py
if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
