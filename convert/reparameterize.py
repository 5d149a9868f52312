"""`python convert/reparameterize.py` is `tsm-reparameterize` (see `tsm_keras/cli/reparameterize.py`)."""

from tsm_keras.cli.reparameterize import main

if __name__ == "__main__":
    raise SystemExit(main())
