"""MONAI datalists on disk: ``training`` / ``validation`` / ``test`` lists of items whose paths are
stored relative to the datalist's own folder (so a data set folder can be moved as a whole)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medsam_ft.io import InputError, write_json

SPLITS = ("training", "validation", "test")
PATH_KEYS = ("image", "label")


def write_datalist(datalist: dict[str, Any], path: str | os.PathLike, root: str | os.PathLike) -> None:
    """Write a datalist with paths relative to its own folder, so the folder can move.

    Args:
        datalist: splits of items whose paths are relative to ``root`` (or absolute).
        path: the JSON file.
        root: what the items' relative paths start from.
    """
    path = Path(path)
    rel = os.path.relpath(Path(root).resolve(), path.parent.resolve())
    out = dict(datalist)
    for split in SPLITS:
        out[split] = [
            {k: os.path.normpath(os.path.join(rel, v)) if k in PATH_KEYS else v for k, v in item.items()}
            for item in datalist.get(split, [])
        ]
    write_json(path, out)


def read_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Read a datalist JSON, its relative paths resolved against its folder.

    Args:
        path: the JSON file.

    Returns:
        The datalist with absolute paths.

    Raises:
        InputError: unreadable, not a datalist, or a listed file missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "datalist not found (make one with `python -m data_prep.synapse` or `data_prep.folder2d`)")
    try:
        datalist = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    for split in SPLITS:
        for item in datalist.get(split, []):
            for key in PATH_KEYS:
                if key in item:
                    item[key] = str((path.parent / item[key]).resolve())
                    if not Path(item[key]).exists():
                        raise InputError(item[key], f"listed in {path} ({split}) but not found")
    return datalist
