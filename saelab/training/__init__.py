"""Stage 5, training: an activation cache (or stream) in, a trained SAE and its report out.

    config   `TrainConfig`: one run's settings, holding the `SAEConfig` it trains (flat spellings as aliases)
    trainer  `Trainer`: the paper's recipe (Adam, warmup, decay, AuxK dead tracking), the families' hooks,
             held-out evaluation every few steps (`saelab.evals.reconstruction`), data parallelism
    data     where the batches come from: a cache, a tensor in memory, or a stream
    acceleration  bf16 autocast (CUDA) and torch.compile of the training step, and what each leaves in fp32
    parallel  data parallelism under torchrun: the SAE in PyTorch's DistributedDataParallel (or the hand-written
             all-reduce it is measured against)
    sharded  `shard_latents`: the latents split across ranks (model parallel), gathered for checkpoints and saving
    run_folder  a run's folder (optional): lock, log, checkpoints and resume, the saved SAE
    identity  is it the same run? one answer (and one migration of 0.3's records) for run folders,
             checkpoints, frontier points, zoo folders and grid ids
    checkpoints  atomic checkpoints, and the check that a resume continues the same run
    ema      the bias-corrected weight average (`ema_decay`) and the decoder-norm fold it is saved with
    runs     a run folder's record of what it was asked (run.json), checked before anything runs
    report   the run's metrics.json and training curves
    tracking `--track wandb`: the same curves, settings, final metrics and report in Weights & Biases
    sites    several sites from one harvest: one SAE a site, each in its own folder, and one summary table

May import: `lm`, `acts`, `sae`, `evals` and the top-level helpers.
"""
