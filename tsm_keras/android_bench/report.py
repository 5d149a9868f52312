"""Write records as JSON, a markdown table and a bar chart; read them back."""

import json
import pathlib

from tsm_keras.android_bench import records
from tsm_keras import benchmarking
from tsm_keras.benchmarking import markdown_cell

TABLE_NAME = "results.md"
CHART_NAME = "latency.png"
COLUMNS = (
    "Target",
    "Model",
    "Delegate",
    "Threads",
    "Avg ms",
    "Median ms",
    "Std ms",
    "Min ms",
    "Max ms",
    "First ms",
    "Init ms",
    "Mem MB",
    "Runs",
    "Status",
)


def write_record(record, out_dir):
    """Writes one record as `<model>__<delegate>__t<threads>.json`; returns the path."""
    config = record["config"]
    stem = f"{records.safe_name(pathlib.Path(record['model']['name']).stem)}__{config['delegate']}__t{config['threads']}"
    path = pathlib.Path(out_dir) / f"{stem}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def load_records(paths):
    """Records from JSON files and from the `*.json` files of directories.

    Raises:
        ValueError: a file is not a record of this schema (names the file).
    """
    loaded = []
    for path in map(pathlib.Path, paths):
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise ValueError(f"{path}: no .json records in this directory")
        for file in files:
            try:
                record = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise ValueError(f"{file}: not a readable JSON record ({error})") from error
            if not isinstance(record, dict) or record.get("schema_version") != records.SCHEMA_VERSION:
                raise ValueError(f"{file}: not an android_bench record (schema_version {records.SCHEMA_VERSION})")
            loaded.append(record)
    return loaded


def _target_label(record):
    """The device's name, or `host (<runner>)`: two host runners are two targets."""
    if record["target"]["kind"] == "device":
        return record["target"]["name"]
    return f"host ({record['runner']['name']})"


def _number(value, digits=2):
    """Fixed-point text; one more digit below 1 so sub-millisecond times keep 3 figures."""
    if value is None:
        return "–"
    if abs(value) < 1:
        digits += 1
    return f"{value:.{digits}f}"


def _status(record):
    if record["status"] == records.OK:
        return "ok"
    reason = record["error"] or ""
    if len(reason) > 90:
        reason = reason[:87] + "..."
    return f"{record['status']}: {reason}"


def _memory(record):
    memory = record["memory_mb"]
    return memory["peak"] if memory["peak"] is not None else memory["overall"]


def _target_lines(all_records):
    lines = []
    seen = set()
    for record in all_records:
        target = record["target"]
        key = json.dumps([target, _target_label(record)], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        facts = [
            f"{name}: {target[field]}"
            for name, field in (
                ("SoC/CPU", "soc"),
                ("OS", "os"),
                ("ABI", "abi"),
                ("governor", "cpu_governor"),
                ("runtime", "runtime"),
            )
            if target.get(field)
        ]
        lines.append(f"- **{markdown_cell(_target_label(record))}** ({target['kind']}): " + "; ".join(markdown_cell(f) for f in facts))
    return lines


def markdown_table(all_records):
    """A markdown table of the records (one row each) under a list of targets."""
    rows = []
    for record in all_records:
        latency = record["latency_ms"]
        config = record["config"]
        runs = latency["count"] if latency["count"] is not None else "–"
        cells = (
            _target_label(record),
            record["model"]["name"],
            config["delegate"],
            config["threads"],
            _number(latency["avg"]),
            _number(latency["median"]),
            _number(latency["std"]),
            _number(latency["min"]),
            _number(latency["max"]),
            _number(latency["first"]),
            _number(latency["init"], 1),
            _number(_memory(record), 1),
            runs,
            _status(record),
        )
        rows.append(cells)
    notes = [
        "",
        "Times are milliseconds per inference (avg / median / std / min / max over the timed runs; first = first "
        "warm-up run; init = model load and interpreter creation). Mem = peak footprint when measured, else "
        "the growth of the footprint over the run.",
    ]
    numbers = [column for column in COLUMNS if column not in ("Target", "Model", "Delegate", "Status")]
    table = benchmarking.markdown_table(COLUMNS, rows, right_aligned=numbers)
    return "\n".join(_target_lines(all_records) + ["", table, *notes]) + "\n"


def plot_latency(all_records, path):
    """Horizontal bar chart of the mean latency (std as error bar) of the ok runs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    ok = [record for record in all_records if record["status"] == records.OK]
    several_targets = len({_target_label(record) for record in ok}) > 1
    labels, means, errors, colors = [], [], [], []
    palette = pyplot.get_cmap("tab10")
    delegates = sorted({record["config"]["delegate"] for record in ok})
    for record in ok:
        config = record["config"]
        label = f"{record['model']['name']} · {config['delegate']} · {config['threads']} thr"
        if several_targets:
            label = f"{_target_label(record)} · {label}"
        labels.append(label)
        means.append(record["latency_ms"]["avg"])
        errors.append(record["latency_ms"]["std"] or 0.0)
        colors.append(palette(delegates.index(config["delegate"]) % 10))
    height = max(2.0, 0.4 * len(ok) + 1.2)
    figure, axes = pyplot.subplots(figsize=(9, height))
    if ok:
        positions = range(len(ok))
        # Latency cannot go below zero: clip the lower half of the error bar.
        xerr = [[min(error, mean) for mean, error in zip(means, errors)], errors]
        axes.barh(positions, means, xerr=xerr, color=colors, capsize=3)
        axes.set_yticks(list(positions), labels, fontsize=8)
        axes.invert_yaxis()
        for position, mean, error in zip(positions, means, errors):
            axes.annotate(
                _number(mean), (mean + error, position), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7
            )
    else:
        axes.text(0.5, 0.5, "no successful runs", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel("mean latency per inference (ms), error bar = std")
    targets = sorted({_target_label(record) for record in all_records})
    axes.set_title(f"LiteRT latency on {', '.join(targets)}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return pathlib.Path(path)


def write_report(all_records, out_dir):
    """Writes `results.md` and `latency.png` into `out_dir`; returns (table text, table path, chart path)."""
    out_dir = pathlib.Path(out_dir)
    table = markdown_table(all_records)
    table_path = out_dir / TABLE_NAME
    table_path.write_text(table)
    chart_path = plot_latency(all_records, out_dir / CHART_NAME)
    return table, table_path, chart_path
