"""Run tracking beyond log.jsonl: Weights & Biases (`saelab train --track wandb`, the `track` extra), which SAE Lens,
sparsify and dictionary_learning log to.

What goes there is what the run folder keeps: every log.jsonl record as a history row at its step (training
losses, L0, dead fraction, learning rate; the held-out curves), the run's settings (run.json's) as the config, the
final metrics (report/metrics.json) as the summary, and the report folder's files. Off by default; WANDB_MODE=offline
writes the run under the run folder's wandb/ without an account (`wandb sync` uploads it later). Each invocation
is one W&B run: a resumed training run starts a new one from its resume step.
"""

from __future__ import annotations

import os
from pathlib import Path

TRACKERS = ("none", "wandb")


def flat_numbers(d: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested dict, keys joined with '/' (booleans and text left out)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_numbers(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


class WandbTracker:
    """One W&B run for one training run folder; `log` takes log.jsonl's records, `finish` the final metrics."""

    def __init__(self, run_dir: str | Path, config: dict, name: str | None = None, group: str | None = None):
        try:
            import wandb
        except ImportError:
            raise ValueError("--track wandb needs the wandb package: pip install 'saelab[track]' (set "
                             "WANDB_MODE=offline to log without an account)") from None
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "saelab"), dir=str(self.run_dir),
                              name=name or self.run_dir.name, group=group, config=config)

    def log(self, record: dict) -> None:
        """A log.jsonl record, at its step (a training row and the held-out row of one step share it)."""
        numbers = {k: v for k, v in flat_numbers(record).items() if k != "step"}
        self.run.log(numbers, step=int(record["step"]))

    def finish(self, metrics: dict | None = None, report_dir: str | Path | None = None) -> None:
        """The final metrics as the run's summary ('final/nmse', 'validation/l0', ...), the report's files, done."""
        if metrics:
            self.run.summary.update(flat_numbers({k: v for k, v in metrics.items() if k in ("final", "validation")}))
        if report_dir is not None and Path(report_dir).is_dir():
            base = Path(report_dir).parent
            for path in sorted(Path(report_dir).iterdir()):
                if path.is_file():
                    self.run.save(str(path), base_path=str(base), policy="now")
        self.run.finish()


class TensorBoardLog:
    """`--train.tensorboard true`: each log.jsonl record's numbers as TensorBoard scalars (the `tensorboard` extra)."""

    def __init__(self, folder: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(folder)

    def log(self, record: dict) -> None:
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, v, record["step"])

    def finish(self) -> None:
        self.writer.close()


class NoTracker:
    """`--track none` (the default): logs nothing."""

    def log(self, record: dict) -> None:
        pass

    def finish(self, metrics: dict | None = None, report_dir: str | Path | None = None) -> None:
        pass


def make_tracker(kind: str, run_dir: str | Path, config: dict, name: str | None = None, group: str | None = None):
    """A `NoTracker` for 'none', a `WandbTracker` for 'wandb'."""
    if kind not in TRACKERS:
        raise ValueError(f"--track must be one of {TRACKERS}, got {kind!r}")
    return WandbTracker(run_dir, config, name, group) if kind == "wandb" else NoTracker()
