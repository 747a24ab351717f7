"""A checkpoint from elsewhere builds only omnimae's own classes, and changed bytes in its weights are found.

Each trick gets a crafted file: a stored config whose `_target_` would truncate a user's file
(builtins.open), write one (pathlib.Path.write_text), copy one (shutil.copyfile) or unpickle a
second stage (torch.load with weights_only=False). Nothing may happen, and the error names the
file, the target and the key that lets a trusted file through.
"""
from __future__ import annotations

import json
import pathlib
import pickle
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from omnimae.adapter import MODALITIES
from omnimae.config.build import build_model
from omnimae.checkpoint.format import load_model, read_checkpoint, save_safetensors
from omnimae.cli import compose, main
from omnimae.errors import CheckpointError
from omnimae.forecasting.forecaster import Forecaster
from omnimae.train.pretrain import pretrain

TINY = ["experiment=none", "model=vit_tiny", "modality=image", "modalities.image.adapter.img_size=16",
        "modalities.image.adapter.patch_size=4", "modalities.image.adapter.in_chans=1",
        "modalities.image.adapter.mean=[0.5]", "modalities.image.adapter.std=[0.25]"]
TRUST = "trust_checkpoint=true"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny omnimae .safetensors and a .ckpt written by one step of real training."""
    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    cfg = compose("pretrain", TINY)
    safetensors = save_safetensors(build_model(cfg), cfg, root / "good.safetensors")
    run = root / "run"
    pretrain(compose("pretrain", ["model=vit_tiny", "trainer=debug", "trainer.max_steps=1", "trainer.enable_progress_bar=false",
                                  "modalities.image.batch_size=8", "callbacks.reconstruction_every_n_steps=0",
                                  "callbacks.reconstruction_samples=2", f"run_dir={run}"]))
    return {"safetensors": safetensors, "ckpt": run / "checkpoints" / "last.ckpt"}


def craft(src: pathlib.Path, dst: pathlib.Path, edit) -> pathlib.Path:
    """A copy of src whose stored config edit(config) changed; the weights (and their checksum) stay."""
    if src.suffix == ".safetensors":
        with safe_open(str(src), "pt") as f:
            meta = json.loads(f.metadata()["omnimae"])
        edit(meta["config"])
        save_file(load_file(str(src)), str(dst), metadata={"omnimae": json.dumps(meta)})
    else:
        ckpt = torch.load(src, weights_only=True)
        edit(ckpt["omnimae"]["config"])
        torch.save(ckpt, dst)
    return dst


@pytest.fixture
def user(tmp_path):
    """A user's file that must survive, a marker no trick may create, and a pickle that would create it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("a user's precious notes")
    marker = tmp_path / "pwned"

    class SecondStage:
        def __reduce__(self):
            return pathlib.Path.write_text, (pathlib.Path(marker), "second stage ran")

    payload = tmp_path / "payload.pkl"
    payload.write_bytes(pickle.dumps(SecondStage()))
    return notes, marker, payload


def untouched(user) -> bool:
    notes, marker, _ = user
    return notes.read_text() == "a user's precious notes" and not marker.exists()


