"""Latent explorer (issue 8), headless: statistics, pure content functions, widget callbacks, escaping."""

import pytest
import torch

from saelab.interp import dashboard as D
from saelab.interp.explorer import LatentExplorer
from saelab.interp.latent_stats import StatsConfig, latent_stats_for, load_latent_stats
from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE

LAYER = 2
DEAD = 5


@pytest.fixture(scope="module")
def setup(tiny_lm, tmp_path_factory):
    sae = SAE(SAEConfig(d_in=tiny_lm.d_model, n_latents=64, k=4, layer=LAYER, site="resid_post"), seed=0)
    with torch.no_grad():
        sae.b_enc[DEAD] = -1e6  # never among the positive top-k: a dead latent
    folder = tmp_path_factory.mktemp("sae")
    sae.save(folder)
    stats = latent_stats_for(tiny_lm, sae, folder, StatsConfig(corpus="synthetic", n_contexts=24, top_n=5),
                             progress=False)
    return sae, stats, folder


def test_stats_are_consistent_with_the_codes(setup):
    sae, stats, _ = setup
    assert stats.density_N[DEAD] == 0 and stats.hist_NB[DEAD].sum() == 0
    alive = torch.nonzero(stats.density_N > 0).squeeze(1)
    lat = int(alive[0])
    vals = stats.latent_values(lat)
    valid = stats.codes.valid_NT
    assert abs(float(stats.density_N[lat]) - float((vals[valid] > 0).float().mean())) < 1e-6
    assert abs(float(stats.max_act_N[lat]) - float(vals.max())) < 1e-4
    # the first top position holds the max activation; histogram counts every firing
    top0 = int(stats.top_pos_NM[lat, 0])
    assert abs(float(vals.flatten()[top0]) - float(vals.max())) < 1e-4
    assert int(stats.hist_NB[lat].sum()) == int((vals[valid] > 0).sum())


def test_stats_round_trip_and_are_reused(setup, tiny_lm):
    sae, stats, folder = setup
    again = load_latent_stats(folder)
    assert torch.equal(again.top_pos_NM, stats.top_pos_NM)
    assert torch.allclose(again.density_N, stats.density_N)
    mtime = (folder / "latent_stats.safetensors").stat().st_mtime_ns
    latent_stats_for(tiny_lm, sae, folder, StatsConfig(corpus="synthetic", n_contexts=24, top_n=5), progress=False)
    assert (folder / "latent_stats.safetensors").stat().st_mtime_ns == mtime  # loaded, not recomputed


def test_missing_stats_error_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="latent_stats_for"):
        load_latent_stats(tmp_path)


def test_explorer_dead_last_and_out_of_range_latents(setup, tiny_lm):
    sae, stats, _ = setup
    ex = LatentExplorer(tiny_lm, sae, stats)
    ex.index.value = DEAD
    assert ex.current == DEAD
    assert "dead" in ex.act_fig.layout.title.text and sum(ex.act_fig.data[0].y) == 0
    assert "dead" in ex.header.value and "never fired" in ex.top.value
    last = stats.n_latents - 1
    ex.index.value = last
    assert ex.current == last and f"Latent {last}" in ex.header.value
    ex.next_btn.click()  # past the end
    assert ex.current == last and "out of range" in ex.status.value
    ex.index.value = -3
    assert ex.current == last and "out of range" in ex.status.value
    ex.prev_btn.click()
    assert ex.current == last - 1 and ex.status.value == ""


def test_explorer_figures_and_html_follow_the_latent(setup, tiny_lm):
    sae, stats, _ = setup
    ex = LatentExplorer(tiny_lm, sae, stats)
    lat = int(stats.density_N.argmax())
    ex.index.value = lat
    assert list(ex.act_fig.data[0].y) == stats.hist_NB[lat].tolist()
    assert f"{float(stats.density_N[lat]):.3%}" in ex.act_fig.layout.title.text
    assert any(f"#{lat}" == a.text for a in ex.density_fig.layout.annotations)
    assert ex.top.value.count("sl-line") == int((stats.top_pos_NM[lat, :10] >= 0).sum())
    eff = D.logit_effects(tiny_lm, sae, lat, k=3)
    assert len(eff["positive"]) == 3 and eff["positive"][0][1] >= eff["positive"][-1][1]
    assert eff["negative"][0][1] <= eff["negative"][-1][1]


def test_try_text_search_and_empty_input(setup, tiny_lm):
    sae, stats, _ = setup
    ex = LatentExplorer(tiny_lm, sae, stats)
    ex.try_text.value = ""
    ex.try_btn.click()
    assert "type some text" in ex.try_out.value
    ex.try_text.value = "w1 w2 the Paris"
    ex.try_btn.click()
    assert ex.try_out.value.count("sl-tok") == len("w1 w2 the Paris")  # byte-level tokenizer: one per char
    ex.search_text.value = "the Paris of 1999"
    found = ex.run_search()
    assert found and ex.current == found[0][0]
    ex.search_text.value = ""
    ex.search.value = "w"
    found = ex.run_search()
    assert found and all(stats.density_N[i] > 0 for i, _ in found)
    ex.search.value = ""
    assert ex.run_search() == [] and "none" in ex.results.value


def test_tokens_are_escaped(setup, tiny_lm):
    sae, stats, _ = setup
    out = D.highlight_html(["<script>alert(1)</script>", '" onmouseover="x'], [1.0, 0.5], 1.0)
    assert "<script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert 'onmouseover="x' not in out
    ex = LatentExplorer(tiny_lm, sae, stats)
    ex.try_text.value = "<script>alert(1)</script>"
    ex.try_btn.click()
    assert "<script>" not in ex.try_out.value and "&lt;" in ex.try_out.value
    ex.search.value = "<b>"
    ex.run_search()
    assert "&lt;b&gt;" in ex.results.value  # the query is shown escaped


def test_steering_panel_generates_side_by_side_and_escapes(setup, tiny_lm):
    sae, stats, _ = setup
    ex = LatentExplorer(tiny_lm, sae, stats)
    lat = int(stats.max_act_N.argmax())
    ex.show(lat)
    ex.steer_prompt.value = "<b>hi</b> the"
    ex.steer_tokens.value = 8
    ex.steer_strength.value = 0.0  # adding nothing: the steered text is the unedited one
    plain, same = ex.run_steering()
    assert plain == same and len(plain) > 0
    ex.steer_strength.value = 200.0
    ex.steer_btn.click()
    out = ex.steer_out.value
    assert "&lt;b&gt;hi&lt;/b&gt;" in out and "<b>hi</b>" not in out  # the prompt is escaped
    assert f"latent {lat} +" in out and "unedited" in out
    _, steered = ex.run_steering()
    assert steered != plain  # a strong push on the residual stream changes the greedy continuation
    ex.steer_mode.value = "clamp"
    ex.run_steering()
    assert "clamped to" in ex.steer_out.value
    ex.steer_prompt.value = "  "
    assert ex.run_steering() == ("", "") and "type a prompt" in ex.steer_out.value


def test_static_export_is_self_contained(setup, tiny_lm, tmp_path):
    sae, stats, _ = setup
    lat = int(stats.density_N.argmax())
    path = D.export_latent_html(tiny_lm, sae, stats, lat, tmp_path / "latent.html", explanation="<i>x</i>")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and f"Latent {lat}" in text
    assert "plotly" in text and "<script src=" not in text  # plotly.js inlined, no external file
    assert "&lt;i&gt;x&lt;/i&gt;" in text
    with pytest.raises(ValueError, match="out of range"):
        D.latent_page_html(tiny_lm, sae, stats, stats.n_latents)
