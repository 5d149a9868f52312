"""The `tsm-*` command-line tools, one module per command.

Each module has `main(argv=None) -> int` (the console script in setup.py)
and parses its arguments before TensorFlow is imported; the conventions
they share (exit codes, `--verbose`, `--debug`) live in `common`.

| command              | module            | old path (still works)                   |
|----------------------|-------------------|------------------------------------------|
| `tsm-train`          | `train`           | `python train/fit.py`                    |
| `tsm-test`           | `test`            | `python train/test.py`                   |
| `tsm-import`         | `import_torch`    | `python convert/import_torch.py`         |
| `tsm-export`         | `export`          | `python convert/to_tflite.py`            |
| `tsm-reparameterize` | `reparameterize`  | `python convert/reparameterize.py`       |
| `tsm-predict`        | `predict`         | `python -m tsm_keras.predict`            |
| `tsm-stream`         | `stream`          | `python -m tsm_keras.stream`             |
| `tsm-android-bench`  | `android_bench`   | `python android_bench/run.py`            |
| `tsm-make-tfrecords` | `make_tfrecords`  | `python -m tsm_keras.data.make_tfrecords` |
| `tsm-make-videos`    | `synthetic_videos` | (new)                                   |
"""
