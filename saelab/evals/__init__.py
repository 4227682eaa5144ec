"""Stage 4, evaluations: how good is an SAE, whoever trained it (the paper's section 4 metrics, and feature absorption
on the LM and against ground truth).

    reconstruction  held-out normalized MSE, L0 and never-fired latents on cached activations
    core            SAEBench's core metrics by their names (explained variance, cosine, l2 ratio, ...) beside ours
    intervals       seeds and 95% intervals: a mean and t-interval over seeds, paired comparisons
    splice          put an SAE's reconstruction into the LM at its site (which positions, its codes)
    downstream      delta CE, KL and loss recovered of the spliced LM
    probes          1-D logistic probe loss on the latents (section 4.2)
    n2g             Neuron-to-Graph explanations: precision and recall of simple rules (section 4.3)
    ablation        ablation sparsity of each latent's effect on the logits (section 4.5)
    suite           all of them side by side on one or several SAEs (`saelab eval`)
    ground_truth    an SAE against known features: MCC, recovered share, exact absorption, dead and duplicate latents
    ground_truth_saelens  SAE Lens's own scores of an SAE on synthetic data (its calculators), beside saelab's
    spelling        SAEBench's first-letter spelling prompts, the residual at the word, the per-letter probe
    absorption      SAEBench's first-letter feature absorption on the LM (absorption fraction, full absorption)

May import: `lm`, `acts`, `sae` and the top-level helpers. It comes before `training` because an evaluation needs
only an SAE (one loaded from SAE Lens as well as one trained here) and the trainer scores held-out data as it goes.
"""
