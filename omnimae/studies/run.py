"""`omnimae study`: pretrain and probe every variant x seed of a study, then write its table and plot.

Each run is its own process (`omnimae pretrain`, then `omnimae probe`) with one intra-op thread, so
`jobs` runs share the CPUs without oversubscribing them. A run whose folder holds a probe.json is
finished and skipped: a study that stopped resumes where it was; an unfinished run starts over.
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from omnimae.config.build import build_model
from omnimae.config.compose import compose, group_options
from omnimae.errors import ConfigError, OmniMAEError
from omnimae.studies.table import write_tables

# the CLI in a fresh interpreter (library code never imports omnimae.cli); -P keeps the working directory off
# sys.path, where a checkout's top-level tokenizers/ would shadow Hugging Face's
_CLI = "import sys; from omnimae.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass(frozen=True)
class Run:
    """One variant at one seed: its pretrain overrides and its folder."""

    variant: str
    seed: int
    overrides: tuple[str, ...]
    run_dir: Path

    @property
    def finished(self) -> bool:
        return (self.run_dir / "probe.json").is_file()

    @property
    def log(self) -> Path:
        return self.run_dir.parent / f"seed{self.seed}.log"  # beside the run: pretrain claims run_dir for itself


def _study(cfg: DictConfig) -> DictConfig:
    """The chosen study, checked: a name, seeds >= 1, variants as lists of overrides."""
    study = cfg.get("study")
    if study is None:
        known = group_options("study", ["study"])["study"]
        raise ConfigError("study", f"choose a study: study=<name>, one of {', '.join(known)}")
    if not isinstance(study.get("name"), str) or not study.name:
        raise ConfigError("study.name", "a study file names its study (name: <name>): its runs and tables go under that name")
    seeds = study.get("seeds")
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError("study.seeds", f"expected an integer >= 1, got {seeds!r}")
    variants = study.get("variants")
    if not variants:
        raise ConfigError("study.variants", "a study needs at least one variant (name: [override, ...])")
    for name, overrides in variants.items():
        if not OmegaConf.is_list(overrides) or not all(isinstance(o, str) for o in overrides):
            raise ConfigError(f"study.variants.{name}", f"expected a list of key=value overrides, got {overrides!r}")
    if not isinstance(cfg.jobs, int) or cfg.jobs < 1:
        raise ConfigError("jobs", f"expected an integer >= 1, got {cfg.jobs!r}")
    return study


def plan_runs(cfg: DictConfig) -> list[Run]:
    """Every variant x seed of the study, in order; each variant's config is composed and its model
    built first, so a bad override fails before any run starts, naming the variant."""
    study = _study(cfg)
    _check_overrides("probe_overrides", "probe", list(cfg.probe_overrides))
    runs = []
    for variant, overrides in study.variants.items():
        common = [*study.shared, *overrides, *cfg.overrides]
        _check_overrides(f"study.variants.{variant}", "pretrain", common)
        for seed in range(study.seeds):
            run_dir = Path(cfg.runs_root) / study.name / variant / f"seed{seed}"
            runs.append(Run(variant, seed, (*common, f"seed={seed}", "trainer.threads=1"), run_dir))
    return runs


def _check_overrides(key: str, config: str, overrides: list[str]) -> None:
    """Compose `config` with the overrides (and build the model, for pretrain), raising a ConfigError at `key`."""
    try:
        composed = compose(config, overrides)
        if config == "pretrain":
            build_model(composed)
    except OmniMAEError as e:
        raise ConfigError(key, f"{e}") from e
    except Exception as e:
        if type(e).__module__.startswith(("hydra", "omegaconf")):  # Hydra's errors name the override
            raise ConfigError(key, f"{e}") from e
        raise


def execute(run: Run, probe_overrides: tuple[str, ...] = ()) -> Run:
    """Pretrain (starting over if an earlier try stopped) and probe one run; the log keeps both outputs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = [
        ["pretrain", *run.overrides, f"run_dir={run.run_dir}", "overwrite=true"],
        ["probe", f"checkpoint={run.run_dir / 'checkpoints' / 'last.ckpt'}", *probe_overrides],
    ]
    run.log.parent.mkdir(parents=True, exist_ok=True)
    with open(run.log, "w") as log:
        for args in steps:
            log.write(f"$ omnimae {' '.join(args)}\n")
            log.flush()
            code = subprocess.run([sys.executable, "-P", "-c", _CLI, *args], stdout=log, stderr=subprocess.STDOUT, env=env).returncode
            if code != 0:
                raise OmniMAEError(f"{run.variant} seed {run.seed}: `omnimae {args[0]}` failed (exit {code}); see {run.log}")
    return run


def run_study(cfg: DictConfig) -> dict[str, Any]:
    """Run what is not finished, `jobs` at a time, then write the tables and the plot."""
    from tqdm.auto import tqdm

    runs = plan_runs(cfg)
    todo = [r for r in runs if not r.finished]
    failed = []
    with ThreadPoolExecutor(max_workers=cfg.jobs) as pool, tqdm(total=len(runs), initial=len(runs) - len(todo), desc=f"study {cfg.study.name}", unit="run") as bar:
        for future in as_completed([pool.submit(execute, r, tuple(cfg.probe_overrides)) for r in todo]):
            try:
                future.result()
            except OmniMAEError as e:  # the other runs go on; the failures are reported together
                failed.append(str(e))
            bar.update()
    done = [r for r in runs if r.finished]
    out = write_tables(done, Path(cfg.output) / cfg.study.name) if done else {}
    if failed:
        raise OmniMAEError(f"{len(failed)} of {len(runs)} runs failed:\n" + "\n".join(failed))
    return {"runs": len(runs), "ran": len(todo), "skipped": len(runs) - len(todo), **out}
