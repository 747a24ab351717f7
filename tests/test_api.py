"""The Python API (omnimae.build / load / save / embed / reconstruct / forecast), checked against the CLI
paths and the reference layouts, and the README's example run as written."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import omnimae

README = Path(__file__).parent.parent / "README.md"
TINY = ("model=vit_tiny", "modality=image", "modalities.image.adapter.img_size=16", "modalities.image.adapter.patch_size=4")


def test_the_readme_python_api_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), scope)
    assert scope["vectors"].shape == (4, 64) and scope["future"].shape == (24,)
    assert (tmp_path / "reconstruction.png").stat().st_size > 0 and (tmp_path / "tiny.safetensors").exists()
    # the given mask is the one used: its hidden patches are exactly the right halves
    assert torch.equal(scope["half"].mask[:, :, :, 16:], torch.ones(4, 3, 32, 16))
    assert torch.equal(scope["half"].mask[:, :, :, :16], torch.zeros(4, 3, 32, 16))


def test_save_and_load_round_trip_the_model_and_its_config(tmp_path):
    model = omnimae.build(*TINY).eval()
    x = model.adapters["image"].example_input(3, torch.Generator().manual_seed(0))
    again = omnimae.load(omnimae.save(model, tmp_path / "m.safetensors"))
    torch.testing.assert_close(omnimae.embed(again, x), omnimae.embed(model, x), rtol=0, atol=0)
    assert again.config == model.config and not again.training


def test_official_mae_weights_load_into_a_model_built_from_overrides(tmp_path):
    from omnimae.checkpoint.convert import omnimae_to_official

    model = omnimae.build(*TINY).eval()
    torch.save({"model": omnimae_to_official(model)}, tmp_path / "mae.pth")
    official = omnimae.load(tmp_path / "mae.pth", *[o for o in TINY if not o.startswith("modality=")])
    x = model.adapters["image"].example_input(2, torch.Generator().manual_seed(1))
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(official.forward_modality(x, "image", noise=noise).pred,
                                   model.forward_modality(x, "image", noise=noise).pred)


def test_hugging_face_weights_give_hugging_faces_loss(tmp_path):
    from reference_models import hf_model

    hf = hf_model(norm_pix_loss=True)
    hf.save_pretrained(tmp_path / "hf")
    weights = next(p for p in (tmp_path / "hf").iterdir() if p.suffix in (".safetensors", ".bin"))
    a = "modalities.image.adapter"
    ours = omnimae.load(weights, "model=vit_tiny", f"{a}.img_size=16", f"{a}.patch_size=4", f"{a}.mean=[0.5,0.5,0.5]",
                        f"{a}.std=[0.5,0.5,0.5]")
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    with torch.no_grad():
        ref = hf(pixel_values=x, noise=noise)
        out = ours.forward_modality(x, "image", noise=noise)
    assert out.loss.item() == pytest.approx(ref.loss.item(), abs=1e-5)


def test_embedding_a_file_equals_the_embed_verbs_row(tmp_path):
    import xarray as xr
    from PIL import Image

    from omnimae.cli import main

    model = omnimae.build(*TINY).eval()
    ckpt = omnimae.save(model, tmp_path / "m.safetensors")
    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        files.append(tmp_path / "images" / f"{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(files[-1])
    assert main(["embed", f"checkpoint={ckpt}", f"data_root={tmp_path / 'images'}", f"output={tmp_path / 'e.nc'}"]) == 0
    rows = xr.open_dataset(tmp_path / "e.nc")
    by_name = dict(zip(rows["file"].values.tolist(), rows["embedding_mean"].values))
    ours = omnimae.embed(omnimae.load(ckpt), files).numpy()
    np.testing.assert_allclose(ours, np.stack([by_name["0.png"], by_name["1.png"]]), atol=1e-5)


def test_forecast_equals_the_forecast_verb(tmp_path):
    import pandas as pd

    from omnimae.cli import main

    series = 10 + np.sin(np.arange(180) * 2 * np.pi / 12) + 0.02 * np.arange(180)
    pd.DataFrame({"y": series}).to_csv(tmp_path / "s.csv", index=False)
    assert main(["forecast", "--input", str(tmp_path / "s.csv"), "--horizon", "12", "--periodicity", "12",
                 "--output", str(tmp_path / "f.csv"), "--plot", "false"]) == 0
    verb = pd.read_csv(tmp_path / "f.csv")["y"].to_numpy()
    np.testing.assert_allclose(omnimae.forecast(series, horizon=12, periodicity=12), verb, rtol=1e-6)


def test_a_model_of_several_modalities_needs_the_modality_named():
    from omnimae.errors import ConfigError

    model = omnimae.build("model=vit_tiny", "modality=[image,audio]")
    with pytest.raises(ConfigError, match=r"^modality: the model has several modalities \['image', 'audio'\]"):
        omnimae.embed(model, torch.zeros(1, 3, 224, 224))
