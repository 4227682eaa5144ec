"""`saelab train --track wandb`: an offline W&B run (WANDB_MODE=offline, no account) holds log.jsonl's curves at
their steps, the run's settings, the final metrics and the report. Needs the `track` extra (wandb); skipped without
it, except under CI, which installs it. The run is read back from W&B's own transaction log (run-*.wandb: LevelDB
log blocks of wandb's protobuf records), since an offline run has no server to ask."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import TINY_TRAIN


def need_wandb():
    try:
        import wandb  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("wandb is missing under CI: pip install -e '.[track]' (bootstrap.sh --peers installs it)")
        pytest.skip("wandb is not installed: pip install -e '.[track]'")


def read_offline_run(run_dir: Path) -> dict:
    """{'config', 'history' (rows by step), 'summary', 'files'} of the one offline run under `run_dir`/wandb."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    records, pos, buf, block = [], 7, b"", 32768  # a 7-byte header, then LevelDB-log blocks of 32 KiB
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: the record is complete
            records.append(buf)
            buf = b""
    out = {"config": {}, "history": {}, "summary": {}, "files": []}

    def items(updates):
        return {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in updates}

    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["config"].update(items(rec.run.config.update))
        elif kind == "config":
            out["config"].update(items(rec.config.update))
        elif kind == "history":
            row = items(rec.history.item)
            out["history"].setdefault(row["_step"], {}).update(row)
        elif kind == "summary":
            out["summary"].update(items(rec.summary.update))
        elif kind == "files":
            out["files"] += [f.path for f in rec.files.files]
    return out


def test_track_wandb_logs_the_same_curves_settings_metrics_and_report_offline(tmp_path):
    need_wandb()
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "WANDB_PROJECT": "saelab-test"}
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "saelab", "train", "--out", str(run), *TINY_TRAIN,
                           "--train.eval_every", "4", "--train.log_every", "2", "--track", "wandb"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    got = read_offline_run(run)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) > 3 and any("eval_nmse" in r for r in log)
    for rec in log:  # every number of every log.jsonl record, at its step
        row = got["history"][rec["step"]]
        for key, value in rec.items():
            if key != "step":
                assert row[key] == pytest.approx(value, rel=1e-9), (rec["step"], key)
    assert set(got["history"]) == {r["step"] for r in log}
    settings = json.loads((run / "run.json").read_text())["settings"]
    assert got["config"]["train"]["sae"]["n_latents"] == settings["train"]["sae"]["n_latents"] == 128
    assert got["config"]["harvest"]["model"] == "tiny-gpt2"
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert got["summary"]["final/nmse"] == pytest.approx(metrics["final"]["nmse"])
    assert got["summary"]["validation/l0"] == pytest.approx(metrics["validation"]["l0"])
    assert {"report/metrics.json", "report/curves.html"} <= set(got["files"])


def test_tracking_is_off_by_default_and_a_missing_wandb_names_the_extra(tmp_path, monkeypatch):
    from saelab.training.tracking import NoTracker, make_tracker

    assert isinstance(make_tracker("none", tmp_path, {}), NoTracker) and not any(tmp_path.iterdir())
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ValueError, match=r"pip install 'saelab\[track\]'"):
        make_tracker("wandb", tmp_path, {})
    with pytest.raises(ValueError, match="--track must be one of"):
        make_tracker("mlflow", tmp_path, {})
