"""Data-parallel training over processes started by torchrun: DistributedDataParallel, with NCCL on GPUs and
gloo on CPUs.

    torchrun --standalone --nproc_per_node=N -m minidreamer4 train ...

- Every rank samples its own batches (its sampler and noise are seeded with its rank); DDP averages the
  gradients, so every rank holds the same parameters after every step.
- Only rank 0 writes: config.json, metrics, TensorBoard, media, checkpoints, collected episodes. The others
  wait at a barrier where rank 0 works alone (collection, real-env evaluation, the report).
- Minute budgets: rank 0's clock decides, broadcast every step, so all ranks take the same number of steps.
- Resume works with any N: checkpoints hold the plain (unwrapped) model and optimizer, which are the same
  on every rank.
Without torchrun (WORLD_SIZE unset or 1) every function here is a no-op and nothing is wrapped.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    """Processes in the joined group (1 before `init`: collectives need the group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank; torchrun's RANK before the group is joined, so that work done before `init` (the
    run folder, the first collection) is still rank 0's alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init(device: torch.device) -> None:
    """Joins the process group torchrun set up (once per process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around a module whose forward returns (loss, metrics); the module itself when alone.
    find_unused_parameters: a step may leave some parameters out (e.g. the no-action embedding when every
    frame of a batch has an action)."""
    if world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _tensor(x, device: torch.device) -> torch.Tensor:
    dev = device if dist.get_backend() == "nccl" else torch.device("cpu")
    return torch.tensor([x], dtype=torch.float64, device=dev)


def from_main(x: float, device: torch.device) -> float:
    """Rank 0's value of a float on every rank (used for the elapsed time that decides minute budgets)."""
    if world_size() == 1:
        return x
    t = _tensor(x, device)
    dist.broadcast(t, 0)
    return float(t.item())


def broadcast_params(model: nn.Module, device: torch.device) -> None:
    """Rank 0's parameters on every rank (a module that each rank fitted apart, outside DDP)."""
    if world_size() == 1:
        return
    for p in model.parameters():
        t = p.data if dist.get_backend() == "nccl" else p.data.cpu()
        dist.broadcast(t, 0)
        p.data.copy_(t)


def param_divergence(model: nn.Module, device: torch.device) -> float:
    """max |theta_rank - theta_rank0| over every parameter and rank: exactly 0 when DDP kept them in step."""
    if world_size() == 1:
        return 0.0
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    if dist.get_backend() != "nccl":
        flat = flat.cpu()
    ref = flat.clone()
    dist.broadcast(ref, 0)
    d = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(d, op=dist.ReduceOp.MAX)
    return float(d.item())
