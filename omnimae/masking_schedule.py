"""Mask-ratio schedules: the ratio of a training step as a closed form of the global step.

An adapter's `mask_ratio` is a number (a constant ratio, as before) or a schedule node:

    mask_ratio: {schedule: constant, value: 0.75}
    mask_ratio: {schedule: linear, start: 0.6, end: 0.85, steps: 10000}   # straight ramp, then end
    mask_ratio: {schedule: cosine, start: 0.6, end: 0.85, steps: 10000}   # half-cosine ramp, then end
    mask_ratio: {schedule: steps, values: [0.6, 0.75, 0.85], boundaries: [1000, 2000]}

Every ratio depends on the optimizer step alone (no state), so a resumed run draws the ratios the
uninterrupted run drew, as the lr schedule does. A ramp without `steps` spans the whole run: the
training step passes the run's length in optimizer steps, the total the lr schedule uses.
Evaluation, embedding and reconstruction use `final`, the ratio at the end of the schedule.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from omnimae.errors import ConfigError

# each schedule's keys beside `schedule`, the required ones first
SCHEDULE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "constant": (("value",), ()),
    "linear": (("start", "end"), ("steps",)),
    "cosine": (("start", "end"), ("steps",)),
    "steps": (("values", "boundaries"), ()),
}


@dataclass(frozen=True)
class MaskRatioSchedule:
    """A mask ratio per optimizer step. `ratios`: (value,) for constant, (start, end) for the ramps,
    the plateaus for steps; `boundaries`: the steps at which a steps schedule moves to its next value."""

    kind: str
    ratios: tuple[float, ...]
    keys: tuple[str, ...]  # each ratio's config key: mask_ratio, mask_ratio.start, mask_ratio.values[1], ...
    steps: int | None = None
    boundaries: tuple[int, ...] = ()

    def __call__(self, step: int, total: int | None = None) -> float:
        """The ratio at optimizer step `step`; a ramp without its own `steps` spans `total` steps."""
        if self.kind == "constant":
            return self.ratios[0]
        if self.kind == "steps":
            return self.ratios[bisect_right(self.boundaries, step)]
        length = self.steps or total
        if length is None:
            raise ValueError(f"a {self.kind} mask-ratio schedule without steps needs the run's length (total)")
        start, end = self.ratios
        t = min(max(step, 0), length) / max(length, 1)  # progress through the ramp, in [0, 1]
        if self.kind == "cosine":
            t = (1 - math.cos(math.pi * t)) / 2
        return start + (end - start) * t

    @property
    def final(self) -> float:
        """The ratio at the end of the schedule: what evaluation, embedding and reconstruction use."""
        return self.ratios[-1]

    def corners(self) -> list[tuple[str, float]]:
        """(config key, ratio) for each ratio the schedule reaches at an end or a plateau: every ratio it
        ever draws lies between their least and greatest (the ramps are monotone)."""
        return list(zip(self.keys, self.ratios))


def _ratio(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number in (0, 1), got {value!r}")
    if not 0.0 < value < 1.0:
        raise ConfigError(key, f"must lie in (0, 1), got {value}")
    return float(value)


def _step_count(value, key: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(key, f"expected an integer >= {least}, got {value!r}")
    return value


def _schedule_node(node: Mapping) -> tuple[str, dict]:
    """The schedule's name and its other keys, each known to that schedule and the required ones present."""
    kind = node.get("schedule")
    if kind not in SCHEDULE_KEYS:
        got = "no schedule key" if kind is None else f"unknown schedule {kind!r}"
        raise ConfigError("mask_ratio.schedule", f"{got}; known: {', '.join(SCHEDULE_KEYS)}")
    required, optional = SCHEDULE_KEYS[kind]
    keys = {k: v for k, v in node.items() if k != "schedule"}
    for k in keys:
        if k not in required + optional:
            raise ConfigError(f"mask_ratio.{k}", f"unknown key for the {kind} schedule; it takes {', '.join(required + optional)}")
    for k in required:
        if keys.get(k) is None:
            raise ConfigError(f"mask_ratio.{k}", f"missing: the {kind} schedule needs {', '.join(required)}")
    return kind, keys


def parse_mask_ratio(value) -> MaskRatioSchedule:
    """A config's `mask_ratio` (a number or a schedule node) -> its schedule, every ratio in (0, 1);
    errors name the key under `mask_ratio`."""
    if not isinstance(value, Mapping):
        return MaskRatioSchedule("constant", (_ratio(value, "mask_ratio"),), ("mask_ratio",))
    kind, keys = _schedule_node(value)
    if kind == "constant":
        return MaskRatioSchedule(kind, (_ratio(keys["value"], "mask_ratio.value"),), ("mask_ratio.value",))
    if kind in ("linear", "cosine"):
        names = ("mask_ratio.start", "mask_ratio.end")
        ratios = (_ratio(keys["start"], names[0]), _ratio(keys["end"], names[1]))
        steps = None if keys.get("steps") is None else _step_count(keys["steps"], "mask_ratio.steps", 1)
        return MaskRatioSchedule(kind, ratios, names, steps)
    for k in ("values", "boundaries"):
        if isinstance(keys[k], str) or not isinstance(keys[k], Sequence):
            raise ConfigError(f"mask_ratio.{k}", f"expected a list, got {keys[k]!r}")
    values, boundaries = list(keys["values"]), list(keys["boundaries"])
    names = tuple(f"mask_ratio.values[{i}]" for i in range(len(values)))
    ratios = tuple(_ratio(v, name) for v, name in zip(values, names))
    bounds = tuple(_step_count(b, f"mask_ratio.boundaries[{i}]", 1) for i, b in enumerate(boundaries))
    if len(ratios) != len(bounds) + 1:
        raise ConfigError("mask_ratio.values", f"has {len(ratios)} values for {len(bounds)} boundaries; "
                                               f"a steps schedule takes one value more than boundaries")
    for i in range(1, len(bounds)):
        if bounds[i] <= bounds[i - 1]:
            raise ConfigError(f"mask_ratio.boundaries[{i}]", f"{bounds[i]} does not exceed the boundary before it "
                                                             f"({bounds[i - 1]}); boundaries must increase")
    return MaskRatioSchedule(kind, ratios, names, boundaries=bounds)
