"""Batches as slices of tensors that live on the training device (the airbench way).

The whole split is moved to the device once; each epoch draws a permutation from a generator seeded by
(seed, epoch), so the order is reproducible and a resumed run sees the same batches. No Dataset,
no collate, no per-sample work on the hot path.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch

from trainstudy.data import DataSplits

# A resumed run skips the batches its epoch had done (see DeviceBatches.__iter__): position is a function of
# (seed, epoch, global step), so Lightning's loader state is not needed, and neither is its warning about it.
warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")


class Steps:
    """The batches of a few consecutive optimizer steps: their sample indices, cut from x and y when iterated
    (a group costs its indices in memory, not its samples)."""

    __slots__ = ("indices", "x", "y")

    def __init__(self, x: torch.Tensor, y: torch.Tensor, indices: list[torch.Tensor]):
        self.x, self.y, self.indices = x, y, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices[i]
        return self.x[idx], self.y[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.x, self.y
        for idx in self.indices:
            yield x[idx], y[idx]


class DeviceBatches:
    """An epoch of training steps cut from device tensors by a fresh seeded permutation, a few steps per item.

    Each item is a Steps group, one (x, y) batch per optimizer step, that StudyModule takes in one Lightning
    batch: Lightning's per-batch machinery costs about as much as a small model's whole step on a CPU, so
    consecutive steps share it. An item ends at every multiple of ``steps_per_batch`` in global steps (the
    steps at which checkpoints are written), at the epoch's end and at ``max_steps``; with
    ``steps_per_batch=1`` every item is one step.

    It has no ``len()`` on purpose: Lightning then ends an epoch where the iterator does, rather than after a
    count of batches that its own restored counters can get wrong (a run interrupted at an epoch's last batch
    resumed with one batch of the next epoch before moving on).

    ``batches_per_epoch`` cuts every epoch to its first batches (``limit_train_batches``); with ``same_batches``
    every epoch repeats epoch 0's first batches, in the same order (``overfit_batches``).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                 epoch: Callable[[], int], rank: int = 0, world_size: int = 1,
                 step: Callable[[], int] = lambda: 0, steps_per_batch: int = 1, max_steps: int = -1,
                 batches_per_epoch: int | None = None, same_batches: bool = False):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.epoch, self.rank, self.world_size, self.step = epoch, rank, world_size, step
        self.steps_per_batch, self.max_steps = steps_per_batch, max_steps
        self.batches_per_epoch, self.same_batches = batches_per_epoch, same_batches

    def permutation(self, epoch: int) -> torch.Tensor:
        """This rank's sample order for an epoch: a function of (seed, epoch) alone."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.x), generator=g)
        return perm[self.rank::self.world_size].to(self.x.device)

    def steps_per_epoch(self) -> int:
        n = -(-len(self.x) // self.world_size)
        full = -(-n // self.batch_size)
        return full if self.batches_per_epoch is None else min(full, self.batches_per_epoch)

    def __iter__(self) -> Iterator[Steps]:
        step = self.step()
        per_epoch = self.steps_per_epoch()
        # the epoch of the data is the one the steps done are in: Lightning counts an epoch that max_steps cut
        # short as completed, so a finished run extended by resume= would otherwise start the next epoch's
        # order where an uninterrupted run goes on with the rest of this one
        epoch = min(self.epoch(), step // per_epoch)
        perm = self.permutation(0 if self.same_batches else epoch)
        # a run resumed mid-epoch goes on with the batches it had not yet seen
        done = max(0, step - epoch * per_epoch)
        indices: list[torch.Tensor] = []
        for start in range(done * self.batch_size, min(len(perm), per_epoch * self.batch_size), self.batch_size):
            indices.append(perm[start:start + self.batch_size])
            step += 1
            if step % self.steps_per_batch == 0 or step == self.max_steps:
                yield Steps(self.x, self.y, indices)
                indices = []
                if step == self.max_steps:
                    return
        if indices:
            yield Steps(self.x, self.y, indices)


def steps_per_batch(*intervals: int, limit: int = 64) -> int:
    """The most steps (at most ``limit``) that can share a Lightning batch: a divisor of every interval, in
    steps, at which callbacks act at a batch's end (checkpoints); 0 stands for never. The limit bounds how long
    a SIGTERM waits for the batch to end."""
    common = math.gcd(*intervals)
    return max(k for k in range(1, limit + 1) if common % k == 0)


class StudyDataModule(L.LightningDataModule):
    """Holds the loaded splits and serves training batches from the training device; for ``trainer.validate``
    and ``trainer.test``, the whole val or test split as one batch (StudyModule sums it in its own chunks)."""

    def __init__(self, splits: DataSplits, batch_size: int, seed: int, steps_per_batch: int = 1,
                 batches_per_epoch: int | None = None, same_batches: bool = False):
        super().__init__()
        self.splits, self.batch_size, self.seed = splits, batch_size, seed
        self.steps_per_batch = steps_per_batch
        self.batches_per_epoch, self.same_batches = batches_per_epoch, same_batches  # see DeviceBatches

    def setup(self, stage: str | None = None) -> None:
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        s = self.splits
        s.x_train, s.y_train = s.x_train.to(device), s.y_train.to(device)
        s.x_val, s.y_val = s.x_val.to(device), s.y_val.to(device)
        if stage == "test":  # the test split joins the device only to be tested, never during training
            s.x_test, s.y_test = s.x_test.to(device), s.y_test.to(device)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # cut from tensors that already live on the training device

    def train_dataloader(self) -> DeviceBatches:
        trainer = self.trainer
        return DeviceBatches(self.splits.x_train, self.splits.y_train, self.batch_size, self.seed,
                             epoch=lambda: trainer.current_epoch, rank=trainer.global_rank,
                             world_size=trainer.world_size, step=lambda: trainer.global_step,
                             # DDP synchronizes gradients in the backward of a forward through its wrapper:
                             # one step per batch there
                             steps_per_batch=self.steps_per_batch if trainer.world_size == 1 else 1,
                             max_steps=trainer.max_steps, batches_per_epoch=self.batches_per_epoch,
                             same_batches=self.same_batches)

    def val_dataloader(self) -> WholeSplit:
        return WholeSplit(self.splits.x_val, self.splits.y_val)

    def test_dataloader(self) -> WholeSplit:
        return WholeSplit(self.splits.x_test, self.splits.y_test)


class WholeSplit:
    """A loader of one batch, the whole split (x, y) as it lies on the device. Not a list: Lightning would read
    a list of batches as a list of loaders."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield self.x, self.y
