"""`python -m tsm_keras.data.make_tfrecords` is `tsm-make-tfrecords` (see `tsm_keras/cli/make_tfrecords.py`)."""

if __name__ == "__main__":
    from tsm_keras.cli.make_tfrecords import main

    raise SystemExit(main())
