"""`python convert/to_tflite.py` is `tsm-export` (see `tsm_keras/cli/export.py`)."""

from tsm_keras.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
