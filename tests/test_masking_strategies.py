"""The plane masking strategies (block, grid, curve scans) and the curve orders, checked against
the curves' defining properties and closed-form counts, not against their own output."""
from __future__ import annotations

import pytest
import torch

from omnimae.curves import CURVES, curve_order
from omnimae.errors import ConfigError
from omnimae.masking import MASKINGS, masking_choice, masking_strategy, num_visible
from omnimae.masking_plane import CURVE_NAMES, PLANE_MASKINGS
from omnimae.patches import Patches, grid_coords


def tokens(*grid: int, batch: int = 4) -> Patches:
    n = 1
    for g in grid:
        n *= g
    return Patches(torch.zeros(batch, n, 3), grid_coords(*grid), tuple(grid))


def steps(order: torch.Tensor, width: int) -> torch.Tensor:
    """Manhattan length of each step along an order of row-major indices."""
    h, w = order // width, order % width
    return h.diff().abs() + w.diff().abs()


# --- curve orders -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CURVES))
@pytest.mark.parametrize("hw", [(1, 5), (4, 4), (5, 7), (9, 9), (14, 14), (16, 16), (27, 27)])
def test_every_curve_order_is_a_permutation(name, hw):
    order = curve_order(name, *hw)
    assert torch.equal(order.sort().values, torch.arange(hw[0] * hw[1]))


@pytest.mark.parametrize("name,hw", [("zigzag", (5, 7)), ("zigzag", (14, 14)), ("spiral", (5, 7)), ("spiral", (14, 14)),
                                     ("spiral", (2, 9)), ("hilbert", (8, 8)), ("hilbert", (16, 16)),
                                     ("peano", (9, 9)), ("peano", (27, 27))])
def test_consecutive_tokens_along_a_curve_are_grid_neighbours(name, hw):
    assert (steps(curve_order(name, *hw), hw[1]) == 1).all()


