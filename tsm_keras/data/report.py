"""Bad-input accounting: one warning per broken item, a summary per pass."""

import collections
import dataclasses
import logging
import re
import threading

logger = logging.getLogger("tsm_keras.data")

# Reasons an item is skipped, in the order summaries list them.
REASONS = {
    "bad_line": "unreadable list line",
    "bad_label": "label outside the label map",
    "missing": "missing file",
    "unreadable": "unreadable file (permission or I/O error)",
    "empty": "zero bytes",
    "not_video": "not a video (or unreadable container)",
    "truncated": "truncated",
    "no_frames": "zero decodable frames",
    "frame_gap": "frame folder with gaps",
    "bad_frame": "undecodable frame",
    # Not a skip: the whole list, when a pass over it read nothing.
    "nothing_read": "no video of the list could be read",
}


class DataError(ValueError):
    """A broken annotation line or media file.

    Args:
        path: file (or `list:line`) the problem is in.
        reason: key of `REASONS`.
        detail: human readable explanation.
    """

    def __init__(self, path, reason, detail=""):
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        self.path = str(path)
        self.reason = reason
        self.detail = " ".join(str(detail).split())  # one line, whatever the library's message held
        text = f"{self.path}: {REASONS[reason]}"
        super().__init__(f"{text} ({self.detail})" if self.detail else text)


def data_error_line(error):
    """The `path: reason (detail)` line of a data error, or None.

    A `DataError` raised while a `tf.data` pipeline reads (`on_error:
    raise`, or a training pass that read nothing) reaches the caller as a
    `tf.errors.OpError` whose message also holds the Python traceback; a
    command line tool prints this line instead.

    Example:

    >>> data_error_line(DataError("a.mp4", "empty"))
    'a.mp4: zero bytes'
    """
    if isinstance(error, DataError):
        return str(error)
    match = re.search(r"DataError: (.+)", getattr(error, "message", None) or str(error))
    return match.group(1).strip() if match else None


@dataclasses.dataclass
class PassSummary:
    """Counts of one pass over a split: good clips and skips per reason."""

    name: str
    pass_index: int
    num_ok: int
    skipped: dict

    @property
    def num_skipped(self):
        return sum(self.skipped.values())

    def __str__(self):
        if not self.skipped:
            return f"{self.name} pass {self.pass_index}: {self.num_ok} videos read, none skipped"
        parts = ", ".join(f"{REASONS[key]}: {self.skipped[key]}" for key in REASONS if key in self.skipped)
        return (f"{self.name} pass {self.pass_index}: {self.num_ok} videos read, "
                f"{self.num_skipped} skipped ({parts})")


class DataReport:
    """Thread-safe record of what a pipeline read and skipped.

    Problems in the annotation list are found once, when the dataset is
    built, and are counted in every pass (those lines are skipped every
    time); decoding problems are counted in the pass they happen in. Each
    broken item is warned about once (logger `tsm_keras.data`), and
    `end_pass` logs a summary.

    Args:
        name: label for messages, e.g. `"train"`.
        log: bool, log warnings and summaries (False only collects them).

    Example:

    >>> report = DataReport("val")
    >>> report.add_ok(0)
    >>> report.end_pass(0).num_ok
    1
    """

    def __init__(self, name="data", log=True):
        self.name = name
        self.log = log
        self._lock = threading.Lock()
        self._warned = set()
        self._list_problems = collections.Counter()
        self._skipped = collections.defaultdict(collections.Counter)
        self._ok = collections.Counter()
        self.summaries = []
        self.errors = []

    def _warn(self, error):
        key = (error.path, error.reason)
        if key not in self._warned:
            self._warned.add(key)
            self.errors.append(error)
            if self.log:
                logger.warning("skipping %s", error)

    def add_list_problem(self, error):
        with self._lock:
            self._list_problems[error.reason] += 1
            self._warn(error)

    def add_skip(self, pass_index, error):
        with self._lock:
            self._skipped[int(pass_index)][error.reason] += 1
            self._warn(error)

    def add_ok(self, pass_index, count=1):
        with self._lock:
            self._ok[int(pass_index)] += count

    def summary(self, pass_index):
        with self._lock:
            skipped = collections.Counter(self._list_problems)
            skipped.update(self._skipped.get(int(pass_index), {}))
            return PassSummary(self.name, int(pass_index), self._ok.get(int(pass_index), 0), dict(skipped))

    def end_pass(self, pass_index):
        """Log and remember the summary of a finished pass."""
        summary = self.summary(pass_index)
        with self._lock:
            self.summaries.append(summary)
            self._skipped.pop(int(pass_index), None)
            self._ok.pop(int(pass_index), None)
        if self.log:
            (logger.warning if summary.skipped else logger.info)("%s", summary)
        return summary
