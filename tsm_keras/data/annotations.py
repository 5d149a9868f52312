"""MMAction2 annotation lists and label maps.

Video list: one `relative/path.mp4 LABEL` per line. Rawframe list: one
`frame_dir TOTAL_FRAMES LABEL` per line. Paths are relative to a data root.
A label map is a text file with one class name per line (line i = class i);
`"kinetics400"`, `"sthv2"` and `"jester"` name the lists shipped in `label_maps/`.
"""

import dataclasses
import os
import re
from typing import Optional

from tsm_keras.data.report import DataError

LABEL_MAP_DIR = os.path.join(os.path.dirname(__file__), "label_maps")
SHIPPED_LABEL_MAPS = ("kinetics400", "sthv2", "jester")

# MMAction2's `sthv2_flip_label_map`: left/right classes of Something-Something V2.
STHV2_FLIP_PAIRS = ((86, 87), (93, 94), (166, 167))


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """One annotated video.

    Args:
        path: absolute (data-root joined) path of the video file or frame folder.
        label: int class index.
        index: 0-based position of the line in the list file (stable video id).
        num_frames: frame count from a rawframe list (None for video files).
    """

    path: str
    label: int
    index: int
    num_frames: Optional[int] = None


def label_map_path(name_or_path):
    """Path of a label map given a shipped name or a file path."""
    if name_or_path in SHIPPED_LABEL_MAPS:
        return os.path.join(LABEL_MAP_DIR, f"{name_or_path}.txt")
    return name_or_path


def load_label_map(name_or_path):
    """Class names, in label order, from a shipped name or a file.

    Example:

    >>> len(load_label_map("kinetics400"))
    400
    """
    path = label_map_path(name_or_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label map {name_or_path!r}: no such file {path}")
    with open(path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle]
    while names and not names[-1]:
        names.pop()
    if not names or any(not name for name in names):
        raise ValueError(f"label map {path}: expected one non-empty class name per line")
    return names


# Labels and frame counts are plain decimal numbers: no sign, no "_"
# separators, no non-ASCII digits (all of which `int` would accept).
_DECIMAL = re.compile(r"[0-9]+")
# Labels are stored as int32.
MAX_LABEL = 2**31 - 1


def _parse_count(text):
    """The value of a plain non-negative decimal integer, else None."""
    return int(text) if _DECIMAL.fullmatch(text) else None


def read_list(list_path, data_root="", kind="video", num_classes=None, report=None):
    """Records of an MMAction2 annotation list.

    The file is read as UTF-8 (a leading byte-order mark is dropped;
    undecodable bytes become U+FFFD, so such a path is a missing file).
    Unreadable lines (wrong field count, a path with a NUL byte, a label or
    frame count that is not a plain non-negative decimal integer such as
    `+2` or `1_0`) and labels outside `[0, num_classes)` raise `DataError`
    unless a `report` is given, in which case they are counted there (with
    one warning each) and skipped. Blank lines are ignored.

    Args:
        list_path: the list file.
        data_root: prefix joined to every relative path.
        kind: `"video"` (`path label`) or `"frames"` (`dir total label`).
        num_classes: int or None (no upper bound check).
        report: optional `DataReport` collecting skipped lines.

    Returns:
        list of `VideoRecord`.
    """
    if kind not in ("video", "frames"):
        raise ValueError(f"kind must be 'video' or 'frames', got {kind!r}")
    if os.path.isdir(list_path):
        raise FileNotFoundError(f"annotation list {list_path}: a directory, expected a list file")
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"annotation list {list_path}: no such file")
    expected = "'path label'" if kind == "video" else "'frame_dir total_frames label'"
    records = []
    with open(list_path, encoding="utf-8-sig", errors="replace") as handle:
        for line_number, line in enumerate(handle):
            fields = line.split()
            if not fields:
                continue
            where = f"{list_path}:{line_number + 1}"
            try:
                record = _parse_line(fields, kind, expected, where, data_root, line_number, num_classes)
            except DataError as error:
                if report is None:
                    raise
                report.add_list_problem(error)
                continue
            records.append(record)
    return records


def _parse_line(fields, kind, expected, where, data_root, line_number, num_classes):
    num_fields = 2 if kind == "video" else 3
    if len(fields) != num_fields:
        raise DataError(where, "bad_line", f"expected {expected}, got {' '.join(fields)!r}")
    if "\0" in fields[0]:
        raise DataError(where, "bad_line", f"path {fields[0]!r} contains a NUL byte")
    label = _parse_count(fields[-1])
    if label is None:
        raise DataError(where, "bad_line", f"label {fields[-1]!r} is not a non-negative decimal integer")
    num_frames = None
    if kind == "frames":
        num_frames = _parse_count(fields[1])
        if num_frames is None:
            raise DataError(where, "bad_line", f"total_frames {fields[1]!r} is not a non-negative decimal integer")
    if label > MAX_LABEL or (num_classes is not None and label >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else f"[0, {MAX_LABEL}]"
        raise DataError(f"{where} ({fields[0]})", "bad_label", f"label {label} not in {bound}")
    path = os.path.join(data_root, fields[0]) if data_root else fields[0]
    return VideoRecord(path=path, label=label, index=line_number, num_frames=num_frames)


def write_list(list_path, entries):
    """Write an MMAction2 list from `(relative_path, label)` or
    `(frame_dir, total_frames, label)` tuples."""
    os.makedirs(os.path.dirname(os.path.abspath(list_path)), exist_ok=True)
    with open(list_path, "w", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(" ".join(str(field) for field in entry) + "\n")


def write_label_map(path, names):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(names) + "\n")
