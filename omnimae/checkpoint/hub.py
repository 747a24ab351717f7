"""The official MAE checkpoints (facebookresearch/mae, with decoders) by name: downloaded once into
a cache folder, checked before use, and their architecture read from the weights' shapes."""
from __future__ import annotations

import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import torch

from omnimae.errors import CheckpointError
from omnimae.io import atomic_path

log = logging.getLogger(__name__)

OFFICIAL = {
    "mae_base": "mae_visualize_vit_base.pth",
    "mae_large": "mae_visualize_vit_large.pth",
    "mae_huge": "mae_visualize_vit_huge.pth",
}
BASE_URL = "https://dl.fbaipublicfiles.com/mae/visualize/"
URL_ENV, CACHE_ENV = "OMNIMAE_CHECKPOINT_URL", "OMNIMAE_CACHE"
REQUIRED_KEYS = ("cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "decoder_pred.weight")
# heads per width in the MAE paper's models (ViT-B/L/H encoders; every decoder is 512 wide, 16 heads)
PAPER_HEADS = {768: 12, 1024: 16, 1280: 16}
PAPER_DECODER_HEADS = {512: 16}
CHUNK = 1 << 20
TIMEOUT_S = 60


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: the argument, else $OMNIMAE_CACHE, else ~/.cache/omnimae."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "omnimae"
    return Path(cache_dir).expanduser()


def checkpoint_url(name: str, url: str | None = None) -> str:
    """Where `name` is downloaded from: the base URL (argument, else $OMNIMAE_CHECKPOINT_URL, else the
    official one) joined with the official file name."""
    base = url or os.environ.get(URL_ENV) or BASE_URL
    return base.rstrip("/") + "/" + _file_name(name)


def _file_name(name: str) -> str:
    if name not in OFFICIAL:
        raise CheckpointError(f"unknown checkpoint name {name!r}; known names: {', '.join(OFFICIAL)}")
    return OFFICIAL[name]


def fetch_checkpoint(name: str, cache_dir: str | Path | None = None, url: str | None = None) -> Path:
    """The path of the checked official checkpoint `name` (see OFFICIAL), downloading it once.

    url: a base URL (a folder holding the official file names) instead of $OMNIMAE_CHECKPOINT_URL or
    the official one. The download goes to a temporary file in the cache folder, is checked (size
    and contents), then renamed into place; any failure raises a CheckpointError naming the name
    and the URL and leaves nothing behind. A cached file that fails the check is downloaded again.
    """
    file_name = _file_name(name)
    folder = cache_folder(cache_dir)
    target = folder / file_name
    source = checkpoint_url(name, url)
    if target.is_file():
        try:
            check_checkpoint(target)
            return target
        except CheckpointError as e:
            log.warning("cached %s is not a usable checkpoint (%s); downloading it again", target, e)
            target.unlink(missing_ok=True)
    log.info("downloading %s from %s to %s", name, source, target)
    try:
        with atomic_path(target) as tmp:
            _download(source, tmp, desc=file_name)
            check_checkpoint(tmp)
    except Exception as e:
        raise CheckpointError(f"{name}: cannot fetch {source}: {_reason(e)}") from e
    return target


def _reason(e: Exception) -> str:
    if isinstance(e, CheckpointError):
        return str(e)
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"cannot connect ({e.reason})"
    return f"{type(e).__name__}: {e}"


def _download(url: str, dest: Path, desc: str) -> None:
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "omnimae"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.strip().isdigit() else None
        received = 0
        with open(dest, "wb") as f, tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                                          desc=desc, disable=None, leave=False) as bar:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received != expected:
        raise CheckpointError(f"truncated download: received {received} of {expected} bytes")
    if received == 0:
        raise CheckpointError("the server sent an empty file")


