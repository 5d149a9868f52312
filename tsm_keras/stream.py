"""`python -m tsm_keras.stream` is `tsm-stream` (`tsm_keras/cli/stream.py`); the library is
`tsm_keras.inference.stream`."""

if __name__ == "__main__":
    from tsm_keras.cli.stream import main

    raise SystemExit(main())
