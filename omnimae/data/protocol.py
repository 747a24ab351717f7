"""The contract between a modality's data and everything that reads it (training, probe, embed, serving).

A data source (`modalities.<name>.data` in a config) lists its files or samples once, in `splits()`,
and makes a dataset per split. Optional features are declared here with their defaults, so callers
read them directly instead of probing with hasattr:

- `SampleSet.groups`: None, or one hashable key per sample (e.g. its channel names) where samples
  differ in token count; batches then hold one group each.
- `SampleSet.stand_ins`: whether an unreadable item may borrow the next readable one's data (the
  skip_bad policy, `omnimae.data.skip`); False where each item must be its own (embeddings by file).
- `DataSource.root`: the folder or file the source reads, None for built-in or generated data.
"""
from __future__ import annotations

from typing import Any, Hashable, NamedTuple, Protocol, Sequence, runtime_checkable

from torch.utils.data import Dataset


class Split(NamedTuple):
    """One split of a data source: what it reads (paths, manifest rows, an in-memory tensor) and a label
    per sample (-1: unlabeled)."""

    source: Any
    labels: Sequence[int]


class SampleSet(Dataset):
    """Base of every modality's dataset: keys are an index or (index, seed); the declared options below."""

    labels: Sequence[int] = ()  # one per sample, -1 where unlabeled
    groups: Sequence[Hashable] | None = None
    stand_ins: bool = True


@runtime_checkable
class DataSource(Protocol):
    """What `modalities.<name>.data` builds: splits listed once (every file checked), and datasets."""

    root: Any

    def splits(self) -> dict[str, Split]:
        ...

    def dataset(self, split: str, train: bool) -> SampleSet:
        ...
