"""`python train/test.py` is `tsm-test` (see `tsm_keras/cli/test.py`)."""

from tsm_keras.cli.test import main

if __name__ == "__main__":
    raise SystemExit(main())
