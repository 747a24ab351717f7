"""Precision and thread count chosen for the machine: decided from injected timings and CPU counts,
so no test here passes or fails on this machine's speed or features (timings live in benchmarks/)."""
import json
import re

import pytest
import torch

from omnimae import hardware
from omnimae.config.build import validate
from omnimae.cli import compose, main
from omnimae.errors import ConfigError
from omnimae.train.pretrain import pretrain

FAST = ["model=vit_tiny", "modalities.image.batch_size=32", "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "callbacks.reconstruction_samples=2"]
SHAPE = (64, 32, 128)  # a tiny product: the injected timer decides, not the machine


@pytest.fixture
def timed(monkeypatch):
    """Measure for real (no override), on a CPU with bf16 instructions, with time_gemm replaced:
    set timed.seconds[dtype] to a number or a list of numbers taken in turn; timed.calls counts."""
    monkeypatch.delenv(hardware.OVERRIDE_ENV, raising=False)
    monkeypatch.setattr(hardware, "cpu_has_bf16_instructions", lambda: True)

    class Timer:
        calls = 0
        seconds = {torch.float32: 1.0, torch.bfloat16: 1.0}

        def __call__(self, a, b):
            assert a.shape[1] == b.shape[0]
            type(self).calls += 1
            s = self.seconds[a.dtype]
            return s.pop(0) if isinstance(s, list) else s

    timer = Timer()
    monkeypatch.setattr(hardware, "time_gemm", timer)
    return timer


@pytest.mark.parametrize("fp32,bf16,expected", [(1.0, 2.0, "32-true"), (2.0, 1.0, "bf16-mixed"), (1.0, 0.9, "32-true")])
def test_auto_on_a_cpu_takes_bf16_only_where_it_measures_faster(timed, fp32, bf16, expected):
    """bf16 at half speed (the Xeon of the issue: AVX512-BF16 flags, 0.5x fp32) -> fp32; at twice
    the speed -> bf16; a gain under the 1.2x margin -> fp32. The reason states the ratio."""
    timed.seconds = {torch.float32: fp32, torch.bfloat16: bf16}
    cfg = compose("pretrain", FAST + ["trainer.precision=auto", "trainer.accelerator=cpu"])
    chosen = validate(cfg)
    assert cfg.trainer.precision == expected == chosen["precision"].value
    assert f"bf16 measured {fp32 / bf16:.2f}x fp32" in chosen["precision"].reason


def test_the_median_of_interleaved_rounds_decides(timed):
    """Per round fp32, bf16, bf16, fp32: a round disturbed by another process cannot flip the answer."""
    # warm-up, then 5 rounds: bf16 twice as slow except in one round where fp32 was held up tenfold
    timed.seconds = {torch.float32: [1.0] + [1.0, 1.0] * 2 + [10.0, 10.0] + [1.0, 1.0] * 2,
                     torch.bfloat16: [2.0] * 11}
    assert hardware.measure_bf16_speedup(SHAPE, rounds=5) == pytest.approx(0.5)
    assert timed.calls == 2 + 5 * 4


def test_emulated_bf16_ends_the_measurement_and_is_refused_when_asked_for(timed):
    timed.seconds = {torch.float32: 1.0, torch.bfloat16: 100.0}
    verdict = hardware.cpu_bf16(SHAPE, threads=1)
    assert verdict.emulated and not verdict.fast and timed.calls == 2 + 4  # warm-up and one round only
    with pytest.raises(ConfigError, match=r"^trainer[.]precision: bf16-mixed on this CPU is emulated"):
        hardware.choose_precision("bf16-mixed", "cpu", SHAPE, threads=1)
    assert hardware.choose_precision("32-true", "cpu", SHAPE, threads=1).value == "32-true"


def test_a_cpu_without_bf16_instructions_is_refused_without_timing(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(hardware.OVERRIDE_ENV)
    monkeypatch.setattr(hardware, "cpu_has_bf16_instructions", lambda: False)
    monkeypatch.setattr(hardware, "time_gemm", lambda a, b: pytest.fail("timed a GEMM"))
    cfg = compose("pretrain", FAST + ["trainer.precision=auto", "trainer.accelerator=cpu"])
    assert validate(cfg)["precision"].value == "32-true"
    code = main(["pretrain", "trainer.precision=bf16-mixed", "trainer.accelerator=cpu", f"run_dir={tmp_path / 'run'}"])
    assert code == 1 and "trainer.precision: bf16-mixed on this CPU is emulated" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize("value,expected", [("1", "bf16-mixed"), ("0", "32-true")])
def test_the_environment_overrides_the_measurement(monkeypatch, value, expected):
    monkeypatch.setenv(hardware.OVERRIDE_ENV, value)
    monkeypatch.setattr(hardware, "time_gemm", lambda a, b: pytest.fail("timed a GEMM"))
    monkeypatch.setattr(hardware, "cpu_has_bf16_instructions", lambda: False)  # the override wins over flags too
    choice = hardware.choose_precision("auto", "cpu", SHAPE, threads=1)
    assert choice.value == expected and f"OMNIMAE_CPU_BF16={value}" in choice.reason
    assert hardware.choose_precision("bf16-mixed", "cpu", SHAPE, threads=1).value == "bf16-mixed"


@pytest.mark.parametrize("value", ["yes", "", "2"])
def test_a_bad_override_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(hardware.OVERRIDE_ENV, value)
    with pytest.raises(ConfigError, match=rf"^OMNIMAE_CPU_BF16: expected 1 .* or 0 .*, got '{value}'"):
        hardware.choose_precision("auto", "cpu", SHAPE, threads=1)


def test_the_measurement_is_cached_per_cpu_torch_threads_and_shape(timed, monkeypatch, tmp_path):
    monkeypatch.setenv("OMNIMAE_CACHE", str(tmp_path))
    timed.seconds = {torch.float32: 1.0, torch.bfloat16: 0.5}
    first = hardware.cpu_bf16(SHAPE, threads=1)
    measured = timed.calls
    assert measured > 0 and first.fast and "stored in" in first.reason
    again = hardware.cpu_bf16(SHAPE, threads=1)
    assert timed.calls == measured and again.fast and "cached in" in again.reason
    entries = json.loads((tmp_path / hardware.CACHE_FILE).read_text())
    (key, entry), = entries.items()
    assert hardware.cpu_name() in key and torch.__version__ in key and "1 threads" in key and "64x32x128" in key
    assert entry["speedup"] == pytest.approx(2.0)
    hardware.cpu_bf16(SHAPE, threads=2)  # another thread count is another measurement, kept beside the first
    assert timed.calls == 2 * measured and len(json.loads((tmp_path / hardware.CACHE_FILE).read_text())) == 2


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"%s": {"speedup": "fast"}}'])
def test_a_corrupt_cache_is_measured_again_and_rewritten(timed, monkeypatch, tmp_path, content):
    monkeypatch.setenv("OMNIMAE_CACHE", str(tmp_path))
    key = f"{hardware.cpu_name()} | torch {torch.__version__} | 1 threads | 64x32x128"
    (tmp_path / hardware.CACHE_FILE).write_text(content.replace("%s", key))
    timed.seconds = {torch.float32: 1.0, torch.bfloat16: 2.0}
    assert not hardware.cpu_bf16(SHAPE, threads=1).fast and timed.calls > 0
    assert json.loads((tmp_path / hardware.CACHE_FILE).read_text())[key]["speedup"] == pytest.approx(0.5)


def test_gemm_shape_is_the_models_mlp_product_kept_cheap():
    for embed_dim in (64, 192, 384, 768, 1024):
        m, k, n = hardware.gemm_shape(embed_dim, 4.0)
        assert (k, n) == (embed_dim, 4 * embed_dim) and 64 <= m <= hardware.GEMM_ROWS and m % 64 == 0
        assert 2 * m * k * n <= hardware.GEMM_FLOP_BUDGET or m == 64


def test_precision_auto_on_a_gpu_takes_bf16_only_where_the_gpu_has_it(monkeypatch):
    """torch counts emulated bf16 as supported unless asked not to: a pre-Ampere GPU (emulation only)
    gets fp32, an Ampere one bf16; a torch without `including_emulation` is judged by compute capability."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    for native in (False, True):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
        assert hardware.choose_precision("auto", "gpu").value == ("bf16-mixed" if native else "32-true"), native
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # an older signature
    for capability, expected in (((7, 5), "32-true"), ((8, 0), "bf16-mixed")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        assert hardware.choose_precision("auto", "auto").value == expected, capability


@pytest.mark.parametrize("cpus,processes,workers,embed_dim,on_cpu,expected", [
    (8, 1, 0, 384, True, 8),
    (8, 1, 2, 384, True, 6),    # loader workers take their own cores
    (8, 2, 1, 384, True, 3),    # two ranks on this node: 4 CPUs each, less one worker
    (2, 2, 0, 384, True, 1),
    (2, 1, 4, 768, True, 1),    # more workers than CPUs: still one thread
    (8, 1, 0, 64, True, 1),     # small model: one thread
    (8, 1, 0, 64, False, 8),    # ... unless its GEMMs run on a GPU
])
def test_auto_threads_share_the_cpus_among_ranks_and_loader_workers(cpus, processes, workers, embed_dim, on_cpu, expected):
    choice = hardware.choose_threads("auto", embed_dim=embed_dim, loader_workers=workers, processes=processes,
                                     on_cpu=on_cpu, cpus=cpus)
    assert choice.value == expected
    assert choice.reason.startswith(f"auto: {cpus} CPUs") and f"{workers} loader workers" in choice.reason
    assert ("small model" in choice.reason) == (embed_dim == 64 and on_cpu)


@pytest.mark.parametrize("value", [0, -2, 1.5, "two", True])
def test_trainer_threads_other_than_auto_or_a_positive_integer_is_refused(value):
    with pytest.raises(ConfigError, match=r"^trainer[.]threads: expected auto or a positive integer"):
        hardware.choose_threads(value, embed_dim=384, loader_workers=0)
    assert hardware.choose_threads(3, embed_dim=64, loader_workers=5).value == 3  # an integer is taken as given


def test_threads_from_the_composed_config(monkeypatch):
    """num_workers of the run and DDP ranks on this node count; the resolved count is kept in the config."""
    monkeypatch.setattr(hardware, "available_cpus", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = compose("pretrain", ["model=vit_small", "modalities.image.num_workers=2"])
    assert validate(cfg)["threads"].value == 6 == cfg.trainer.threads
    cfg = compose("pretrain", ["model=vit_small", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                               "trainer.precision=32-true"])
    assert validate(cfg)["threads"].value == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun says how many processes share the node
    assert validate(compose("pretrain", ["model=vit_small", "trainer=ddp", "trainer.accelerator=cpu"]))["threads"].value == 2
    with pytest.raises(ConfigError, match=r"^trainer[.]threads: expected auto or a positive integer, got 'many'"):
        validate(compose("pretrain", ["trainer.threads=many"]))


@pytest.mark.parametrize("devices,expected", [(2, 2), ("3", 3), ("0,1", 2), ([0, 1, 2], 3), ("auto", 1), (None, 1)])
def test_local_processes_from_trainer_devices_on_cpu(monkeypatch, devices, expected):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert hardware.local_processes(devices, on_cpu=True) == expected


def test_pretrain_applies_the_threads_and_reports_both_choices(tmp_path, capsys):
    code = main(["pretrain", *FAST, "trainer=debug", "trainer.max_steps=2", "trainer.threads=2",
                 "callbacks.reconstruction_every_n_steps=0", f"run_dir={tmp_path}"])
    assert code == 0 and torch.get_num_threads() == 2
    out = capsys.readouterr().out  # the run's summary
    assert re.search(r"\n  threads +2 \(as configured\)\n", out) and re.search(r"\n  precision +32-true \(as configured\)\n", out)
    result = pretrain(compose("pretrain", FAST + ["trainer=debug", "trainer.max_steps=1", "trainer.precision=auto",
                                                  f"run_dir={tmp_path / 'auto'}", "callbacks.reconstruction_every_n_steps=0"]))
    assert result["threads"].startswith("1 (auto: ") and result["precision"] == "32-true (auto: OMNIMAE_CPU_BF16=0)"
    assert torch.get_num_threads() == 1


def test_devices_are_named_or_refused_naming_the_key():
    from omnimae.hardware import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "gpu0", "cuda:x"):
        with pytest.raises(ConfigError, match=r"^device: expected auto, cpu, cuda, cuda:N or mps"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:0")
