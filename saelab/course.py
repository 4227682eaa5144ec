"""The course's budget: notebooks 02-07 use the zoo's recipes (`saelab.zoo`) for fewer epochs, and keep what a
learner made for later notebooks under $SAELAB_HOME/course.
"""

from __future__ import annotations

from pathlib import Path

from saelab import assets
from saelab.presets import fast_mode
from saelab.zoo import zoo_sae

# The course (notebooks 02-07) trains the same zoo recipe for fewer epochs, so that the whole series runs in under an
# hour from an empty cache on a 2-core CPU: 4 epochs of the main job's 400k tokens (781 steps of 2048) instead of 13
# (measured per step there: TopK 0.11 s, Multi-TopK 0.17 s, ReLU + L1 0.29 s, so 1.4 / 2.2 / 3.8 minutes instead of
# 4.6 / 7.2 / 12). Fast mode keeps the zoo's fast sizes. The ReLU + L1 coefficient is re-matched for the shorter run,
# which ends sparser at the same coefficient: at 4 epochs (776 steps) on the mixture, validation L0 25.0 (normalized
# MSE 0.449) at L1_MATCHED's 0.206 (L0 35.1 at 13 epochs), then 32.6 (0.424) at 0.186, chosen with the slope
# L0 ~ coef^-2.4 (2026-12-02). A ReLU + L1 SAE converges more slowly than TopK: its 0.424 at 4 epochs against 0.279
# at 13, where TopK goes from ~0.17 to 0.156.
COURSE_EPOCHS = 4.0
L1_MATCHED_COURSE = 0.186


def course_overrides(kind: str, fast: bool | None = None) -> dict:
    """The TrainConfig fields the course changes in the zoo's recipe for SAE `kind` (none in fast mode)."""
    if fast_mode() if fast is None else fast:
        return {}
    return {"epochs": COURSE_EPOCHS, **({"l1_coef": L1_MATCHED_COURSE} if kind == "relu" else {})}


def course_sae(kind: str = "topk", fast: bool | None = None, progress: bool = True, device: str = "cpu"):
    """The zoo SAE `kind` at the course's budget (COURSE_EPOCHS; notebooks 02-07 share it): (sae, folder)."""
    return zoo_sae(kind, fast=fast, progress=progress, device=device, **course_overrides(kind, fast))


def course_folder(name: str, fast: bool | None = None) -> Path:
    """Where the course keeps what a learner made for later notebooks (02's own SAE for 03-05):
    $SAELAB_HOME/course/{fast,full}/name."""
    return assets.home() / "course" / ("fast" if (fast_mode() if fast is None else fast) else "full") / name
