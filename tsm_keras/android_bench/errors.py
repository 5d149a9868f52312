"""The one exception type android_bench raises for a problem the user must fix."""


class BenchError(RuntimeError):
    """A one-line, user-facing failure that names what to do next.

    `run.py` prints `error: <message>` and exits with status 2; nothing else
    catches it. Raise it for problems in the environment (adb, device,
    binary, arguments), never for a bug in android_bench itself.

    Example:

    >>> raise BenchError("adb not found on PATH: install Android platform-tools")
    Traceback (most recent call last):
    ...
    android_bench.errors.BenchError: adb not found on PATH: install Android platform-tools
    """
