"""Every study command trains its SAEs on the device it is given (`--device`), and a device this machine lacks is
refused, with a clear message, before any work. CPU only: CUDA is faked (one GPU seen) where a command must accept
"cuda:0", and the training is replaced by a recorder that stops the command once it knows the device."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from saelab.cli import build_parser, main


class Stop(Exception):
    """Raised by a recorder: the command got as far as training."""


def recorder(seen: list):
    """A stand-in for a training function or class: records the `device` it is given, then stops the command."""
    def record(*args, device=None, **kwargs):
        seen.append(str(device))
        raise Stop

    return record


@pytest.fixture
def one_gpu(monkeypatch):
    """This torch sees one CUDA GPU (nothing is run on it: training is replaced by recorders)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model or the main job's caches fails the test: a command must not get there."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the device was checked")

    import saelab.lm.models
    import saelab.presets

    monkeypatch.setattr(saelab.lm.models, "load_lm", forbidden)
    monkeypatch.setattr(saelab.presets, "default_caches", forbidden)


def _run(argv):
    args = build_parser().parse_args(argv)
    with pytest.raises(Stop):
        args.func(args)


def test_frontier_trains_on_its_device(one_gpu, monkeypatch, tmp_path):
    import saelab.lm.models
    import saelab.presets
    import saelab.studies.frontier as frontier

    seen: list = []
    monkeypatch.setattr(saelab.lm.models, "load_lm", lambda name, device="cpu": seen.append(f"lm {device}"))
    monkeypatch.setattr(saelab.presets, "default_caches", lambda **kw: (None, None))
    monkeypatch.setattr(frontier, "run_frontier", recorder(seen))
    _run(["frontier", "--device", "cuda:0", "--delta_ce_contexts", "0", "--out", str(tmp_path)])
    assert seen == ["lm cuda:0", "cuda:0"]
    # and run_frontier and calibrate_l1 hand it to every Trainer they make
    seen.clear()
    monkeypatch.setattr(frontier, "Trainer", recorder(seen))
    cfg = frontier.FrontierConfig(families="topk,relu", target_l0s="8")
    with pytest.raises(Stop):
        frontier.run_frontier(cfg, frontier.TrainConfig(), None, None, tmp_path / "f", device="cuda:3")
    with pytest.raises(Stop):
        frontier.calibrate_l1(frontier.TrainConfig(), {"activation": "relu"}, 32, None, None, tmp_path / "c",
                              device="cuda:3")
    assert seen == ["cuda:3", "cuda:3"]


def test_frontier_with_synthetic_trains_both_on_its_device(one_gpu, monkeypatch, tmp_path):
    import pandas as pd

    import saelab.lm.models
    import saelab.presets
    import saelab.studies.frontier as frontier
    import saelab.studies.synthetic_bench as bench

    seen: list = []
    monkeypatch.setattr(saelab.lm.models, "load_lm", lambda name, device="cpu": None)
    monkeypatch.setattr(saelab.presets, "default_caches", lambda **kw: (None, None))
    monkeypatch.setattr(frontier, "run_frontier", lambda *a, device=None, **kw: seen.append(device) or pd.DataFrame())
    monkeypatch.setattr(frontier, "frontier_figures", lambda df: [])
    monkeypatch.setattr(bench, "run_synthetic_bench", recorder(seen))
    _run(["frontier", "--device", "cuda:0", "--delta_ce_contexts", "0", "--synthetic", "--out", str(tmp_path)])
    assert seen == ["cuda:0", "cuda:0"]


def test_synthetic_trains_on_its_device(one_gpu, monkeypatch):
    import saelab.studies.synthetic_bench as bench

    seen: list = []
    monkeypatch.setattr(bench, "run_synthetic_bench", recorder(seen))
    _run(["synthetic", "--device", "cuda:0"])
    seen_by_bench: list = []
    monkeypatch.undo()
    monkeypatch.setattr(bench, "Trainer", recorder(seen_by_bench))
    cfg = bench.fast_synthetic_config()
    with pytest.raises(Stop):
        bench.run_synthetic_bench(replace(cfg, data=replace(cfg.data, n_samples=10_000)), device="cuda:3")
    assert seen == ["cuda:0"] and seen_by_bench == ["cuda:3"]


def test_scale_trains_on_its_device(one_gpu, monkeypatch, tmp_path):
    import saelab.presets
    import saelab.studies.frontier as frontier
    import saelab.studies.scaling_grid as grid

    seen: list = []
    run_grid = grid.run_grid
    monkeypatch.setattr(saelab.presets, "default_caches", lambda **kw: (None, None))
    monkeypatch.setattr(grid, "run_grid", recorder(seen))
    _run(["scale", "--device", "cuda:0", "--out", str(tmp_path)])
    assert seen == ["cuda:0"]
    # run_grid hands it to every point's Trainer (a failed point is recorded and the grid goes on)
    seen.clear()
    monkeypatch.setattr(frontier, "Trainer", recorder(seen))
    cache = SimpleNamespace(manifest={}, d_model=16)
    cfg = replace(grid.scale_defaults(fast=True), ns="64,128", ks="4")
    table, _ = run_grid(cfg, frontier.TrainConfig(), cache, cache, tmp_path / "g", progress=False,
                        log=lambda *a: None, device="cuda:3")
    assert seen == ["cuda:3", "cuda:3"] and list(table.status) == ["failed", "failed"]


def test_sweep_and_eval_train_their_zoo_saes_on_their_device(one_gpu, monkeypatch):
    import saelab.zoo

    seen: list = []
    monkeypatch.setattr(saelab.zoo, "zoo_sae", recorder(seen))
    _run(["sweep", "--device", "cuda:0", "--zoo", "topk"])
    _run(["eval", "--device", "cuda:0", "--zoo", "topk"])
    assert seen == ["cuda:0", "cuda:0"]


@pytest.mark.parametrize("command", ["frontier", "synthetic", "scale", "sweep", "train"])
def test_a_device_this_machine_lacks_is_refused_before_any_work(command, one_gpu, no_work, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # not a device name at all: the parser says so
        main([command, "--device", "tpu7"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu7'" in err
    assert main([command, "--device", "cuda:9", "--out", str(tmp_path / "out")]) == 2  # a GPU it does not have
    err = capsys.readouterr().err
    assert "device 'cuda:9' asked, but this machine has 1 CUDA GPU(s) (cuda:0 to cuda:0)" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
