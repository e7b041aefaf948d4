"""Batches as slices of tensors that live on the training device (the airbench way).

The whole split is moved to the device once; each epoch draws a permutation from a generator seeded by
(seed, epoch), so the order is reproducible and a resumed run sees the same batches. No Dataset,
no collate, no per-sample work on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import torch

from trainstudy.data import DataSplits


class DeviceBatches:
    """An epoch of (x, y) batches cut from device tensors by a fresh seeded permutation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                 epoch: Callable[[], int], rank: int = 0, world_size: int = 1):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.epoch, self.rank, self.world_size = epoch, rank, world_size

    def permutation(self, epoch: int) -> torch.Tensor:
        """This rank's sample order for an epoch: a function of (seed, epoch) alone."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.x), generator=g)
        return perm[self.rank::self.world_size].to(self.x.device)

    def __len__(self) -> int:
        n = -(-len(self.x) // self.world_size)
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = self.permutation(self.epoch())
        for start in range(0, len(perm), self.batch_size):
            idx = perm[start:start + self.batch_size]
            yield self.x[idx], self.y[idx]


class StudyDataModule(L.LightningDataModule):
    """Holds the loaded splits and serves training batches from the training device."""

    def __init__(self, splits: DataSplits, batch_size: int, seed: int):
        super().__init__()
        self.splits, self.batch_size, self.seed = splits, batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        s = self.splits
        s.x_train, s.y_train = s.x_train.to(device), s.y_train.to(device)
        s.x_val, s.y_val = s.x_val.to(device), s.y_val.to(device)

    def train_dataloader(self) -> DeviceBatches:
        trainer = self.trainer
        return DeviceBatches(self.splits.x_train, self.splits.y_train, self.batch_size, self.seed,
                             epoch=lambda: trainer.current_epoch,
                             rank=trainer.global_rank, world_size=trainer.world_size)
