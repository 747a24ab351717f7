"""Training data for Lightning: loaders that resume mid-epoch, the joint-run mix, and the data module.

A batch holds one modality, as {modality: tensor (or a nest of tensors)}. A run of several
modalities draws one modality per step by its sampling weight (`MixedLoader`).
"""
from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any, Callable, Iterator, Mapping

import lightning as L
import torch
from torch.utils.data import DataLoader, default_collate

from omnimae.config.schema import ModalityRun
from omnimae.data.samplers import GroupedBatchSampler, SeededSampler, mix_seed
from omnimae.errors import ConfigError, OmniMAEError


class ResumableLoader(DataLoader):
    """A DataLoader whose position inside an epoch goes into checkpoints, so a run resumed mid-epoch
    sees the rest of that epoch's data in the same order.

    The position is the number of batches the trainer has processed this epoch (not what the
    loader has yielded, which runs ahead by Lightning's prefetch); on resume, the sampler skips them
    without loading anything.
    """

    def __init__(self, *args, progress: Callable[[], int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._progress = progress  # () -> batches processed in the current epoch

    def state_dict(self) -> dict:
        return {"batches": int(self._progress()) if self._progress else 0}

    def load_state_dict(self, state: dict) -> None:
        batches = int(state.get("batches", 0))
        if self.batch_sampler is not None and isinstance(self.batch_sampler, GroupedBatchSampler):
            self.batch_sampler.skip = batches
        elif isinstance(self.sampler, SeededSampler):
            self.sampler.skip = batches * self.batch_size


class MixedLoader:
    """Joint pretraining: each step draws one modality by its sampling weight (from a generator
    seeded by seed and epoch) and takes that modality's next batch; a modality's loader that runs
    out starts over with a fresh order. An epoch is as many steps as all modalities' batches together.

    Stateful like `ResumableLoader`: its position is the number of steps the trainer processed this
    epoch. On resume the draws of the skipped steps are replayed by counting (which round of each
    modality's loader, how far into it), so nothing is loaded twice and the rest of the epoch comes
    in the same order as in an uninterrupted run.
    """

    def __init__(self, loaders: Mapping[str, DataLoader], weights: Mapping[str, float], seed: int,
                 progress: Callable[[], int] | None = None):
        self.loaders, self.seed, self.epoch = dict(loaders), seed, 0
        self.names = sorted(self.loaders)
        self.weights = torch.tensor([float(weights[m]) for m in self.names])
        self._progress = progress  # () -> steps processed in the current epoch
        self.skip = 0  # steps of this epoch already trained on (a mid-epoch resume), skipped once

    @property
    def sampler(self) -> "MixedLoader":
        """Lightning sets the epoch through `loader.sampler.set_epoch`: here, on the mix itself."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders.values())

    def state_dict(self) -> dict:
        return {"batches": int(self._progress()) if self._progress else 0}

    def load_state_dict(self, state: dict) -> None:
        self.skip = int(state.get("batches", 0))

    def _picks(self) -> list[str]:
        """The modality of every step of this epoch."""
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 7))
        picks = torch.multinomial(self.weights, len(self), replacement=True, generator=g).tolist()
        return [self.names[k] for k in picks]

    def _iter_round(self, m: str, round_: int, skip: int = 0) -> Iterator:
        """An iterator over round `round_` of modality m's loader (a fresh, reproducible order each
        round), `skip` batches in."""
        loader = self.loaders[m]
        if isinstance(loader, ResumableLoader):  # omnimae's loaders: seeded samplers, skipping without loading
            for sampler in (loader.sampler, loader.batch_sampler):
                if isinstance(sampler, (SeededSampler, GroupedBatchSampler)):
                    sampler.set_epoch(self.epoch * 1000 + round_)
            if skip:
                loader.load_state_dict({"batches": skip})
            return iter(loader)
        it = iter(loader)  # any other iterable (tests, plain lists): one order, skipped by drawing
        for _ in range(skip):
            next(it)
        return it

    def __iter__(self) -> Iterator:
        picks = self._picks()
        skip, self.skip = min(self.skip, len(picks)), 0
        taken = {m: picks[:skip].count(m) for m in self.names}
        rounds, iters = {}, {}
        for m in self.names:
            rounds[m], pos = divmod(taken[m], len(self.loaders[m]))
            iters[m] = self._iter_round(m, rounds[m], pos)
        for m in picks[skip:]:
            try:
                yield next(iters[m])
            except StopIteration:
                rounds[m] += 1
                iters[m] = self._iter_round(m, rounds[m])
                yield next(iters[m])


class ChainedLoader:
    """Validation over several modalities: every modality's loader in turn."""

    def __init__(self, loaders: Mapping[str, DataLoader]):
        self.loaders = [loaders[m] for m in sorted(loaders)]

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)

    def __iter__(self) -> Iterator:
        for loader in self.loaders:
            yield from loader


