"""Metric reports: fixed-width text tables for the log and CSV files, and the names of their rows."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsam_ft.io import atomic_path, volume_stem

logger = logging.getLogger(__name__)


def case_name(item: Mapping[str, Any], meta: Mapping[str, Any], index: int) -> str:
    """A case's name in metric tables.

    Args:
        item: the evaluator's output item (``image_path``, ``case``).
        meta: the label's metadata (``filename_or_obj``).
        index: the case's position, the last resort.

    Returns:
        Its file's stem (NIfTI metadata, or a TransUNet h5 volume's ``image_path``), else
        ``caseNNNN`` from its ``case`` id (TransUNet npz slices stacked into a volume), else ``case{index}``.
    """
    source = meta.get("filename_or_obj") or item.get("image_path")
    if source:
        return volume_stem(source)
    return f"case{int(item['case']):04d}" if item.get("case") is not None else f"case{index}"


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a CSV file atomically; floats with 6 decimals.

    Not MONAI's ``MetricsSaver``: it writes one file per metric (images by rows, classes by columns)
    and a summary of statistics, where these tables keep a case's Dice and HD95 of every organ in one
    row with a mean row, the layout the papers' tables are compared in.

    Args:
        path: the file.
        header: the column names.
        rows: the rows, in the header's order.
    """
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([f"{v:.6f}" if isinstance(v, float) else v for v in row] for row in rows)
    logger.info("wrote %s", path)


def format_table(rows: dict[str, list[float]], columns: Sequence[str], title: str, first: str = "case",
                 row_means: bool = True) -> str:
    """A fixed-width text table for the log.

    Args:
        rows: row name -> values (cases, classes).
        columns: the value columns' names.
        title: the first line.
        first: the name column's header.
        row_means: add a last column with each row's mean (NaN skipped).

    Returns:
        The table, lines joined by newlines.
    """
    width = max(9, max(len(c) for c in columns) + 1)
    label_width = max([10, len(first) + 1] + [len(name) + 1 for name in rows])
    tail = "mean".rjust(width) if row_means else ""
    lines = [title, first.ljust(label_width) + "".join(c.rjust(width) for c in columns) + tail]
    for name, values in rows.items():
        tail = f"{np.nanmean(values):{width}.4f}" if row_means else ""
        lines.append(name.ljust(label_width) + "".join(f"{v:{width}.4f}" for v in values) + tail)
    return "\n".join(lines)


