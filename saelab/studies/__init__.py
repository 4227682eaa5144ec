"""Stage 6, the paper's experiments: many SAEs trained and evaluated to answer one question.

    frontier              SAE families at matched L0: TopK, BatchTopK, Matryoshka, JumpReLU, ReLU + L1 (2.3, 4.1)
    scaling_grid          train a grid of TopK SAEs over n and k, with held-out curves (section 3)
    scaling_laws          fit L(N), L(N, k) and L(C) to a grid, with uncertainties (section 3)
    progressive_recovery  test-time k and JumpReLU sweeps, activation shrinkage (section 5)
    domain_shift          normalized MSE and delta CE per corpus: the training mixture's parts and other registers
    synthetic_bench       every family on synthetic data with a known hierarchy: MCC and absorption at matched L0 (data
                          from saelab's generator or SAE Lens's, `saelab synthetic`)

May import: every earlier stage (`lm` to `training`) and the top-level helpers.
"""