@pytest.mark.parametrize("name,side,sub", [("hilbert", 8, 2), ("hilbert", 16, 4), ("peano", 9, 3), ("peano", 27, 9)])
def test_space_filling_curves_fill_one_sub_square_at_a_time(name, side, sub):
    """The recursion: each (sub x sub) stretch of the order fills one aligned sub x sub square."""
    order = curve_order(name, side, side)
    cells = (order // side // sub) * side + (order % side) // sub  # which aligned square each token lies in
    per_stretch = cells.view(-1, sub * sub)
    assert (per_stretch == per_stretch[:, :1]).all()
    assert per_stretch[:, 0].unique().numel() == (side // sub) ** 2


def test_small_curves_match_their_drawings():
    assert curve_order("hilbert", 2, 2).tolist() == [0, 2, 3, 1]  # down, right, up: the first-order U
    assert curve_order("zigzag", 2, 3).tolist() == [0, 1, 2, 5, 4, 3]
    assert curve_order("spiral", 3, 3).tolist() == [0, 1, 2, 5, 8, 7, 6, 3, 4]
    assert curve_order("peano", 3, 3).tolist() == [0, 3, 6, 7, 4, 1, 2, 5, 8]  # down, up and down the columns


def test_clipped_curves_keep_the_larger_curves_order():
    """The stated rule for grids off the curve's sides: the covering curve, clipped to the grid."""
    for name, side in (("hilbert", 16), ("peano", 27)):
        big = curve_order(name, side, side)
        h, w = big // side, big % side
        inside = (h < 14) & (w < 11)
        assert torch.equal(curve_order(name, 14, 11), (h * 11 + w)[inside])


# --- the strategies ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", PLANE_MASKINGS)
@pytest.mark.parametrize("grid", [(14, 14), (8, 13), (2, 6, 6), (3, 5, 4)])
@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_every_sample_hides_the_mae_rules_count_of_the_plane(name, grid, ratio):
    b, lead, plane = 6, (grid[0] if len(grid) == 3 else 1), grid[-1] * grid[-2]
    ids_keep, ids_restore, mask = masking_strategy(name)(tokens(*grid, batch=b), ratio,
                                                         generator=torch.Generator().manual_seed(0))
    keep = num_visible(plane, ratio)
    assert ids_keep.shape == (b, keep * lead)
    assert (mask.sum(1) == (plane - keep) * lead).all()
    assert (mask.gather(1, ids_keep) == 0).all()
    assert torch.equal(torch.argsort(ids_restore, 1)[:, : keep * lead], ids_keep)
    per_slice = mask.view(b, lead, plane)
    assert (per_slice == per_slice[:, :1]).all()  # the same plane mask in every frame or channel


@pytest.mark.parametrize("name", PLANE_MASKINGS)
def test_a_seed_fixes_the_masks_and_samples_differ(name):
    p = tokens(14, 14, batch=16)
    a = masking_strategy(name)(p, 0.75, generator=torch.Generator().manual_seed(5)).mask
    b = masking_strategy(name)(p, 0.75, generator=torch.Generator().manual_seed(5)).mask
    c = masking_strategy(name)(p, 0.75, generator=torch.Generator().manual_seed(6)).mask
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.unique(dim=0).shape[0] > 1  # a random offset, phase or block per sample


def test_grid_shows_exactly_one_token_per_cell():
    for grid, ratio, cell in (((14, 14), 0.75, None), ((12, 12), 0.885, 3)):
        strategy = masking_strategy("grid")
        params = {} if cell is None else {"cell": cell}
        mask = strategy(tokens(*grid, batch=8), ratio, generator=torch.Generator().manual_seed(0), **params).mask
        k = cell or 2
        shown = (mask == 0).view(8, grid[0] // k, k, grid[1] // k, k)  # [B, cells_h, k, cells_w, k]
        assert (shown.sum((2, 4)) == 1).all()  # one per aligned cell...
        place = shown.sum((1, 3)).flatten(1).argmax(1)
        assert (shown.sum((1, 3)).flatten(1).amax(1) == (grid[0] // k) * (grid[1] // k)).all()  # ...at one offset
        assert place.unique().numel() > 1  # which varies across samples


def neighbour_pairs(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Hidden-hidden pairs of 4-neighbours per sample."""
    m = mask.view(-1, h, w)
    return (m[:, 1:] * m[:, :-1]).sum((1, 2)) + (m[:, :, 1:] * m[:, :, :-1]).sum((1, 2))


def test_block_masks_are_blockier_than_random_ones():
    p, g = tokens(14, 14, batch=64), torch.Generator().manual_seed(0)
    block = masking_strategy("block")(p, 0.5, generator=g).mask
    rand = masking_strategy("random")(p, 0.5, generator=g).mask
    # random: each of the 364 neighbour pairs is hidden-hidden with probability about 1/4 (91 pairs)
    assert neighbour_pairs(rand, 14, 14).float().mean() < 110
    assert neighbour_pairs(block, 14, 14).float().mean() > 150


@pytest.mark.parametrize("name", CURVE_NAMES)
def test_curve_masks_come_in_runs_along_the_curve(name):
    """period 8 at 0.75: runs of 6 hidden, 2 visible along the order, so about N / 8 changes from hidden
    to visible along it (random masking would make about N x 0.75 x 0.25 = 37)."""
    p = tokens(16, 16, batch=32)
    mask = masking_strategy(name)(p, 0.75, generator=torch.Generator().manual_seed(0)).mask
    along = mask[:, curve_order(name, 16, 16)]
    ends = ((along[:, :-1] == 1) & (along[:, 1:] == 0)).sum(1)
    assert (ends <= 256 // 8 + 1).all() and (ends >= 256 // 8 - 1).all()
    longer = masking_strategy(name)(p, 0.75, generator=torch.Generator().manual_seed(0), period=32).mask
    along = longer[:, curve_order(name, 16, 16)]
    assert ((along[:, :-1] == 1) & (along[:, 1:] == 0)).sum(1).amax() <= 256 // 32 + 1


# --- bad input --------------------------------------------------------------------------------
def test_an_unknown_strategy_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown masking 'swirl'.*hilbert.*spiral"):
        masking_strategy("swirl")
    assert set(PLANE_MASKINGS) <= set(MASKINGS)


@pytest.mark.parametrize("name", PLANE_MASKINGS)
def test_a_plane_strategy_over_a_sequence_names_the_layout(name):
    with pytest.raises(ConfigError, match=rf"masking: {name} masking needs .*\(h, w\) plane.*grid \(12,\)"):
        masking_strategy(name)(tokens(12), 0.75)


def test_masking_parameters_come_from_config_and_are_checked():
    assert masking_choice({"name": "spiral", "period": 16}) == ("spiral", {"period": 16})
    assert masking_choice("grid") == ("grid", {})
    with pytest.raises(ConfigError, match="masking.cell: not a parameter of spiral masking; it takes: period"):
        masking_choice({"name": "spiral", "cell": 3})
    with pytest.raises(ConfigError, match="masking: expected a strategy name"):
        masking_choice({"period": 3})
    with pytest.raises(ConfigError, match="period must be at least 2"):
        masking_strategy("zigzag")(tokens(4, 4), 0.75, period=1)


def _build(overrides: list[str]):
    from omnimae.config.build import build_model
    from omnimae.config.compose import compose

    cfg = compose("pretrain", ["experiment=none", "model=vit_tiny", "trainer=debug", *overrides])
    return build_model(cfg)


def test_a_strategy_that_does_not_fit_the_tokens_names_the_key_and_layout():
    with pytest.raises(ConfigError, match=r"modalities.image.adapter.masking: 'tube' needs tokens on a \(t, h, w\) grid"
                                          r".*PatchTokenizer2D.*choose from random, block"):
        _build(["modality=image", "modalities.image.adapter.masking=tube"])
    with pytest.raises(ConfigError, match="modalities.image.adapter.masking: unknown masking 'swirl'; registered"):
        _build(["modality=image", "modalities.image.adapter.masking=swirl"])
    with pytest.raises(ConfigError, match="modalities.image.adapter.masking.cell: not a parameter of block"):
        _build(["modality=image", "+modalities.image.adapter.masking={name: block, cell: 2}"])


def test_a_configured_strategy_and_its_parameters_reach_the_training_forward():
    model = _build(["modality=image", "modalities.image.adapter.masking={name: grid, cell: 2}"])
    adapter = model.adapters["image"]
    x = adapter.example_input(2, torch.Generator().manual_seed(0))
    out = model.forward_modality(x, "image", generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(out.loss)
    gh, gw = adapter.tokenize(x).grid
    shown = (out.mask == 0).view(2, gh // 2, 2, gw // 2, 2).sum((2, 4))
    assert (shown == 1).all()  # ratio 0.75, cell 2: the grid's closed form


# --- the picture ------------------------------------------------------------------------------
def test_masks_verb_writes_one_png_per_strategy_and_never_overwrites(tmp_path, capsys):
    from PIL import Image

    from omnimae.cli import main

    assert main(["masks", "modality=image", "masking=spiral", f"output={tmp_path}", "samples=2"]) == 0
    with Image.open(tmp_path / "image_spiral.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert main(["masks", "modality=image", "masking=spiral", f"output={tmp_path}"]) != 0
    assert "already exist; pass overwrite=true" in capsys.readouterr().err
    assert main(["masks", "modality=video", "masking=all", f"output={tmp_path}", "samples=1"]) == 0
    from omnimae.adapter import MODALITIES

    written = {p.name for p in tmp_path.glob("video_*.png")}
    assert written == {f"video_{m}.png" for m in MODALITIES["video"].maskings} | {"video_all.png"}
    assert main(["masks", "modality=image", "masking=tube", f"output={tmp_path}"]) != 0
    assert "masking: 'tube' does not fit the image modality's tokens" in capsys.readouterr().err


def test_sample_masks_show_the_hidden_share_of_the_first_plane():
    from omnimae.cli.masks import sample_masks

    model = _build(["modality=video"])
    masks = sample_masks(model.adapters["video"], {"tube": {}, "hilbert": {}}, 3, 0, 0.9)
    for m in masks.values():
        assert m.shape == (3, 14, 14)
    assert (masks["hilbert"].flatten(1).sum(1) == 196 - num_visible(196, 0.9)).all()
    assert (masks["tube"].flatten(1).sum(1) == int(0.9 * 196)).all()  # VideoMAE's count per frame
