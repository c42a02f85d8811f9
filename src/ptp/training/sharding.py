"""FSDP (PyTorch's ``fully_shard``, FSDP2) for teachers too big to copy onto every process.

With ``train.sharding=fsdp`` and several processes (``accelerate launch --multi_gpu``), every decoder
layer of the Hugging Face network and then the whole trainable module become FSDP units: each process
keeps 1/world of every weight (the frozen teacher's included) and gathers a unit's weights only while
it runs. Gradients are reduce-scattered and averaged over processes as DDP would, so losses are the same.

The model is cut while still on the CPU: each unit moves to the device as it is sharded, so a device
never holds more than its shards plus one unit (each process does read the whole teacher into host
memory first). Checkpoints stay the single-process format: the trainable weights and the optimizer
state are gathered to full tensors (a collective: every process calls it) before the main process
writes them, and a resumed run shards the loaded state again. Works on CUDA (NCCL) and on the CPU (gloo).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

SHARDINGS = ("none", "fsdp")  # none: a whole copy per process (DDP over several)


def shard_model(model: nn.Module, network: nn.Module) -> None:
    """Make each decoder layer of ``network`` (inside ``model``) an FSDP unit, then ``model`` the root.

    Decoder layers are the classes the network names in ``_no_split_modules`` (every Hugging Face
    causal LM does). The root unit holds the rest: embeddings, output head, adapters, u-embedding.
    """
    names = set(getattr(network, "_no_split_modules", None) or ())
    layers = [m for m in network.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(network).__name__} names no decoder layer class (_no_split_modules); "
                         "cannot shard it: use train.sharding=none")
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def trainable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require grad, by name, as full tensors (collective when sharded).

    A sharded model is resharded first: after a forward without backward FSDP may still hold
    unsharded views, which are not the parameters it owns.
    """
    if is_sharded(model):
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()
    named = {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}
    return full_tensors(named)


def full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sharded tensors gathered to full ones (collective: call on every process, same order); others as is."""
    return {name: value.full_tensor() if isinstance(value, DTensor) else value for name, value in tensors.items()}


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer.state_dict()`` with every sharded state tensor gathered (collective when sharded)."""
    state = optimizer.state_dict()
    for index in sorted(state["state"]):
        entry = state["state"][index]
        state["state"][index] = full_tensors({key: entry[key] for key in sorted(entry)})
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full (single-process format) optimizer state, sharding it where the parameters are sharded.

    Each process keeps its own shard of every state tensor shaped like its sharded parameter; the rest
    (plain parameters' state, AdamW's step count) is loaded as it is.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, entry in state["state"].items():
        param = params[int(index)]
        if not isinstance(param, DTensor):
            continue
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                entry[key] = distribute_tensor(value.to(param.device), param.device_mesh, param.placements,
                                               src_data_rank=None)
    optimizer.load_state_dict(state)

