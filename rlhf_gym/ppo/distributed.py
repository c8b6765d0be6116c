"""Data parallelism for the PPO/RLOO trainer: the few collectives it needs, and nothing for one process.

Launched by ``accelerate launch --multi_gpu --num_processes N -m rlhf_gym.cli train ppo ...`` (or
``torchrun --nproc_per_node N -m rlhf_gym.cli ...``; ``--multi_gpu`` is also what selects the
multi-process launcher on a CPU-only machine, where the ranks talk over gloo), each of the N
ranks:

- rolls out its contiguous 1/N of the global batch (the prompts are drawn identically on every
  rank; each response is sampled from its own generator, so the split changes no sample);
- gathers the rollout, so every rank holds the global batch: score normalisation, KL, GAE and
  whitening are computed over the global batch, exactly as one process would;
- does the no-grad forward passes on its own share and gathers them;
- trains on its 1/N of every mini-batch, with losses divided by the WHOLE mini-batch's token
  count and scaled by N: DDP's gradient average then equals the single-process gradient (the
  update's module and optimiser go through ``Accelerator.prepare``, so the launcher's accelerate
  config decides how: DDP by default, DeepSpeed if configured, see docs/scaling.md);
- only rank 0 writes files.

``DataParallel(1)`` (one process) passes everything through unchanged, so a single-process run
does exactly what it did before this module existed.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn


def launched_world_size() -> int:
    """The number of processes the launcher (accelerate, torchrun) started; 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class DataParallel:
    """This process's rank and the collectives the trainer uses (identity for one process)."""

    def __init__(self, device_kind: str = "cpu"):
        self.world_size = launched_world_size()
        self.rank, self.accelerator = 0, None
        if self.world_size > 1:
            try:
                from accelerate import Accelerator
                from accelerate.utils import DistributedDataParallelKwargs
            except ImportError as err:  # pragma: no cover - accelerate is a core dependency
                raise ImportError("data-parallel training needs `pip install accelerate`") from err
            # cpu=True: without it accelerate sets up no process group on a machine without GPUs;
            # find_unused_parameters: a full-model critic carries an LM head it never uses
            self.accelerator = Accelerator(cpu=device_kind == "cpu",
                                           kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
            self.rank = self.accelerator.process_index
            if self.accelerator.num_processes != self.world_size:
                raise RuntimeError(f"accelerate sees {self.accelerator.num_processes} processes, WORLD_SIZE says "
                                   f"{self.world_size}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """The rank's device (cuda:LOCAL_RANK on GPUs); None for one process (the config decides)."""
        return self.accelerator.device if self.accelerator is not None else None

    def check(self, batch_size: int, mini_batch_size: int) -> None:
        for name, value in (("batch_size", batch_size), ("mini_batch_size", mini_batch_size)):
            if value % self.world_size:
                raise ValueError(f"{name} {value} must be a multiple of the number of processes ({self.world_size}): "
                                 "it is the global size, split evenly across ranks")

    def share(self, n: int) -> slice:
        """This rank's contiguous part of n items (n a multiple of world_size)."""
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    # ------------------------------------------------------------------ collectives

    def gather(self, x: torch.Tensor, pad_value: float = 0, left: bool = False) -> torch.Tensor:
        """Concatenate every rank's ``x`` along dim 0, in rank order; a dim 1 of different
        lengths is padded to the longest (on the left for left-padded prompts)."""
        if self.world_size == 1:
            return x
        import torch.distributed as dist

        if x.dtype == torch.bool:  # not every backend reduces bools
            return self.gather(x.to(torch.uint8), pad_value, left).bool()
        if x.dim() > 1:
            width = torch.tensor([x.shape[1]], device=x.device)
            dist.all_reduce(width, op=dist.ReduceOp.MAX)
            extra = int(width) - x.shape[1]
            if extra:
                pad = torch.full((x.shape[0], extra, *x.shape[2:]), pad_value, dtype=x.dtype, device=x.device)
                x = torch.cat([pad, x] if left else [x, pad], 1)
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    def gather_objects(self, items: Sequence[Any]) -> list:
        if self.world_size == 1:
            return list(items)
        import torch.distributed as dist

        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, list(items))
        return [item for part in parts for item in part]

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks of equally long lists."""
        if self.world_size == 1 or not len(values):
            return list(values)
        import torch.distributed as dist

        arr = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(arr)
        return arr.tolist()

    def prepare(self, module: nn.Module, optimizer):
        """(module, optimiser) through ``Accelerator.prepare``: under DDP, backward averages the
        gradients over ranks. Unchanged for one process."""
        if self.world_size == 1:
            return module, optimizer
        return self.accelerator.prepare(module, optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        if self.world_size == 1:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def clip_grad_norm_(self, parameters, max_norm: float) -> None:
        if self.world_size == 1:
            torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        else:
            self.accelerator.clip_grad_norm_(parameters, max_norm)

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather_rollout(self, ro, pad_token_id: int):
        """Every rank's rollout concatenated in rank order: the global batch, padded as one
        process pads it (prompts on the left, responses on the right)."""
        if self.world_size == 1:
            return ro
        from rlhf_gym.ppo.rollout import Rollout

        keys = list(ro.components)
        return Rollout(
            prompts=self.gather_objects(ro.prompts), references=self.gather_objects(ro.references),
            query=self.gather(ro.query, pad_token_id, left=True), query_mask=self.gather(ro.query_mask, 0, left=True),
            response=self.gather(ro.response, pad_token_id), response_mask=self.gather(ro.response_mask, 0),
            texts=self.gather_objects(ro.texts), has_eos=self.gather(ro.has_eos),
            raw_scores=self.gather(ro.raw_scores), scores=self.gather(ro.scores),
            components={k: np.concatenate(self.gather_objects([ro.components[k]])) for k in keys},
            example_ids=self.gather_objects(ro.example_ids))


def sample_seeds(seed: int, iteration: int, indices: Sequence[int]) -> list[int]:
    """One generator seed per response, from (run seed, iteration, index in the global batch)."""
    return [int(np.random.SeedSequence([seed, iteration, int(i)]).generate_state(1)[0]) for i in indices]


class TrainForward(nn.Module):
    """The update's forward (policy log-probs and values) as one module, so DDP can wrap it:
    its parameters are the trainable ones of the policy and the critic (the reference and the
    rollout use ``parts`` directly, outside DDP)."""

    def __init__(self, parts):
        super().__init__()
        self.lm, self.value_head, self.value_model = parts.lm, parts.value_head, parts.value_model
        self._logp_values = parts.logp_values

    def forward(self, query, query_mask, response, response_mask, with_entropy: bool = False):
        """(logp, entropy, values): entropy None unless asked for, values None without a critic."""
        return self._logp_values(query, query_mask, response, response_mask, with_entropy=with_entropy)
