"""Official checkpoints by name: served from a loopback HTTP server, cached once, checked, and
every failure named without leaving a file behind; architecture read back from shapes."""
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from omnimae.checkpoint import hub
from omnimae.config.build import build_model
from omnimae.checkpoint.convert import load_pretrained, omnimae_to_official
from omnimae.config.compose import compose
from omnimae.errors import CheckpointError
from omnimae.model import MaskedAutoencoder
from omnimae.modalities.image import ImageAdapter

TINY = ["model=vit_tiny", "experiment=none", "modalities.image.adapter.img_size=48",
        "modalities.image.adapter.patch_size=8", "modalities.image.adapter.in_chans=3",
        "model.decoder_embed_dim=32", "model.decoder_num_heads=2", "model.depth=3"]
FILE = hub.OFFICIAL["mae_base"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model(compose("pretrain", TINY))
    sd = omnimae_to_official(model)
    buf = io.BytesIO()
    torch.save({"model": sd}, buf)
    return model, sd, buf.getvalue()


@pytest.fixture(scope="module")
def server(tiny):
    """Routes /good/, /truncated/ (a cut copy, honest length), /short/ (announces the whole file,
    sends half), /garbage/, /state_dict/ (a tensor dict without 'model'); anything else is a 404."""
    _, sd, good = tiny
    plain = io.BytesIO()
    torch.save(sd, plain)
    bodies = {
        "good": good,
        "truncated": good[: len(good) * 2 // 3],
        "garbage": bytes(range(256)) * 64,
        "state_dict": plain.getvalue(),
    }
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            hits.append(self.path)
            folder, _, name = self.path.strip("/").partition("/")
            if name != FILE or folder not in (*bodies, "short"):
                self.send_error(404, "Not Found")
                return
            body = bodies.get(folder, good)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if folder != "short" else body[: len(body) // 2])

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_download_lands_in_the_cache_and_is_reused(server, tiny, tmp_path, monkeypatch):
    base, hits = server
    cache = tmp_path / "cache"
    monkeypatch.setenv("OMNIMAE_CACHE", str(cache))
    monkeypatch.setenv("OMNIMAE_CHECKPOINT_URL", f"{base}/good/")
    hits.clear()
    path = hub.fetch_checkpoint("mae_base")
    assert path == cache / FILE and path.read_bytes() == tiny[2]
    assert [p.name for p in cache.iterdir()] == [FILE]  # no temporary left beside it
    assert hits == [f"/good/{FILE}"]
    assert hub.fetch_checkpoint("mae_base") == path  # reused, no second request
    assert hits == [f"/good/{FILE}"]
    # it loads into a model built from the tiny config
    model = build_model(compose("pretrain", TINY))
    load_pretrained(model, path)
    for k, v in tiny[0].state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=1e-6)


def test_a_broken_cached_file_is_fetched_again(server, tmp_path):
    base, hits = server
    (tmp_path / FILE).write_bytes(b"half a file")
    hits.clear()
    path = hub.fetch_checkpoint("mae_base", cache_dir=tmp_path, url=f"{base}/good")  # no trailing slash
    assert hits == [f"/good/{FILE}"] and hub.check_checkpoint(path)


def test_check_reads_the_pre_zip_format(tiny, tmp_path):
    _, sd, _ = tiny
    torch.save({"model": sd}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert set(hub.check_checkpoint(tmp_path / "old.pth")) == set(sd)


@pytest.mark.parametrize(
    "folder, reason",
    [
        ("truncated", "not a readable checkpoint"),
        ("short", "(truncated download: received|IncompleteRead)"),
        ("garbage", "not a readable checkpoint"),
        ("state_dict", r"expected \{'model': state_dict\}"),
        ("missing", "HTTP 404 Not Found"),
    ],
)
def test_bad_downloads_are_named_and_leave_nothing(server, tmp_path, folder, reason):
    base, _ = server
    url = f"{base}/{folder}/"
    with pytest.raises(CheckpointError, match=rf"^mae_base: cannot fetch {url}{FILE}: {reason}"):
        hub.fetch_checkpoint("mae_base", cache_dir=tmp_path / "cache", url=url)
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []  # not even a temporary file


def test_connection_refused_is_named(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mae/"
    expected = rf"mae_large: cannot fetch {url}{hub.OFFICIAL['mae_large']}: cannot connect \(.*refused"
    with pytest.raises(CheckpointError, match=expected):
        hub.fetch_checkpoint("mae_large", cache_dir=tmp_path, url=url)
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(CheckpointError, match="unknown checkpoint name 'mae_giant'; known names: mae_base, mae_large, mae_huge"):
        hub.fetch_checkpoint("mae_giant", cache_dir=tmp_path)


def test_default_places(monkeypatch, tmp_path):
    monkeypatch.delenv("OMNIMAE_CHECKPOINT_URL", raising=False)
    monkeypatch.delenv("OMNIMAE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.checkpoint_url("mae_huge") == "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_huge.pth"
    assert hub.cache_folder() == tmp_path / ".cache" / "omnimae"


# --- architecture from shapes -----------------------------------------------------------------
def test_infer_recovers_the_tiny_model(tiny):
    model, sd, _ = tiny
    cfg = compose("pretrain", TINY)
    arch = hub.infer_official_architecture({"model": sd}, num_heads=4, decoder_num_heads=2)
    assert arch == dict(embed_dim=cfg.model.embed_dim, depth=3, num_heads=4, decoder_embed_dim=32, decoder_depth=2,
                        decoder_num_heads=2, mlp_ratio=4.0, img_size=48, patch_size=8, in_chans=3)
    # the keys are the constructors' arguments: the result rebuilds a model the weights fit
    image = {k: arch.pop(k) for k in ("img_size", "patch_size", "in_chans")}
    adapter = ImageAdapter(embed_dim=arch["embed_dim"], decoder_embed_dim=arch["decoder_embed_dim"],
                           mean=[0.5] * 3, std=[0.5] * 3, **image)
    rebuilt = MaskedAutoencoder({"image": adapter}, **arch)
    assert rebuilt.blocks[0].attn.num_heads == model.blocks[0].attn.num_heads


def test_infer_needs_heads_for_an_unknown_width(tiny):
    _, sd, _ = tiny
    with pytest.raises(CheckpointError, match="width 64 is not one of the MAE paper's.*pass num_heads="):
        hub.infer_official_architecture(sd)
    with pytest.raises(CheckpointError, match="decoder.*width 32.*pass decoder_num_heads="):
        hub.infer_official_architecture(sd, num_heads=4)
    with pytest.raises(CheckpointError, match="num_heads=5 does not divide the encoder width 64"):
        hub.infer_official_architecture(sd, num_heads=5, decoder_num_heads=2)


def _shapes_only(embed, depth, dec_embed=512, dec_depth=8, img=224, p=16, c=3):
    """An official-layout state dict of the right shapes, without the memory (stride-0 tensors)."""
    t = lambda *shape: torch.zeros(()).expand(*shape)  # noqa: E731
    sd = {"cls_token": t(1, 1, embed), "pos_embed": t(1, 1 + (img // p) ** 2, embed),
          "patch_embed.proj.weight": t(embed, c, p, p), "decoder_embed.weight": t(dec_embed, embed),
          "decoder_pred.weight": t(p * p * c, dec_embed)}
    for i in range(depth):
        sd[f"blocks.{i}.attn.qkv.weight"] = t(3 * embed, embed)
        sd[f"blocks.{i}.mlp.fc1.weight"] = t(4 * embed, embed)
    for i in range(dec_depth):
        sd[f"decoder_blocks.{i}.mlp.fc1.weight"] = t(4 * dec_embed, dec_embed)
    return sd


@pytest.mark.parametrize("embed, depth, heads, p", [(768, 12, 12, 16), (1024, 24, 16, 16), (1280, 32, 16, 14)])
def test_infer_uses_the_paper_heads(embed, depth, heads, p):
    arch = hub.infer_official_architecture({"model": _shapes_only(embed, depth, p=p)})
    assert arch == dict(embed_dim=embed, depth=depth, num_heads=heads, decoder_embed_dim=512, decoder_depth=8,
                        decoder_num_heads=16, mlp_ratio=4.0, img_size=224, patch_size=p, in_chans=3)


def test_infer_rejects_other_layouts(tiny):
    _, sd, _ = tiny
    encoder_only = {k: v for k, v in sd.items() if not k.startswith(("decoder", "mask_token"))}
    with pytest.raises(CheckpointError, match="mae.pth: missing decoder_embed.weight"):
        hub.infer_official_architecture(encoder_only, num_heads=4, decoder_num_heads=2, source="mae.pth")
    gap = dict(sd)
    for k in [k for k in sd if k.startswith("blocks.1.")]:
        del gap[k]
    with pytest.raises(CheckpointError, match=r"blocks are not numbered 0..n-1 \(found \[0, 2\]\)"):
        hub.infer_official_architecture(gap, num_heads=4, decoder_num_heads=2)


@pytest.mark.parametrize("change, message", [
    ({"patch_embed.proj.weight": (768, 3, 16, 8)}, r"patch_embed.proj.weight has non-square 16x8 patches"),
    ({"pos_embed": (1, 1 + 195, 768)}, r"pos_embed \(1, 196, 768\) is not a CLS token plus a square grid"),
    ({"pos_embed": (1, 1 + 196, 512)}, r"pos_embed \(1, 197, 512\) is not a CLS token plus a square grid"),
    ({"decoder_embed.weight": (512, 640)}, r"decoder_embed.weight takes 640 features, the encoder gives 768"),
    ({"decoder_blocks.0.mlp.fc1.weight": (1024, 512)}, r"encoder mlp_ratio 4.0 differs from the decoder's 2.0"),
    ({"decoder_pred.weight": (700, 512)}, r"decoder_pred.weight predicts 700 values, not 16x16x3"),
])
def test_infer_names_shapes_that_do_not_fit_together(change, message):
    sd = _shapes_only(768, 2, dec_depth=1)
    sd.update({k: torch.zeros(()).expand(*shape) for k, shape in change.items()})
    with pytest.raises(CheckpointError, match=f"mae.pth: {message}"):
        hub.infer_official_architecture(sd, source="mae.pth")
