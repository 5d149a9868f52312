"""`python -m tsm_keras.predict` is `tsm-predict` (`tsm_keras/cli/predict.py`); the library is
`tsm_keras.inference.predict`."""

if __name__ == "__main__":
    from tsm_keras.cli.predict import main

    raise SystemExit(main())
