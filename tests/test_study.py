"""omnimae study: every variant x seed pretrained and probed, tables checked against numpy, resume, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omnimae.cli import compose, main
from omnimae.errors import ConfigError
from omnimae.studies import plan_runs, run_study, summarize
from omnimae.studies import run as study_run
from omnimae.studies.table import METRICS, final_train_loss

TINY = "overrides=['trainer.max_steps=3','trainer.log_every_n_steps=1']"


def _cfg(tmp_path, *extra: str):
    return compose("study", ["study=decoder_depth", "study.seeds=2", TINY, f"runs_root={tmp_path / 'runs'}",
                             f"output={tmp_path / 'docs'}", "probe_overrides=['random_seeds=1']", *extra])


def _check_summary(out) -> pd.DataFrame:
    """summary.csv's mean and sample std per variant equal numpy's over results.csv's rows."""
    results, summary = pd.read_csv(out / "results.csv"), pd.read_csv(out / "summary.csv")
    for _, row in summary.iterrows():
        rows = results[results["variant"] == row["variant"]]
        assert row["runs"] == len(rows)
        for col in METRICS:
            assert row[f"{col}_mean"] == pytest.approx(np.mean(rows[col]))
            assert row[f"{col}_std"] == pytest.approx(np.std(rows[col], ddof=1))
    return results


def test_study_pretrains_and_probes_every_variant_in_parallel(tmp_path):
    """Real runs, two at once: one seed of each variant, pretrained for a few steps and probed."""
    result = run_study(_cfg(tmp_path, "jobs=2", "study.seeds=1"))
    assert (result["runs"], result["ran"], result["skipped"]) == (2, 2, 0)
    out = tmp_path / "docs" / "decoder_depth"
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["variant"]) == ["decoder_depth_2", "decoder_depth_6"]
    assert results[list(METRICS)].notna().all().all()  # every probe score and a logged train loss
    for _, row in results.iterrows():  # the table holds what each run's probe wrote
        probe = json.loads((Path(row["run_dir"]) / "probe.json").read_text())
        assert row["knn_cls"] == pytest.approx(probe["pretrained"]["cls"]["knn"])
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fake_execute(calls: list):
    """A stand-in for a run's two processes: a crafted probe.json and CSV log with known numbers."""
    def execute(run, probe_overrides=()):
        calls.append((run.variant, run.seed))
        rng = np.random.default_rng([run.seed, *map(ord, run.variant)])
        scores = {pool: {"linear": rng.random(), "knn": rng.random()} for pool in ("mean", "cls")}
        probe = {"pretrained": scores, "pixels": {"linear": 0.9, "knn": 0.8},
                 "random": {p: {k: {"mean": 0.5, "std": 0.0} for k in ("linear", "knn")} for p in ("mean", "cls")}}
        (run.run_dir / "logs" / "version_0").mkdir(parents=True)
        (run.run_dir / "logs" / "version_0" / "metrics.csv").write_text(f"step,train/loss\n0,{rng.random()}\n")
        (run.run_dir / "probe.json").write_text(json.dumps(probe))
        return run
    return execute


@pytest.mark.parametrize("jobs", [1, 2])
def test_tables_match_numpy_and_a_study_resumes(tmp_path, monkeypatch, jobs):
    calls: list = []
    monkeypatch.setattr(study_run, "execute", _fake_execute(calls))
    cfg = _cfg(tmp_path, f"jobs={jobs}")
    assert run_study(cfg)["ran"] == 4
    out = tmp_path / "docs" / "decoder_depth"
    results = _check_summary(out)
    for _, row in results.iterrows():  # each row holds its run's crafted numbers
        probe = json.loads((Path(row["run_dir"]) / "probe.json").read_text())["pretrained"]
        assert [row[f"{k}_{p}"] for p in ("mean", "cls") for k in ("linear", "knn")] == pytest.approx(
            [probe[p][k] for p in ("mean", "cls") for k in ("linear", "knn")])
    # a second call finds every run finished; one whose probe.json is gone runs again, alone
    calls.clear()
    assert run_study(cfg)["ran"] == 0 and calls == []
    redo = plan_runs(cfg)[1]
    (redo.run_dir / "probe.json").unlink()
    shutil.rmtree(redo.run_dir / "logs")
    result = run_study(cfg)
    assert (result["ran"], result["skipped"], calls) == (1, 3, [(redo.variant, redo.seed)])
    assert len(pd.read_csv(out / "results.csv")) == 4
    _check_summary(out)


def test_summary_mean_and_std_equal_numpy():
    rng = np.random.default_rng(0)
    rows = [{"variant": v, "seed": s, **{c: rng.random() for c in METRICS}} for v in ("b", "a") for s in range(3)]
    results = pd.DataFrame(rows)
    summary = summarize(results)
    assert list(summary["variant"]) == ["b", "a"]  # the study's order, not sorted
    for _, row in summary.iterrows():
        for col in METRICS:
            values = [r[col] for r in rows if r["variant"] == row["variant"]]
            assert row[f"{col}_mean"] == pytest.approx(sum(values) / 3)
            m = sum(values) / 3
            assert row[f"{col}_std"] == pytest.approx((sum((x - m) ** 2 for x in values) / 2) ** 0.5)


def test_final_train_loss_averages_the_last_logged_values(tmp_path):
    log = tmp_path / "logs" / "version_0"
    log.mkdir(parents=True)
    losses = [9.0, 8.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    lines = ["epoch,step,train/loss,val/loss"] + [f"0,{i},{v}," for i, v in enumerate(losses)] + ["0,7,,0.5"]
    (log / "metrics.csv").write_text("\n".join(lines) + "\n")
    assert final_train_loss(tmp_path) == pytest.approx((5 + 4 + 3 + 2 + 1) / 5)
    assert np.isnan(final_train_loss(tmp_path / "nothing"))


@pytest.mark.parametrize("extra, key", [
    (["study.seeds=0"], "study.seeds"),
    (["jobs=0"], "jobs"),
    (["+study.variants.broken=['model.no_such_key=3']"], "study.variants.broken"),
    (["+study.variants.broken=['modalities.image.adapter.masking=nope']"], "study.variants.broken"),
    (["probe_overrides=['no_such_key=1']"], "probe_overrides"),
])
def test_bad_study_fails_before_any_run_naming_the_key(tmp_path, extra, key):
    with pytest.raises(ConfigError) as e:
        run_study(_cfg(tmp_path, *extra))
    assert e.value.key == key
    assert not (tmp_path / "runs").exists()


def test_no_or_unknown_study_names_the_known_ones(tmp_path, capsys):
    with pytest.raises(ConfigError, match="decoder_depth.*mask_ratio_ramp|mask_ratio_ramp.*decoder_depth") as e:
        run_study(compose("study", [f"runs_root={tmp_path}"]))
    assert e.value.key == "study"
    assert main(["study", "study=nope", f"runs_root={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "study/nope" in err and "decoder_depth" in err
