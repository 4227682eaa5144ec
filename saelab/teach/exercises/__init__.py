"""Exercises for the notebooks: reference solutions and checks that name a wrong answer's mistake.

One module per notebook (`toy` 00, `harvest` 01, `training` and `build` 02, `evaluation` 03, `recovery` 04,
`explore` 05, `scaling` 06, `steering`, `ablation` and `attribution` 07, `after`, `jumprelu_grad` and
`transcoders` 08). Each `check_*` takes the learner's function, runs it on small cases and raises `AssertionError`
with a hint naming the likely mistake (tests/test_exercises.py feeds each check known-wrong implementations); it
prints a short confirmation when all cases pass.

A stub the learner must fill calls `todo("2.1")`, which stops the notebook with a clear message. Each check is
declared with `@exercise("N.M", reference)`: under SAELAB_SOLUTIONS=1 (how CI runs the notebooks) it grades the
reference solution in place of the learner's function, so no notebook cell names a solution.
"""

from types import SimpleNamespace

from saelab.teach.exercises import (
                                          ablation,
                                          after,
                                          attribution,
                                          build,
                                          evaluation,
                                          explore,
                                          harvest,
                                          jumprelu_grad,
                                          recovery,
                                          scaling,
                                          steering,
                                          toy,
                                          training,
                                          transcoders,
)
from saelab.teach.exercises.ablation import check_ablate_rows
from saelab.teach.exercises.after import (
                                          check_batchtopk,
                                          check_matryoshka_loss,
                                          check_pair_absorption,
)
from saelab.teach.exercises.attribution import check_attribution_estimates
from saelab.teach.exercises.base import NotWrittenYet, graded, solutions_on, todo
from saelab.teach.exercises.build import (
                                          check_decoder_constraint,
                                          check_my_sae,
                                          check_training,
                                          normalize_tokens,
                                          save_my_sae,
)
from saelab.teach.exercises.evaluation import check_effect_sparsity, check_probe_loss_1d, check_spliced_loss
from saelab.teach.exercises.explore import check_dashboard_examples, check_find_concept_latent
from saelab.teach.exercises.harvest import check_residual_after_block
from saelab.teach.exercises.jumprelu_grad import check_jumprelu_threshold_grad
from saelab.teach.exercises.recovery import check_recovery_curve, check_threshold_for_l0
from saelab.teach.exercises.scaling import check_compute_envelope, check_fit_power_law
from saelab.teach.exercises.steering import check_steering_hook
from saelab.teach.exercises.toy import check_feature_recovery, check_latent_roles
from saelab.teach.exercises.training import check_auxk_loss, check_normalized_mse, check_topk_activation
from saelab.teach.exercises.transcoders import check_transcoder_loss

solutions = SimpleNamespace(
    feature_recovery=toy.feature_recovery, latent_roles=toy.latent_roles,
    residual_after_block=harvest.residual_after_block,
    topk_activation=training.topk_activation, normalized_mse=training.normalized_mse, auxk_loss=training.auxk_loss,
    MyTopKSAE=build.MyTopKSAE, constrain_decoder_grad_=build.constrain_decoder_grad_,
    renormalize_decoder_=build.renormalize_decoder_, train_my_sae=build.train_my_sae,
    spliced_loss=evaluation.spliced_loss, probe_loss_1d=evaluation.probe_loss_1d,
    effect_sparsity=evaluation.effect_sparsity,
    recovery_curve=recovery.recovery_curve, threshold_for_l0=recovery.threshold_for_l0,
    dashboard_examples=explore.dashboard_examples, find_concept_latent=explore.find_concept_latent,
    fit_power_law=scaling.fit_power_law, compute_envelope=scaling.compute_envelope,
    add_steering_hook=steering.add_steering_hook, ablate_rows=ablation.ablate_rows,
    attribution_estimates=attribution.attribution_estimates,
    batchtopk=after.batchtopk, inference_threshold=after.inference_threshold,
    matryoshka_loss=after.matryoshka_loss, jumprelu_threshold_grad=jumprelu_grad.jumprelu_threshold_grad,
    pair_absorption=after.pair_absorption, transcoder_loss=transcoders.transcoder_loss,
)
"""The reference solutions, by exercise function name (e.g. `solutions.auxk_loss`)."""

__all__ = [
    "NotWrittenYet", "graded", "solutions", "solutions_on", "todo",
    "check_feature_recovery", "check_latent_roles", "check_residual_after_block",
    "check_topk_activation", "check_normalized_mse", "check_auxk_loss",
    "check_my_sae", "check_decoder_constraint", "check_training", "normalize_tokens", "save_my_sae",
    "check_spliced_loss", "check_probe_loss_1d", "check_effect_sparsity",
    "check_recovery_curve", "check_threshold_for_l0", "check_dashboard_examples", "check_find_concept_latent",
    "check_fit_power_law", "check_compute_envelope", "check_steering_hook", "check_ablate_rows",
    "check_attribution_estimates", "check_batchtopk", "check_matryoshka_loss", "check_jumprelu_threshold_grad",
    "check_pair_absorption", "check_transcoder_loss",
]
