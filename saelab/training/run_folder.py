"""A training run's folder: the lock that keeps a second run out, the log, checkpoints and resume, the saved SAE.

    out/log.jsonl       one line per logged step and held-out evaluation (a resumed run drops the lines after
                        its checkpoint; a run killed before its first checkpoint restarts, its log kept aside)
    out/checkpoints/    `saelab.training.checkpoints` (atomic; the newest `keep_checkpoints` kept)
    out/sae/            the final SAE (`SAE.save`), with the training config, the dead-latent window and the
                        weight average's record in its cfg.json
    out/tensorboard/    with `tensorboard=True`

The Trainer works without one (`out_dir=None`): nothing is written, and nothing is resumed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from saelab.files import atomic_write_text, run_lock
from saelab.training.checkpoints import (
    TrainingState,
    check_resumable,
    checkpoint_folders,
    read_checkpoint,
    read_log,
    read_meta,
    write_checkpoint,
)

__all__ = ["RunFolder", "read_log"]


class RunFolder:
    """The folder of one Trainer (rank 0 writes; every rank resumes)."""

    def __init__(self, path: str | Path, rank: int, tracker=None):
        """`tracker` (`saelab.training.tracking`): a sink that gets each log record too (rank 0)."""
        self.path, self.rank = Path(path), rank
        self.tensorboard = None
        self.sinks = [tracker] if tracker is not None and rank == 0 else []
        self._lock = run_lock(self.path, "training run") if rank == 0 else None

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def open(self, trainer) -> None:
        """Lock the folder (held until `close`: a second run on it is refused) and resume its last checkpoint."""
        if self._lock is not None:
            self._lock.__enter__()
        try:
            self._resume(trainer)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)

    def _resume(self, trainer) -> None:
        ckpts = checkpoint_folders(self.checkpoints)
        if not ckpts:
            if (self.path / "sae" / "cfg.json").exists():
                raise ValueError(f"{self.path} holds a finished run (sae/) with no checkpoint to resume from; pass "
                                 f"another --out folder (Python: another out_dir), or delete {self.path}")
            if (self.path / "log.jsonl").exists() and self.rank == 0:  # a run killed before its first checkpoint
                os.replace(self.path / "log.jsonl", self.path / "log.restarted.jsonl")  # restarts from step 0
            return
        path = ckpts[-1]
        check_resumable(path, read_meta(path), trainer.cfg, trainer.data_identity)
        read = trainer.shards.read_checkpoint if trainer.shards is not None else read_checkpoint  # a shard: its rows
        meta = read(path, trainer.sae, trainer.opt, trainer.device, trainer.ema)
        trainer.step = meta["step"]
        trainer.data.skip(trainer.step)
        log = self.path / "log.jsonl"
        if log.exists() and self.rank == 0:
            keep = [rec for rec in read_log(log) if rec["step"] <= trainer.step]
            atomic_write_text(log, "".join(json.dumps(rec) + "\n" for rec in keep))
            trainer.history = keep
        if self.rank == 0:
            print(f"saelab: resumed from {path} at step {trainer.step}/{trainer.total_steps}", flush=True)

    def start(self, trainer) -> None:
        if self.rank != 0:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if trainer.cfg.tensorboard:
            from saelab.training.tracking import TensorBoardLog

            self.tensorboard = TensorBoardLog(self.path / "tensorboard")
            self.sinks.append(self.tensorboard)

    def log(self, rec: dict) -> None:
        with open(self.path / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        for sink in self.sinks:
            sink.log(rec)

    def save_checkpoint(self, trainer, saved: TrainingState) -> Path:
        return write_checkpoint(self.checkpoints, trainer.step, saved, trainer.cfg, trainer.total_steps,
                                trainer.data_identity)

    def finish(self, trainer) -> None:
        """Save the final SAE to out/sae (rank 0) and keep `keep_checkpoints` of the checkpoints."""
        if self.tensorboard is not None:
            self.tensorboard.finish()
        if self.rank != 0:
            return
        extra = {"train_config": asdict(trainer.cfg), "dead_tokens": trainer.dead_tokens}
        if getattr(trainer, "ema_record", None):
            extra["ema"] = trainer.ema_record
        trainer.sae.save(self.path / "sae", extra=extra)
        if trainer.cfg.keep_checkpoints == 0:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
