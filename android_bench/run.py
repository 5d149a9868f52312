"""`python android_bench/run.py` is `tsm-android-bench` (see `tsm_keras/cli/android_bench.py`).

The package moved to `tsm_keras.android_bench`, so that it is installed with
tsm_keras and shares its benchmarking helpers.
"""

from tsm_keras.cli.android_bench import main

if __name__ == "__main__":
    raise SystemExit(main())
