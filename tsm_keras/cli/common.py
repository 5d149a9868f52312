"""What every `tsm-*` command does the same way.

- Arguments are parsed before TensorFlow is imported, so `--help` and usage
  errors answer at once.
- `--verbose` shows TensorFlow's and absl's start-up lines (hidden by
  default: they are set quiet *before* TensorFlow loads, and the lines its
  shared libraries print while loading are held back); `--debug` shows the
  traceback of a failure.
- Exit status: 0 success, 1 failure, 2 usage error (bad arguments, a config
  or input that must be fixed before anything runs); an error is one line,
  `PROG: error: MESSAGE`, on stderr.

A command module defines `build_parser()` and `run(args)` and its
`main(argv=None)` is `return common.main(build_parser(), run, argv)`.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import traceback

OK, FAILURE, USAGE = 0, 1, 2

# Exceptions whose message is the whole story (anything else is a bug: its type is shown too).
_PLAIN_ERRORS = (ValueError, OSError, RuntimeError)


# tsm_keras.models.precision.INFERENCE_PRECISIONS, spelled here so that --help answers without
# TensorFlow (a test keeps them equal).
PRECISIONS = ("float32", "bfloat16")


def add_precision_argument(parser, default):
    """`--precision {float32,bfloat16}` of the inference commands; `default` says what None means."""
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="compute precision: bfloat16 is Keras mixed_bfloat16 (float32 weights, bfloat16 "
                             "compute), faster for ResNets on CPUs with native bfloat16 (AVX512-BF16, AMX) "
                             f"(default: {default})")


class UsageError(Exception):
    """Arguments or inputs to fix before anything can run (exit status 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """`argparse` with the tools' conventions: `--verbose`, `--debug`, one-line usage errors."""

    def __init__(self, prog, description, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(prog=prog, description=description, **kwargs)
        self._shared_options_added = False

    def parse_known_args(self, args=None, namespace=None):
        if not self._shared_options_added:  # added last, so they close the usage line
            self._shared_options_added = True
            group = self.add_argument_group("shared options")
            group.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up and log lines")
            group.add_argument("--debug", action="store_true", help="show the traceback of a failure")
        return super().parse_known_args(args, namespace)

    def error(self, message):
        raise UsageError(message)


def docstring_help(doc):
    """(description, epilog) of a command from its module docstring: first line, rest."""
    first, _, rest = doc.strip().partition("\n")
    return first.strip(), rest.strip() or None


def quiet_tensorflow():
    """Sets TensorFlow's C++ and absl logging to errors-off; call before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hides INFO..ERROR, e.g. `E0000 ... cuInit`
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@contextlib.contextmanager
def held_back_stderr():
    """Redirects file descriptor 2 into a temporary file for the block.

    TensorFlow's shared libraries log a few lines (`oneDNN custom
    operations`, `Could not find cuda drivers`) straight to the descriptor
    while they load, before any log level applies. When the block fails,
    what was held back is written out.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow(verbose=False):
    """Imports TensorFlow (and Keras), quietly unless `verbose`."""
    if "tensorflow" in sys.modules:
        return
    if verbose:
        import tensorflow  # noqa: F401
        return
    quiet_tensorflow()
    with held_back_stderr():
        import tensorflow  # noqa: F401
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)


def error_line(error):
    """The one-line message of an exception.

    A data error raised inside a `tf.data` pipeline arrives as a TensorFlow
    error whose message also holds a Python traceback: its `path: reason`
    line is the message.
    """
    if "DataError" in str(error):
        from tsm_keras.data.report import data_error_line  # TensorFlow is loaded by then

        line = data_error_line(error)
        if line:
            return line
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if isinstance(error, SystemExit):
        return message
    if not isinstance(error, (UsageError,) + _PLAIN_ERRORS) or not message:
        message = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return message


def main(parser, run, argv=None, tensorflow=True):
    """Parses `argv`, runs `run(args)` and turns the outcome into an exit status.

    Args:
        parser: an `ArgumentParser` of this module.
        run: callable(args) -> None or an exit status; raises `UsageError`
            for exit 2, anything else for exit 1.
        argv: arguments (default `sys.argv[1:]`).
        tensorflow: import TensorFlow (quietly) before `run`; False for
            commands that do not need it.
    """
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        if tensorflow:
            import_tensorflow(args.verbose)
        elif not args.verbose:
            quiet_tensorflow()
        status = run(args)
    except UsageError as error:
        _report(parser.prog, error, debug)
        return USAGE
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as error:  # argparse's --help / a library's SystemExit(message)
        if error.code is None or isinstance(error.code, int):
            return error.code or OK
        _report(parser.prog, error, debug)
        return FAILURE
    except Exception as error:  # noqa: BLE001  (every failure becomes one line, the traceback on --debug)
        _report(parser.prog, error, debug)
        return FAILURE
    return OK if status is None else int(status)


def _report(prog, error, debug):
    if debug:
        traceback.print_exc()
    print(f"{prog}: error: {error_line(error)}", file=sys.stderr)
