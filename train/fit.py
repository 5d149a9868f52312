"""`python train/fit.py` is `tsm-train` (see `tsm_keras/cli/train.py`)."""

from tsm_keras.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
