"""A sampler of bank indices, reproducible per epoch.

The order is drawn from (seed, epoch) in the main process, so batches are identical
whatever the number of workers, and a run resumed at an epoch boundary sees exactly the
batches an uninterrupted run would have seen.
Under DDP each rank takes every ``world_size``-th item of the same epoch order (pass
``use_distributed_sampler=False`` to the Trainer; the trainer configs do).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from spinelesion.data.dataset import BankIndex


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class KeyedSampler(Sampler[int]):
    """Yields bank indices (:class:`~spinelesion.data.dataset.BankIndex`).

    Args:
        indices: dataset indices to draw from.
        shuffle: a new permutation every epoch (ignored when ``weights`` are given).
        weights: per-index sampling weights: draws ``num_samples`` with replacement
            (class-balanced sampling).
        num_samples: draws per epoch with weights (default: ``len(indices)``).
        drop_uneven: under DDP, drop the tail so every rank gets the same count
            (otherwise the tail is padded by repeating the first items).
    """

    def __init__(
        self,
        indices: Sequence[int],
        seed: int = 0,
        shuffle: bool = True,
        weights: Sequence[float] | np.ndarray | None = None,
        num_samples: int | None = None,
        drop_uneven: bool = False,
    ):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        if self.weights is not None and len(self.weights) != len(self.indices):
            raise ValueError("weights and indices differ in length")
        self.num_samples = int(num_samples or len(self.indices))
        self.drop_uneven = drop_uneven
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = int(epoch)

    def _order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            p = self.weights / self.weights.sum()
            return rng.choice(self.indices, size=self.num_samples, replace=True, p=p)
        return rng.permutation(self.indices) if self.shuffle else self.indices.copy()

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        rank, world = _dist_info()
        if world > 1:
            n = len(order) // world if self.drop_uneven else -(-len(order) // world)
            total = n * world
            if total > len(order):
                order = np.concatenate([order, order[: total - len(order)]])
            order = order[rank:total:world]
        return iter([BankIndex(i) for i in order.tolist()])

    def __len__(self) -> int:
        rank, world = _dist_info()
        n = len(self.indices) if self.weights is None else self.num_samples
        if world > 1:
            return n // world if self.drop_uneven else -(-n // world)
        return n
