"""Stage 5, training: an activation cache (or stream) in, a trained SAE and its report out.

    trainer  `Trainer` and `TrainConfig`: the paper's recipe (Adam, warmup, decay, AuxK dead tracking),
             resume, held-out evaluation every few steps (`saelab.evals.reconstruction`)
    checkpoints  atomic checkpoints, and the checks that a resume continues the same run
    ema      the bias-corrected weight average (`ema_decay`) and the decoder-norm fold it is saved with
    runs     a run folder's record of what it was asked (run.json), checked before anything runs
    report   the run's metrics.json and training curves
    tracking `--track wandb`: the same curves, settings, final metrics and report in Weights & Biases
    sites    several sites from one harvest: one SAE a site, each in its own folder, and one summary table

May import: `lm`, `acts`, `sae`, `evals` and the top-level helpers.
"""
