"""The SAE families, one file each, registered here by name: the one place that lists them.

    base        `Family` (the hooks), `SparseStep` (the training pass of sparse selections), the model's outputs
    topk        TopK with AuxK and Multi-TopK (Gao et al. 2024)
    batchtopk   BatchTopK: the batch's B*k largest, one threshold at inference (Bussmann et al. 2024)
    matryoshka  nested prefixes, each reconstructing on its own (Bussmann et al. 2025), over TopK or BatchTopK
    jumprelu    learned per-latent thresholds and an L0 penalty (Rajamanoharan et al. 2024)
    relu        the ReLU + L1 baseline
    transcoder  TopK transcoders: read an MLP's input, reconstruct its output (optional skip connection)

A new family is a new file beside these and one `register` line below. Its options join `SAEConfig`; the model,
the trainer, the studies and the file formats read everything else from the registry.
"""

from __future__ import annotations

from saelab.sae.families import batchtopk, jumprelu, matryoshka, relu, topk, transcoder
from saelab.sae.families.base import Family

FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    family.registry = FAMILIES
    return family


register(topk.FAMILY)
register(batchtopk.FAMILY)
register(matryoshka.FAMILY)
register(jumprelu.FAMILY)
register(relu.FAMILY)
register(transcoder.FAMILY)


def activations() -> tuple[str, ...]:
    """The names `SAEConfig.activation` takes (families that an option claims, such as Matryoshka, are not)."""
    return tuple(name for name, fam in FAMILIES.items() if type(fam).claims is Family.claims)


def family_of(cfg) -> Family:
    """The family of an SAEConfig: one whose option claims it (Matryoshka's widths), else its activation's."""
    for fam in FAMILIES.values():
        if type(fam).claims is not Family.claims and fam.claims(cfg):
            return fam
    return FAMILIES[cfg.activation]


def option_classes() -> tuple[type, ...]:
    """The families' option dataclasses, in registry order (their fields join SAEConfig)."""
    return tuple(fam.options for fam in FAMILIES.values() if fam.options is not None)


def studied() -> tuple[str, ...]:
    """The families the studies compare (`saelab frontier`, `saelab synthetic`), in registry order."""
    return tuple(name for name, fam in FAMILIES.items() if fam.studied)


def saelens_architectures() -> dict[str, str]:
    """{SAE Lens architecture: the saelab activation it is read as}, over the registry."""
    return {arch: act for fam in FAMILIES.values() for arch, act in fam.saelens_reads.items()}
