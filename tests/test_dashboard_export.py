"""`saelab dashboard`: static latent pages (every token escaped, plotly from a local file) and a JSON export in
Neuronpedia's feature-batch format, checked against SAEDashboard 0.8.0's own definition of it
(`sae_dashboard.neuronpedia.neuronpedia_dashboard`, read from its PyPI wheel: the package pins transformers < 4.57
and datasets < 4, so it is not installed here; its schema module needs numpy only)."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from saelab.interp.export import FEATURE_KEYS, export_dashboard
from saelab.interp.latent_stats import StatsConfig
from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE

STATS = StatsConfig(corpus="synthetic", split="heldout", n_contexts=24, top_n=5, n_intervals=3, per_interval=2)


class MarkupTokenizer:
    """The LM's tokenizer, whose decoded tokens carry HTML (as real vocabularies do: '<b>', '</s>', '&amp;')."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def __len__(self):
        return len(self.inner)

    def decode(self, ids, **kwargs):
        return f"<i>{self.inner.decode(ids, **kwargs)}</i>&"


def make_dashboard(tiny_lm, out: Path, markup: bool = True) -> tuple[Path, SAE, object]:
    from dataclasses import replace

    lm = replace(tiny_lm, tokenizer=MarkupTokenizer(tiny_lm.tokenizer)) if markup else tiny_lm
    sae = SAE(SAEConfig(d_in=tiny_lm.d_model, n_latents=128, k=8, model="tiny-gpt2", site="resid_post", layer=2),
              seed=0)
    return export_dashboard(lm, sae, out, n_latents=6, stats_cfg=STATS, progress=False), sae, lm


def neuronpedia_schema():
    """SAEDashboard 0.8.0's neuronpedia_dashboard module: installed, or imported from its wheel (pip download)."""
    name = "sae_dashboard.neuronpedia.neuronpedia_dashboard"
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    from saelab import assets

    folder = assets.home() / "peer-wheels"
    wheels = sorted(folder.glob("sae_dashboard-0.8.0-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "sae-dashboard==0.8.0", "-d",
                        str(folder)], capture_output=True, timeout=300)
        wheels = sorted(folder.glob("sae_dashboard-0.8.0-*.whl"))
    if not wheels:
        if os.environ.get("CI"):
            pytest.fail("could not fetch sae-dashboard 0.8.0's wheel from PyPI")
        pytest.skip("sae-dashboard 0.8.0's wheel is not here and PyPI is unreachable")
    sys.path.insert(0, str(wheels[0]))  # a pure-Python wheel imports from the zip
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(wheels[0]))


def test_dashboard_pages_escape_every_token_and_the_json_is_saedashboards_neuronpedia_batch(tmp_path, tiny_lm):
    out, sae, lm = make_dashboard(tiny_lm, tmp_path / "dash")
    latents = sorted(int(p.stem) for p in (out / "latents").glob("*.html"))
    assert len(latents) == 6 and (out / "plotly.min.js").stat().st_size > 1_000_000
    index = (out / "index.html").read_text()
    assert all(f"href='latents/{i}.html'" in index for i in latents)
    for i in latents:
        page = (out / "latents" / f"{i}.html").read_text()
        assert "<script src='../plotly.min.js'>" in page and "cdn" not in page.lower()
        assert "&lt;i&gt;" in page and "</i>&" not in page  # the tokens' markup is shown, never parsed
        assert "Top activations" in page and "Promotes" in page and "N2G explanation" in page
    batch = json.loads((out / "neuronpedia" / "batch-0.json").read_text())
    assert (batch["model_id"], batch["layer"]) == ("tiny-gpt2", 2)
    first = batch["features"][0]
    assert tuple(first) == FEATURE_KEYS and first["feature_index"] == latents[0]
    top = [a for a in first["activations"] if a["bin_min"] == -1]
    assert top and all(len(a["tokens"]) == len(a["values"]) for a in first["activations"])
    best = max(top, key=lambda a: a["values"][a["qualifying_token_index"]])
    assert best["values"][best["qualifying_token_index"]] == pytest.approx(best["bin_max"], abs=1e-3)
    assert best["tokens"][0].startswith("<i>")  # JSON holds the token text itself
    from saelab.interp.dashboard import logit_vector

    assert first["pos_values"][0] == pytest.approx(float(logit_vector(lm, sae, latents[0]).max()), abs=1e-3)
    assert 0 < first["frac_nonzero"] <= 1 and sum(first["freq_hist_data_bar_heights"]) > 0
    schema = neuronpedia_schema()
    parsed = schema.NeuronpediaDashboardBatch(**batch)  # unknown keys would raise here
    assert parsed.to_dict() == batch  # every key SAEDashboard writes, nothing else, the same values and nesting
    assert isinstance(parsed.features[0].activations[0], schema.NeuronpediaDashboardActivation)
    with pytest.raises(TypeError):
        schema.NeuronpediaDashboardBatch(**{**batch, "features": [{**first, "explanation": "x"}]})


def test_dashboard_command_writes_pages_for_chosen_latents(tmp_path, tiny_lm):
    sae = SAE(SAEConfig(d_in=tiny_lm.d_model, n_latents=128, k=8, model="tiny-gpt2", site="resid_post", layer=2))
    sae.save(tmp_path / "sae")
    run = subprocess.run([sys.executable, "-m", "saelab", "dashboard", "--sae", str(tmp_path / "sae"), "--out",
                          str(tmp_path / "dash"), "--latents", "3,5", "--stats.corpus", "synthetic",
                          "--stats.n_contexts", "16", "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "dash" / "latents").iterdir()) == ["3.html", "5.html"]
    assert [f["feature_index"] for f in json.loads((tmp_path / "dash" / "neuronpedia" / "batch-0.json").read_text())
            ["features"]] == [3, 5]
    assert not (tmp_path / "sae" / "latent_stats.safetensors").exists()  # the SAE's folder is left as it was
    bad = subprocess.run([sys.executable, "-m", "saelab", "dashboard", "--sae", str(tmp_path / "sae"), "--out",
                          str(tmp_path / "dash2"), "--latents", "999", "--stats.corpus", "synthetic",
                          "--stats.n_contexts", "16"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "latent 999 is out of range" in bad.stderr

