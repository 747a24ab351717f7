"""Composing a verb's config with Hydra: omnimae's own config groups plus the researcher's folders.

`OMNIMAE_CONFIG_PATH` (os.pathsep-separated folders) adds configs, e.g. modality/<name>.yaml for a new
modality. Library code composes through here; the CLI is one caller among others.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf


def _search_path() -> list[str]:
    """The override adding the folders in OMNIMAE_CONFIG_PATH (os.pathsep-separated) to Hydra's search
    path: where a researcher's own configs (e.g. modality/<name>.yaml for a new modality) live."""
    import os

    extra = [str(Path(p).expanduser().resolve()) for p in os.environ.get("OMNIMAE_CONFIG_PATH", "").split(os.pathsep) if p]
    return [f"hydra.searchpath=[{','.join('file://' + p for p in extra)}]"] if extra else []


def compose(config_name: str, overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """Compose a config from omnimae's own groups plus the folders in OMNIMAE_CONFIG_PATH."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    overrides = [*_search_path(), *overrides]
    # `modality` is a config group for pretrain, but a plain key of embed, probe and export: Hydra
    # would read modality=audio there as a group that is not in their defaults, so it is set after
    plain = [] if config_name == "pretrain" else [o for o in overrides if o.split("=", 1)[0] in PLAIN_KEYS]
    overrides = [o for o in overrides if o not in plain]
    with initialize_config_module("omnimae.configs", version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=return_hydra_config)
    for o in plain:
        key, value = o.split("=", 1)
        OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None)
    return cfg


def group_options(config_name: str, groups: list[str]) -> dict[str, list[str]]:
    """The configs each Hydra group offers (omnimae's and OMNIMAE_CONFIG_PATH's), e.g. model -> [vit_base, ...]."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module("omnimae.configs", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return {g: loader.get_group_options(g, config_name=config_name, overrides=_search_path()) for g in groups}


PLAIN_KEYS = ("modality",)
