"""Shared fixtures: tiny phantom cases in the raw Synapse layout (made once per session), and a
runner for the MONAI bundle command line."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from data_prep.folder2d import main as folder2d_main
from data_prep.phantom import generate
from data_prep.shapes2d import generate as generate_shapes
from data_prep.synapse import main as synapse_main

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _medsam_ft_log_level() -> Iterator[None]:
    """Tests that call the CLI in-process (it sets the "medsam_ft" logger's level) leave it as they found it."""
    logger = logging.getLogger("medsam_ft")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six phantom cases (Synapse ids 1-6: 1-4 are TransUNet test cases, 5-6 training)."""
    root = tmp_path_factory.mktemp("phantom")
    generate(root, cases=6, seed=0)
    return root


@pytest.fixture(scope="session")
def synapse_dataset(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six phantom cases with a datalist: 4 test, 1 validation, 1 training case."""
    root = tmp_path_factory.mktemp("bundle_data")
    shutil.copytree(phantom_dir, root, dirs_exist_ok=True)
    synapse_main(["--raw", str(root), "--out", str(root / "datalist.json"), "--val_cases", "1"])
    return root


def _run_bundle(config: str | Path, *args: str, env: dict[str, str] | None = None, torchrun: bool = False) -> str:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"] \
        if torchrun else [sys.executable]
    cmd = launcher + ["-m", "monai.bundle", "run", "--config_file", str(config), *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="session")
def run_bundle() -> Callable[..., str]:
    """``run_bundle(config, *overrides, env=None, torchrun=False)``: run ``python -m monai.bundle run``
    from the repository root, assert it succeeded, return its output."""
    return _run_bundle


def _shapes_dataset(root: Path, class_names: str, count: int, seed: int, val_fraction: float) -> Path:
    generate_shapes(root, count=count, seed=seed, classes=len(class_names.split(",")))
    folder2d_main(["--root", str(root), "--class_names", class_names, "--val_fraction", str(val_fraction)])
    return root


@pytest.fixture(scope="session")
def shapes_dataset() -> Callable[..., Path]:
    """``shapes_dataset(root, class_names, count, seed, val_fraction)``: generated 2D images and masks
    (``data_prep.shapes2d``; 2 or 3 classes as named) with their datalist, in ``root``."""
    return _shapes_dataset