def tricks(user) -> dict[str, dict]:
    notes, marker, payload = user
    return {
        "builtins.open": {"_target_": "builtins.open", "_args_": [str(notes), "w"]},
        "pathlib.Path.write_text": {"_target_": "pathlib.Path.write_text",
                                    "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "x"]},
        "shutil.copyfile": {"_target_": "shutil.copyfile", "_args_": [str(notes), str(marker)]},
        "torch.load": {"_target_": "torch.load", "f": str(payload), "weights_only": False},
    }


def at(place: str, node):
    """An edit that puts node at one place of a stored config."""
    def adapter(c): c["modalities"]["image"]["adapter"]["mean"] = node
    def model(c): c["model"]["mlp_ratio"] = node
    def in_list(c): c["modalities"]["image"]["adapter"]["std"] = [0.25, node]
    def in_args(c): c["modalities"]["image"]["adapter"]["_args_"] = [node]
    def partial(c): c["model"]["norm_eps"] = {**node, "_partial_": True}
    def data(c): c["modalities"]["image"]["data"]["crop_scale"] = node
    def whole_adapter(c): c["modalities"]["image"]["adapter"] = node
    return locals()[place]


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
@pytest.mark.parametrize("trick", ["builtins.open", "pathlib.Path.write_text", "shutil.copyfile", "torch.load"])
def test_a_crafted_checkpoint_runs_nothing_and_names_the_target(saved, user, tmp_path, fmt, trick):
    evil = craft(saved[fmt], tmp_path / f"evil.{fmt}", at("adapter", tricks(user)[trick]))
    with pytest.raises(CheckpointError, match=rf"evil\.{fmt}: the stored config would build '{trick}' "
                                              r"\(at modalities\.image\.adapter\.mean\._target_\).*trust_checkpoint=true"):
        load_model(evil)
    assert untouched(user)


@pytest.mark.parametrize("place", ["adapter", "model", "in_list", "in_args", "partial", "data", "whole_adapter"])
def test_every_target_of_the_model_and_modality_nodes_is_checked(saved, user, tmp_path, place):
    evil = craft(saved["safetensors"], tmp_path / "evil.safetensors", at(place, tricks(user)["pathlib.Path.write_text"]))
    with pytest.raises(CheckpointError, match="would build 'pathlib.Path(.write_text)?'"):
        load_model(evil)
    assert untouched(user)


def test_an_interpolation_cannot_make_a_node_after_the_check(saved, user, tmp_path):
    _, marker, _ = user
    sneaky = "${oc.create:{_target_: pathlib.Path.write_text, _args_: [{_target_: pathlib.Path, _args_: ['" + str(marker) + "']}, x]}}"
    evil = craft(saved["ckpt"], tmp_path / "evil.ckpt", at("adapter", sneaky))
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: the stored config holds an interpolation at modalities\.image\.adapter\.mean"):
        load_model(evil)
    assert untouched(user)


def test_the_nodes_that_do_not_build_the_model_are_left_out_unbuilt(saved, user, tmp_path):
    node = tricks(user)["pathlib.Path.write_text"]

    def edit(c):
        c["trainer"]["strategy"] = node
        c["callbacks"] = {"reconstruction_samples": 2, "extra": node}
        c["logger"] = [node]

    model, cfg = load_model(craft(saved["ckpt"], tmp_path / "other.ckpt", edit))
    assert untouched(user)
    assert set(cfg) == {"seed", "run_name", "run_dir", "resume", "overwrite", "data", "optim", "model", "modalities"}
    # what is kept rebuilds the model and its data
    torch.testing.assert_close(model.state_dict(), load_model(saved["ckpt"])[0].state_dict(), rtol=0, atol=0)
    assert cfg.modalities.image.data._target_ == "omnimae.modalities.image.ImageData"


@pytest.mark.parametrize("modality", sorted(MODALITIES))
def test_a_checkpoint_of_every_registered_modality_loads_without_trust(tmp_path, modality):
    cfg = compose("pretrain", ["experiment=none", "model=vit_tiny", f"modality={modality}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    again, stored = load_model(save_safetensors(model, cfg, tmp_path / "m.safetensors"))
    assert type(again.adapters[modality]) is type(model.adapters[modality])
    assert stored.modalities[modality].data._target_ == cfg.modalities[modality].data._target_


PLUGIN = '''
from omnimae.modalities.image import ImageAdapter


class PluginAdapter(ImageAdapter):
    """A user's own adapter: importable, but not one of omnimae's."""
'''


def test_a_plugin_class_loads_only_when_the_file_is_trusted(saved, tmp_path, monkeypatch, capsys):
    (tmp_path / "omnimae_trust_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "omnimae_trust_plugin", raising=False)
    target = "omnimae_trust_plugin.PluginAdapter"
    mine = craft(saved["safetensors"], tmp_path / "mine.safetensors", at("whole_adapter", {
        **json.loads(json.dumps(dict(read_checkpoint(saved["safetensors"])["omnimae"]["config"]["modalities"]["image"]["adapter"]))),
        "_target_": target}))
    with pytest.raises(CheckpointError, match=f"would build '{target}'.*pass trust_checkpoint=true"):
        load_model(mine)
    assert "omnimae_trust_plugin" not in sys.modules  # refused before anything was imported
    model, _ = load_model(mine, trust_checkpoint=True)
    assert type(model.adapters["image"]).__qualname__ == "PluginAdapter"
    torch.testing.assert_close(model.state_dict(), load_model(saved["safetensors"])[0].state_dict(), rtol=0, atol=0)
    out = tmp_path / "out.safetensors"
    assert main(["export", f"checkpoint={mine}", f"output={out}"]) == 1
    assert "trust_checkpoint=true" in capsys.readouterr().err and not out.exists()
    assert main(["export", f"checkpoint={mine}", f"output={out}", TRUST]) == 0 and out.exists()
    assert main(["export", f"checkpoint={mine}", f"output={tmp_path / 'x.safetensors'}", "trust_checkpoint=yes"]) == 1
    assert "trust_checkpoint: expected true or false, got 'yes'" in capsys.readouterr().err


@pytest.fixture
def series(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text("y\n" + "\n".join(str(i % 7) for i in range(96)) + "\n")
    return path


@pytest.mark.parametrize("verb", ["forecast", "forecast-eval", "embed", "export", "probe"])
def test_every_verb_that_loads_a_checkpoint_refuses_a_crafted_one(saved, user, tmp_path, series, capsys, verb):
    # the trick sits in the data node: embed and probe would build it from the checkpoint
    evil = craft(saved["safetensors"], tmp_path / "evil.safetensors", at("data", tricks(user)["builtins.open"]))
    out = tmp_path / "out"
    args = {
        "forecast": ["--checkpoint", str(evil), "--input", str(series), "--horizon", "4", "--output", f"{out}.csv"],
        "forecast-eval": [f"checkpoint={evil}", f"output_dir={out}"],
        "embed": [f"checkpoint={evil}", f"data_root={tmp_path}", f"output={out}.nc"],
        "export": [f"checkpoint={evil}", f"output={out}.safetensors"],
        "probe": [f"checkpoint={evil}", f"output={out}.json"],
    }[verb]
    assert main([verb, *args]) == 1
    err = capsys.readouterr().err
    assert f"{evil}: the stored config would build 'builtins.open'" in err and "pass trust_checkpoint=true" in err
    assert untouched(user)
    assert not list(tmp_path.glob("out*"))


def test_forecaster_from_checkpoint_refuses_a_crafted_one(saved, user, tmp_path):
    evil = craft(saved["ckpt"], tmp_path / "evil.ckpt", at("model", tricks(user)["torch.load"]))
    with pytest.raises(CheckpointError, match="would build 'torch.load'"):
        Forecaster.from_checkpoint(evil)
    assert untouched(user)


# --- checksum of the weights -------------------------------------------------------------------
def zero_inside(path: pathlib.Path, weight: torch.Tensor, dst: pathlib.Path) -> pathlib.Path:
    """A copy of path with 8 bytes zeroed in the middle of weight's stored bytes (found in the file)."""
    data = bytearray(path.read_bytes())
    raw = weight.contiguous().numpy().tobytes()
    start = data.find(raw)
    assert start >= 0 and data.find(raw, start + 1) < 0, "the weight's bytes are stored once, uncompressed"
    middle = start + len(raw) // 2
    assert any(data[middle : middle + 8])
    data[middle : middle + 8] = bytes(8)
    dst.write_bytes(data)
    return dst


def test_zeroed_bytes_in_a_ckpt_are_refused(saved, tmp_path):
    weight = read_checkpoint(saved["ckpt"])["state_dict"]["model.blocks.0.mlp.fc1.weight"]
    bad = zero_inside(saved["ckpt"], weight, tmp_path / "bad.ckpt")
    assert torch.load(bad, weights_only=True)["state_dict"]["model.blocks.0.mlp.fc1.weight"].ne(weight).any()
    with pytest.raises(CheckpointError, match=rf"{bad}: the weights do not match the SHA-256 stored with them"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="SHA-256"):  # resuming reads it the same way
        read_checkpoint(bad)


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_zeroed_bytes_in_a_safetensors_export_are_refused(tmp_path, dtype):
    cfg = compose("pretrain", TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    path = save_safetensors(model, cfg, tmp_path / "m.safetensors", dtype=dtype)
    again, _ = load_model(path)  # the unchanged file loads, its checksum taken over what was stored
    weight = load_file(str(path))["blocks.0.mlp.fc1.weight"]
    torch.testing.assert_close(again.state_dict()["blocks.0.mlp.fc1.weight"], weight.float(), rtol=0, atol=0)
    bad = zero_inside(path, weight, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=rf"{bad}: the weights do not match the SHA-256"):
        load_model(bad)
