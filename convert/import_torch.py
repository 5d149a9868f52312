"""`python convert/import_torch.py` is `tsm-import` (see `tsm_keras/cli/import_torch.py`)."""

from tsm_keras.cli.import_torch import main

if __name__ == "__main__":
    raise SystemExit(main())
