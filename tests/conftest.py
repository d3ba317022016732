"""Shared fixtures: a few tiny phantom cases in the raw Synapse layout, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data_prep.phantom import generate

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six phantom cases (Synapse ids 1-6: 1-4 are TransUNet test cases, 5-6 training)."""
    root = tmp_path_factory.mktemp("phantom")
    generate(root, cases=6, seed=0)
    return root