def collate_as(modality: str, items: list) -> dict:
    """A batch keyed by its modality: {modality: tensors (or nests of them, e.g. pixels and ids)}."""
    return {modality: default_collate(items)}


class MAEDataModule(L.LightningDataModule):
    """One modality per batch, batches as {modality: tensor}; several modalities mix by sampling weight.

    `data` maps each modality to its data source (what `build_data` returns), `runs` to its
    `ModalityRun` (batch size, workers, sampling weight).
    """

    def __init__(self, data: Mapping[str, Any], runs: Mapping[str, ModalityRun], seed: int):
        super().__init__()
        self.data, self.runs, self.seed = dict(data), dict(runs), seed
        self.modalities = sorted(self.data)

    def setup(self, stage: str | None = None) -> None:
        self.train_sets = {m: d.dataset("train", train=True) for m, d in self.data.items()}
        self.val_sets = {m: d.dataset("val", train=False) for m, d in self.data.items()}
        for m, ds in self.train_sets.items():
            if len(ds) < self.runs[m].batch_size:
                raise OmniMAEError(
                    f"modalities.{m}.batch_size={self.runs[m].batch_size} is larger than the {len(ds)} training samples"
                )

    def _loader(self, modality: str, dataset, shuffle: bool, drop_last: bool) -> ResumableLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        run = self.runs[modality]
        groups = dataset.groups  # datasets whose samples differ in shape group them
        if groups is not None:
            batching = dict(batch_sampler=GroupedBatchSampler(
                groups, run.batch_size, self.seed, shuffle=shuffle, drop_last=drop_last, rank=rank, world_size=world))
        else:
            sampler = SeededSampler(len(dataset), self.seed, shuffle=shuffle, rank=rank, world_size=world)
            batching = dict(batch_size=run.batch_size, sampler=sampler, drop_last=drop_last)
        return ResumableLoader(
            dataset,
            **batching,
            progress=self._batches_done if shuffle else None,
            num_workers=run.num_workers,
            persistent_workers=run.num_workers > 0,
            collate_fn=partial(collate_as, modality),
            pin_memory=torch.cuda.is_available(),
        )

    def _batches_done(self) -> int:
        """Batches processed in the current epoch; 0 once the epoch is complete (the next one starts whole)."""
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return 0 if done >= self.trainer.num_training_batches else done

    def _check_whole_batch(self, modality: str, loader: DataLoader) -> None:
        """A loader without a single batch (e.g. channel groups each smaller than a batch, or too few
        samples per rank) would train nothing: name the batch size and what it meets."""
        if len(loader):
            return
        groups = self.train_sets[modality].groups
        sizes = "" if groups is None else f" in groups of {sorted(Counter(groups).values(), reverse=True)}"
        processes = self.trainer.world_size if self.trainer else 1
        raise ConfigError(f"modalities.{modality}.batch_size",
                          f"{self.runs[modality].batch_size} leaves no whole batch of the "
                          f"{len(self.train_sets[modality])} training samples{sizes} on each of {processes} process(es)")

    def train_dataloader(self) -> ResumableLoader | MixedLoader:
        loaders = {m: self._loader(m, ds, shuffle=True, drop_last=True) for m, ds in self.train_sets.items()}
        for m, loader in loaders.items():
            self._check_whole_batch(m, loader)
        if len(loaders) == 1:
            return next(iter(loaders.values()))
        weights = {m: self.runs[m].sampling_weight for m in loaders}
        return MixedLoader(loaders, weights, self.seed, progress=self._batches_done)

    def val_dataloader(self) -> ResumableLoader | ChainedLoader | list:
        loaders = {m: self._loader(m, ds, shuffle=False, drop_last=False) for m, ds in self.val_sets.items() if len(ds)}
        if not loaders:
            return []
        return next(iter(loaders.values())) if len(loaders) == 1 else ChainedLoader(loaders)
