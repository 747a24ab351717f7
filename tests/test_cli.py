"""The command line as a new user meets it: each verb's help, the pretrain summary and what it
suggests next, embed on one file, and the names it gives."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from omnimae.config.build import build_model
from omnimae.cli import VERBS, compose, main
from omnimae.cli.summary import print_pretrain

TINY_IMAGES = ["model=vit_tiny", "experiment=none", "trainer=debug", "modalities.image.adapter.img_size=16",
               "modalities.image.adapter.patch_size=4", "modalities.image.num_workers=0", "callbacks.reconstruction_samples=2"]


# --- help ---------------------------------------------------------------------------------
def shown_options(text: str) -> dict[str, str]:
    """key -> default as the help prints them (`  key=default   note`, two spaces in)."""
    section = text.split("main options", 1)[1].split("\n\n", 1)[0] if "main options" in text else ""
    return dict(m.groups() for m in re.finditer(r"^  ([\w.-]+)=(\S+)", section, flags=re.M))


def composed_value(cfg, key: str):
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_answers_help_with_its_options_their_defaults_and_an_example(verb, capsys):
    assert main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    v = VERBS[verb]
    assert out.startswith(f"omnimae {verb}: {v.purpose}") and v.example in out
    if v.config is None:
        return
    shown = shown_options(out)
    choices = compose(v.config, list(v.base), return_hydra_config=True).hydra.runtime.choices
    cfg = compose(v.config, list(v.base))
    required = OmegaConf.missing_keys(cfg)
    assert shown and required <= set(shown)
    parse = OverridesParser.create().parse_override
    for key, text in shown.items():
        if key in required:
            assert text == "???", key
        elif key in choices:  # a config group: the config it composes by default (null: none)
            assert parse(f"{key}={text}").value() == choices[key], key
        else:  # read back as Hydra reads an override: the composed config's value
            assert parse(f"{key}={text}").value() == composed_value(cfg, key), key


@pytest.mark.parametrize("value", ["runs/x/last.ckpt", "a b", "null", "true", "1.5", "it's", "", "32-true", 1e-4,
                                   -3, False, None, [1, "a b", None], {"k": [0.5, "v"]}])
def test_a_default_is_shown_as_an_override_that_reads_back_as_itself(value):
    from omnimae.cli.help import as_override

    assert OverridesParser.create().parse_override(f"key={as_override(value)}").value() == value


def test_help_stands_anywhere_and_needs_no_runner(capsys):
    assert main(["embed", "--help"]) == 0
    page = capsys.readouterr().out
    assert main(["embed", "checkpoint=x.ckpt", "-h", "output=y.nc"]) == 0
    assert capsys.readouterr().out == page
    assert main(["help", "embed"]) == 0
    assert capsys.readouterr().out == page
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert all(f"  {verb} " in usage and v.example in usage for verb, v in VERBS.items())
    code = ("import sys; from omnimae.cli import main; rc = main(['pretrain', '--help']); "
            "heavy = [m for m in ('torch', 'lightning', 'omnimae.train.pretrain') if m in sys.modules]; "
            "sys.exit(f'imported {heavy}' if heavy else rc)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "config error" not in run.stdout + run.stderr


# --- the pretrain summary -----------------------------------------------------------------
def summary(capsys, result: dict) -> tuple[dict[str, str], list[str]]:
    print_pretrain(result)
    text = capsys.readouterr().out
    body = text.split("omnimae pretrain finished:\n", 1)[1].split("\n\n", 1)[0]
    listed = dict(line.split(None, 1) for line in body.splitlines())
    return listed, re.findall(r"^next: (.*)$", text, flags=re.M)


def flat_images(folder: Path, n: int = 12) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_a_short_run_lists_only_files_that_exist_in_one_style_and_suggests_embed(tmp_path, monkeypatch, capsys):
    """Two steps, before any log line or validation: no metrics.csv and no best.ckpt exist, so neither is
    listed; every path is relative under the current folder (the run was given an absolute run_dir),
    absolute from elsewhere. Unlabeled data: the suggestion is embed, and it runs."""
    from omnimae.train.pretrain import pretrain

    monkeypatch.chdir(tmp_path)
    flat_images(tmp_path / "flat")
    result = pretrain(compose("pretrain", TINY_IMAGES + [
        "data.root=flat", f"run_dir={tmp_path / 'run'}", "trainer.max_steps=2", "trainer.log_every_n_steps=50",
        "modalities.image.batch_size=2"]))
    listed, steps = summary(capsys, result)
    paths = {k: v for k, v in listed.items() if k in ("run_dir", "checkpoint", "best", "reconstructions", "logs", "tensorboard")}
    assert {"run_dir", "checkpoint", "reconstructions"} <= set(paths)
    assert not list((tmp_path / "run").glob("**/metrics.csv")) and "logs" not in paths
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists() and "best" not in paths
    for key, shown in paths.items():
        assert not Path(shown).is_absolute() and (tmp_path / shown).exists(), (key, shown)
    assert paths["checkpoint"] == str(Path("run") / "checkpoints" / "last.ckpt")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    listed_there, _ = summary(capsys, result)
    for key, shown in paths.items():
        assert listed_there[key] == str((tmp_path / shown).resolve()), key
    monkeypatch.chdir(tmp_path)

    assert len(steps) == 1 and steps[0].startswith("omnimae embed ")
    assert main(shlex.split(steps[0])[1:]) == 0
    import xarray as xr

    assert sorted(xr.load_dataset(tmp_path / "run" / "embeddings.nc")["file"].values) == sorted(f"{i}.png" for i in range(12))


def test_labeled_data_suggests_the_probe_and_it_runs(image_folder, tmp_path_factory, monkeypatch, capsys):
    from omnimae.train.pretrain import pretrain

    work = tmp_path_factory.mktemp("work")  # not inside the data folder (image_folder is its tmp_path)
    monkeypatch.chdir(work)
    result = pretrain(compose("pretrain", TINY_IMAGES + [
        f"data.root={image_folder}", "run_dir=run", "trainer.max_steps=2", "modalities.image.batch_size=4"]))
    _, steps = summary(capsys, result)
    assert steps == [f"omnimae probe checkpoint={Path('run') / 'checkpoints' / 'last.ckpt'}"]
    assert main(shlex.split(steps[0])[1:]) == 0
    assert (work / "run" / "probe.json").is_file()


# --- embed ----------------------------------------------------------------------------------
@pytest.fixture
def image_checkpoint(tmp_path):
    from omnimae.checkpoint.format import save_safetensors

    cfg = compose("pretrain", TINY_IMAGES)
    torch.manual_seed(0)
    return save_safetensors(build_model(cfg), cfg, tmp_path / "m.safetensors")


def test_embed_takes_one_file_as_data_root_or_data_root_dotted(image_checkpoint, image_folder, tmp_path):
    """One file embeds as one row, named by its file name, with the embedding it gets among its folder."""
    import xarray as xr

    assert main(["embed", f"checkpoint={image_checkpoint}", f"data_root={image_folder}", f"output={tmp_path / 'all.nc'}"]) == 0
    every = xr.load_dataset(tmp_path / "all.nc")
    one_file = image_folder / "b" / "3.png"
    row = list(every["file"].values).index("b/3.png")
    for key in ("data_root", "data.root"):
        out = tmp_path / f"{key}.nc"
        assert main(["embed", f"checkpoint={image_checkpoint}", f"{key}={one_file}", f"output={out}"]) == 0
        one = xr.load_dataset(out)
        assert list(one["file"].values) == ["3.png"] and list(one["source"].values) == [str(one_file)]
        for var in ("embedding_mean", "embedding_cls"):
            np.testing.assert_allclose(one[var].values[0], every[var].values[row], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("typed,key", [("data_root", "data_root"), ("data.root", "data.root"), ("--data-root", "data_root")])
def test_embed_names_the_data_key_as_typed(typed, key, image_checkpoint, tmp_path, capsys):
    missing, text = tmp_path / "nope.png", tmp_path / "notes.txt"
    text.write_text("not an image")
    for path, problem in ((missing, "no such file or folder"), (text, "not one of the image file types")):
        arg = [typed, str(path)] if typed.startswith("--") else [f"{typed}={path}"]
        assert main(["embed", f"checkpoint={image_checkpoint}", *arg, f"output={tmp_path / 'e.nc'}"]) == 1
        err = capsys.readouterr().err
        assert re.search(f"error: {re.escape(key)}[:=]", err) and problem in err, err
        assert "data.root" not in err or key == "data.root", err
    assert not (tmp_path / "e.nc").exists()


def test_microscopy_channels_without_names_are_ch0_ch1_in_the_embeddings(tmp_path):
    """Files that name no channels call them ch0, ch1, ... (as the reader does), each its own column: the
    same two channel images stored in the other order give the same per-channel embeddings, swapped."""
    import tifffile
    import xarray as xr

    from omnimae.checkpoint.format import save_safetensors

    cfg = compose("pretrain", ["experiment=none", "modality=microscopy", "model=vit_tiny",
                               "modalities.microscopy.adapter.img_size=32", "modalities.microscopy.adapter.patch_size=8"])
    torch.manual_seed(0)
    ckpt = save_safetensors(build_model(cfg), cfg, tmp_path / "m.safetensors")
    rng = np.random.default_rng(0)
    first, second = (rng.normal(100, 10, (32, 32)).astype(np.float32) for _ in range(2))
    data = tmp_path / "unnamed"
    data.mkdir()
    tifffile.imwrite(data / "a.ome.tif", np.stack([first, second]), ome=True, metadata={"axes": "CYX"})
    tifffile.imwrite(data / "b.ome.tif", np.stack([second, first]), ome=True, metadata={"axes": "CYX"})
    assert main(["embed", f"checkpoint={ckpt}", f"data_root={data}", f"output={tmp_path / 'e.nc'}"]) == 0
    ds = xr.load_dataset(tmp_path / "e.nc")
    assert list(ds["channel"].values) == ["ch0", "ch1"]
    by_file = {f: ds["embedding_channel"].values[i] for i, f in enumerate(ds["file"].values)}  # [channel, dim]
    assert np.isfinite(by_file["a.ome.tif"]).all()
    np.testing.assert_allclose(by_file["a.ome.tif"], by_file["b.ome.tif"][::-1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(by_file["a.ome.tif"][0], by_file["a.ome.tif"][1], atol=1e-4)
