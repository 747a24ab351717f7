"""The verbs of `omnimae`: what each runs, the config it composes, its help, how its result prints."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omnimae.cli.stats import run_stats
from omnimae.cli.summary import print_forecast, print_pretrain


def list_modalities(_cfg: None) -> None:
    """`omnimae modalities`: every registered adapter and its class."""
    from omnimae.adapter import MODALITIES
    import omnimae.modalities  # noqa: F401 - registers the adapters

    for name, cls in sorted(MODALITIES.items()):
        print(f"{name:<12} {cls.__module__}.{cls.__qualname__}")


@dataclass(frozen=True)
class Verb:
    """One `omnimae VERB`: how it runs; its --help and the usage text are built from these fields."""

    purpose: str
    example: str
    run: str | Callable[[Any], Any]  # "module:function" (imported when it runs) or a function, given the composed config
    config: str | None = None  # the config it composes (configs/<config>.yaml); None: it takes no options
    base: tuple[str, ...] = ()  # overrides it always applies, before the user's
    # the keys its help shows (required ones always are), each with a note; "" takes the config files' comment.
    # Empty: every key of its config
    options: Mapping[str, str] = field(default_factory=dict)
    show: Callable[[Any], None] | None = None  # prints the result


VERBS = {
    "pretrain": Verb(
        "train an MAE (no arguments: the embedded digits demo)",
        "omnimae pretrain experiment=none model=vit_small data.root=/data/images trainer.max_epochs=5",
        "omnimae.train.pretrain:pretrain", "pretrain",
        options={"experiment": "", "modality": "", "model": "", "trainer": "", "data.root": "", "run_dir": "",
                 "resume": "", "seed": "", "trainer.max_steps": "training steps (or trainer.max_epochs)",
                 "optim.base_lr": "lr = base_lr x effective batch / 256", "callbacks.checkpoint_every_n_steps": ""},
        show=print_pretrain,
    ),
    "probe": Verb("linear and kNN probe of a checkpoint's frozen encoder against raw pixels and random weights",
                  "omnimae probe checkpoint=latest", "omnimae.probe:run_probe", "probe"),
    "forecast": Verb(
        "zero-shot forecast of a CSV / netCDF / zarr file with a vision MAE (VisionTS)",
        "omnimae forecast --input sales.csv --horizon 24 --periodicity auto",
        "omnimae.forecasting.run:run_forecast", "forecast",
        options={k: "" for k in ("checkpoint", "input", "horizon", "output", "context", "periodicity", "time_column",
                                 "variables", "truth", "plot", "device", "overwrite")},
        show=print_forecast,
    ),
    "forecast-eval": Verb("rolling-origin backtest of a checkpoint on real series beside classical baselines",
                          "omnimae forecast-eval n_origins=3", "omnimae.forecasting.run:run_forecast_eval", "forecast_eval"),
    "embed": Verb("per-file embeddings of a checkpoint's frozen encoder to netCDF or zarr",
                  "omnimae embed checkpoint=latest data_root=/data/images output=emb.nc", "omnimae.embedding:run_embed", "embed"),
    "export": Verb("write a checkpoint as safetensors, official MAE (.pth) or timm ViT weights",
                   "omnimae export checkpoint=runs/.../last.ckpt format=timm output=vit.pth", "omnimae.export:run_export", "export"),
    "stats": Verb(
        "log-mel mean and std of a folder of audio, for modalities.audio.adapter.mean/std",
        "omnimae stats data.root=/data/audio", run_stats, "pretrain", base=("experiment=none", "modality=audio"),
        options={"data.root": "the folder of audio files", **{f"modalities.audio.adapter.{k}": "" for k in
                                                              ("sample_rate", "target_length", "mel_bins")}},
    ),
    "serve": Verb("the encoder behind an HTTP API: /embed, /forecast, /info (FastAPI, micro-batched, optionally int8)",
                  "omnimae serve checkpoint=runs/.../last.ckpt quantize=int8 port=8000", "omnimae.serve.run:run_serve", "serve"),
    "masks": Verb("PNGs of sample masks of each masking strategy on a modality's token grid",
                  "omnimae masks modality=image masking=spiral", "omnimae.cli.masks:run_masks", "masks"),
    "study": Verb("pretrain and probe every variant x seed of a study; a table (mean +- std over seeds) and a plot",
                  "omnimae study study=decoder_depth jobs=2", "omnimae.studies.run:run_study", "study",
                  options={k: "" for k in ("study", "jobs", "runs_root", "output", "overrides", "probe_overrides")},
                  show=lambda r: print("\n".join(f"{k:<10} {v}" for k, v in r.items()))),
    "modalities": Verb("list the registered modality adapters", "omnimae modalities", list_modalities),
}
