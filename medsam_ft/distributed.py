"""Where this process runs: its device, and its share of the data under DDP (none without it)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from monai.data import DistributedSampler
from torch import nn


def is_distributed() -> bool:
    """Whether this process is one of several (a DDP process group is initialised)."""
    return dist.is_available() and dist.is_initialized()


def local_rank() -> int:
    """This process's index on its machine (``torchrun``'s ``LOCAL_RANK``; 0 alone): its GPU under DDP."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_environment() -> None:
    """Join the DDP process group when launched by ``torchrun`` with several processes.

    ``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with ``WORLD_SIZE`` > 1 this
    process joins the group (NCCL and GPU ``LOCAL_RANK`` on CUDA machines, Gloo on CPUs). Nothing
    happens in a single process or when the group exists already.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or is_distributed():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def check_data_parallel(network: nn.Module) -> None:
    """Refuse to train unsynchronised copies: under DDP the trained network must be wrapped.

    Args:
        network: what the trainer trains.

    Raises:
        ValueError: several processes, and ``network`` not a ``DistributedDataParallel``.
    """
    if is_distributed() and not isinstance(network, nn.parallel.DistributedDataParallel):
        raise ValueError("launched as several processes (torchrun) but the network is not wrapped in "
                         "DistributedDataParallel: add bundles/common/multi_gpu_train.json to --config_file")


def is_main_process() -> bool:
    """Rank 0 of a DDP run, or the only process: the one that logs and writes files."""
    return not is_distributed() or dist.get_rank() == 0


def world_size() -> int:
    """The number of processes training together (1 without DDP)."""
    return dist.get_world_size() if is_distributed() else 1


def per_process_batch(batch_size: int, global_batch_size: int | None = None) -> int:
    """The batch each process loads.

    Args:
        batch_size: per process (the bundles' ``--batch_size``): N processes then step on N x that.
        global_batch_size: the samples per optimiser step over all processes; when given it decides
            (``--global_batch_size 24`` keeps SAMed's 24 on any number of GPUs).

    Returns:
        The per-process batch size.

    Raises:
        ValueError: a global batch size the number of processes does not divide.
    """
    if global_batch_size is None:
        return batch_size
    if global_batch_size % world_size():
        raise ValueError(f"--global_batch_size {global_batch_size} is not a multiple of the {world_size()} processes")
    return global_batch_size // world_size()


def train_sampler(dataset: torch.utils.data.Dataset) -> DistributedSampler | None:
    """This rank's shuffled share of the training samples under DDP (padded to equal shares); None
    (the data loader shuffles) in a single process.

    Args:
        dataset: the training samples.

    Returns:
        The sampler to give the training data loader, or None.
    """
    return DistributedSampler(dataset, shuffle=True, even_divisible=True) if is_distributed() else None


def validation_sampler(dataset: torch.utils.data.Dataset) -> DistributedSampler | None:
    """This rank's share of the validation volumes under DDP, without padding; None in a single process.

    With fewer volumes than ranks (where MONAI's uneven sharding fails), every rank gets one,
    repeating some (their metric counts twice).

    Args:
        dataset: the validation volumes or images.

    Returns:
        The sampler to give the validation data loader, or None.
    """
    if not is_distributed():
        return None
    return DistributedSampler(dataset, shuffle=False, even_divisible=len(dataset) < dist.get_world_size())


def resolve_device(device: str | None = None) -> torch.device:
    """The torch device a device name means.

    Args:
        device: ``"cuda"``, ``"cpu"``, ``"cuda:1"``...; None or ``"auto"``: CUDA when present (under
            DDP this process's GPU, ``LOCAL_RANK``), else CPU.

    Returns:
        The device.

    Raises:
        ValueError: CUDA asked for on a machine without it.
    """
    if device in (None, "", "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", local_rank()) if is_distributed() else torch.device("cuda")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return resolved