def check_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an official-layout checkpoint file ({'model': state_dict}), or a CheckpointError."""
    path = Path(path)
    try:
        try:  # memory-mapped: checking a cached multi-GB file stays cheap
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # the legacy format
    except Exception as e:
        raise CheckpointError(f"not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    model = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, dict):
        kind = f"a dict with keys {list(ckpt)[:5]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"expected {{'model': state_dict}} (the official MAE layout), got {kind}")
    missing = [k for k in REQUIRED_KEYS if not isinstance(model.get(k), torch.Tensor)]
    if missing:
        raise CheckpointError(f"not an MAE checkpoint with a decoder: missing {', '.join(missing)}")
    return model


# --- architecture from shapes ----------------------------------------------------------------
def _depth(sd: Mapping[str, Any], prefix: str, source: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(rf"^{re.escape(prefix)}\.(\d+)\.", k))}
    if found != set(range(len(found))):
        raise CheckpointError(f"{source}: {prefix} are not numbered 0..n-1 (found {sorted(found)})")
    return len(found)


def _shape(sd: Mapping[str, Any], key: str, source: str, ndim: int) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{source}: missing {key}; not the official MAE layout with a decoder")
    shape = tuple(sd[key].shape)
    if len(shape) != ndim:
        raise CheckpointError(f"{source}: {key} has shape {shape}, expected {ndim} dimensions")
    return shape


def _heads(given: int | None, dim: int, table: dict[int, int], what: str, arg: str, source: str) -> int:
    heads = given if given is not None else table.get(dim)
    if heads is None:
        known = ", ".join(f"{d} -> {h}" for d, h in table.items())
        raise CheckpointError(
            f"{source}: the number of {what} attention heads cannot be read from the weights and width {dim} "
            f"is not one of the MAE paper's ({known}); pass {arg}="
        )
    if heads < 1 or dim % heads:
        raise CheckpointError(f"{source}: {arg}={heads} does not divide the {what} width {dim}")
    return heads


def _patch_grid(sd: Mapping[str, Any], source: str) -> tuple[int, int, int, int]:
    """(embed_dim, in_chans, patch_size, side) of the square grid of square patches the stem and
    the positions hold."""
    embed_dim, in_chans, p, q = _shape(sd, "patch_embed.proj.weight", source, 4)
    if p != q:
        raise CheckpointError(f"{source}: patch_embed.proj.weight has non-square {p}x{q} patches")
    _, tokens, pos_dim = _shape(sd, "pos_embed", source, 3)
    side = int(round((tokens - 1) ** 0.5))
    if side * side != tokens - 1 or pos_dim != embed_dim:
        raise CheckpointError(f"{source}: pos_embed {tuple(sd['pos_embed'].shape)} is not a CLS token plus a square grid")
    return embed_dim, in_chans, p, side


def _mlp_ratio(sd: Mapping[str, Any], embed_dim: int, decoder_embed_dim: int, source: str) -> float:
    """The encoder's MLP ratio, which the decoder must share (one mlp_ratio builds both)."""
    mlp_ratio = _shape(sd, "blocks.0.mlp.fc1.weight", source, 2)[0] / embed_dim
    if "decoder_blocks.0.mlp.fc1.weight" in sd:
        dec_ratio = sd["decoder_blocks.0.mlp.fc1.weight"].shape[0] / decoder_embed_dim
        if dec_ratio != mlp_ratio:
            raise CheckpointError(f"{source}: encoder mlp_ratio {mlp_ratio} differs from the decoder's {dec_ratio}")
    return mlp_ratio


def infer_official_architecture(
    state_dict: Mapping[str, Any],
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    source: str = "checkpoint",
) -> dict[str, Any]:
    """MaskedAutoencoder's arguments (embed_dim, depth, num_heads, decoder_embed_dim, decoder_depth,
    decoder_num_heads, mlp_ratio) plus the image adapter's img_size, patch_size and in_chans, read
    from an official-layout state dict (or {'model': state_dict}). Head counts are not in the
    shapes: they default to the MAE paper's for its widths, otherwise pass them."""
    sd = state_dict["model"] if isinstance(state_dict.get("model"), Mapping) else state_dict
    embed_dim, in_chans, p, side = _patch_grid(sd, source)
    decoder_embed_dim, enc = _shape(sd, "decoder_embed.weight", source, 2)
    if enc != embed_dim:
        raise CheckpointError(f"{source}: decoder_embed.weight takes {enc} features, the encoder gives {embed_dim}")
    mlp_ratio = _mlp_ratio(sd, embed_dim, decoder_embed_dim, source)
    out_dim = _shape(sd, "decoder_pred.weight", source, 2)[0]
    if out_dim != p * p * in_chans:
        raise CheckpointError(f"{source}: decoder_pred.weight predicts {out_dim} values, not {p}x{p}x{in_chans}")
    return dict(
        embed_dim=embed_dim,
        depth=_depth(sd, "blocks", source),
        num_heads=_heads(num_heads, embed_dim, PAPER_HEADS, "encoder", "num_heads", source),
        decoder_embed_dim=decoder_embed_dim,
        decoder_depth=_depth(sd, "decoder_blocks", source),
        decoder_num_heads=_heads(decoder_num_heads, decoder_embed_dim, PAPER_DECODER_HEADS, "decoder",
                                 "decoder_num_heads", source),
        mlp_ratio=mlp_ratio,
        img_size=side * p,
        patch_size=p,
        in_chans=in_chans,
    )
