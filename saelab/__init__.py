"""saelab: TopK sparse autoencoders on language-model activations (Gao et al. 2024).

The package is the pipeline, one stage a subpackage; imports point down the stages only:

    lm        load a causal LM, hook a site
    acts      corpora -> contexts -> harvested activations (cache, stream)
    sae       the SAE: config, model, activations, input normalisation, kernels, loss, file formats
    evals     held-out reconstruction, the splice into the LM, delta CE, probes, N2G, ablation sparsity
    training  the Trainer (evaluates held-out as it goes), run folders, reports
    studies   the paper's experiments: frontiers, scaling grids and laws, progressive recovery
    interp    latent statistics, the explorer, steering, attribution
    teach     the toy data and the notebooks' exercise checks

Top level: `cli`, `commands`, `commands_share` and `commands_studies` (the `saelab` command), `presets` (the main
job's settings), `zoo` (SAEs trained with them, cached), `course` (the notebooks' budget), and the helpers every stage
may use (`assets`, `files`, `flags`, `distributed`, `pages`).

The names below are the stable API (`from saelab import SAE, Trainer, harvest`); each is imported on first
use, so `import saelab` alone does not import torch. Upgrading from 0.1, where every module sat directly under
`saelab/`: README.md's "The package" lists where each module went.
"""

from saelab.version import __version__ as __version__  # the version, in a module every stage may import

_API = {
    "load_lm": "saelab.lm.models", "resolve_device": "saelab.lm.models",
    "load_corpus": "saelab.acts.corpus", "ContextConfig": "saelab.acts.corpus", "build_contexts": "saelab.acts.corpus",
    "harvest": "saelab.acts.harvest", "harvest_sites": "saelab.acts.harvest", "HarvestConfig": "saelab.acts.harvest",
    "ActivationCache": "saelab.acts.cache",
    "SAE": "saelab.sae.model", "SAEConfig": "saelab.sae.config", "normalized_mse": "saelab.sae.losses",
    "load_sae": "saelab.sae.formats", "to_saelens": "saelab.sae.formats", "to_sparsify": "saelab.sae.formats",
    "reconstruction_metrics": "saelab.evals.reconstruction", "SpliceSite": "saelab.evals.splice",
    "encode_contexts": "saelab.evals.splice", "downstream_loss": "saelab.evals.downstream",
    "run_suite": "saelab.evals.suite", "SuiteConfig": "saelab.evals.suite",
    "Trainer": "saelab.training.trainer", "TrainConfig": "saelab.training.config",
    "spliced": "saelab.interp.steering", "steer": "saelab.interp.steering",
    "LatentExplorer": "saelab.interp.explorer", "export_dashboard": "saelab.interp.export",
    "zoo_sae": "saelab.zoo",
    "course_sae": "saelab.course",
}
__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'saelab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
