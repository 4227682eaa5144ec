"""`LatentExplorer`: an ipywidgets + plotly dashboard over an SAE's latents (Neuronpedia / sae_vis style).

    explorer = LatentExplorer(lm, sae, stats)     # stats: saelab.interp.latent_stats.latent_stats_for(...)
    explorer                                      # in a notebook cell: shows the dashboard

Every piece of content comes from the pure functions of `saelab.interp.dashboard`; callbacks read only
the explorer's own attributes (never notebook globals), so tests drive it by setting widget values.
"""

from __future__ import annotations

import html

import ipywidgets as W
import plotly.graph_objects as go

from saelab.interp import dashboard as D
from saelab.interp.latent_stats import LatentStats
from saelab.lm.models import LM
from saelab.sae.model import SAE


class LatentExplorer:
    """Pick a latent (index, prev/next, search by token or by a text's strongest latents) and see its
    density, activation histogram, logit effects, top and quantile examples, N2G explanation,
    live activations on your own text, and generation steered by it next to the unedited one."""

    def __init__(self, lm: LM, sae: SAE, stats: LatentStats, explanations: dict[int, str] | None = None,
                 start: int | None = None):
        self.lm, self.sae, self.stats = lm, sae, stats
        self.explanations = explanations or {}
        n = stats.n_latents
        first = start if start is not None else int(stats.density_N.argmax()) if n else 0
        self.index = W.IntText(value=first, description="latent", layout=W.Layout(width="180px"))
        self.prev_btn = W.Button(description="◀ prev", layout=W.Layout(width="80px"))
        self.next_btn = W.Button(description="next ▶", layout=W.Layout(width="80px"))
        self.search = W.Text(placeholder="token, e.g. ' Paris'", description="by token",
                             layout=W.Layout(width="260px"))
        self.search_text = W.Text(placeholder="a sentence", description="by text", layout=W.Layout(width="320px"))
        self.search_btn = W.Button(description="search")
        self.results = W.HTML()
        self.status = W.HTML()
        self.header = W.HTML()
        self.density_fig = go.FigureWidget(D.density_figure(stats, first))
        self.act_fig = go.FigureWidget(D.activation_figure(stats, first))
        self.logits = W.HTML()
        self.top = W.HTML()
        self.quantiles = W.HTML()
        self.try_text = W.Textarea(placeholder="Try your own text: the LM and the SAE run live",
                                   layout=W.Layout(width="100%", height="60px"))
        self.try_btn = W.Button(description="Run", button_style="primary")
        self.try_out = W.HTML(D.live_text_html([], None, 0))
        self._live = None  # (tokens, dense) of the last live text
        self.steer_prompt = W.Text(value="The capital of France is", description="prompt",
                                   layout=W.Layout(width="420px"))
        self.steer_mode = W.Dropdown(options=[("add", "add"), ("clamp", "clamp")], value="add", description="mode",
                                     layout=W.Layout(width="180px"))
        self.steer_strength = W.FloatText(value=2.0, description="x max act", layout=W.Layout(width="180px"))
        self.steer_tokens = W.BoundedIntText(value=20, min=1, max=200, description="tokens",
                                             layout=W.Layout(width="160px"))
        self.steer_btn = W.Button(description="Generate", button_style="primary")
        self.steer_out = W.HTML("<i>generate from a prompt with the selected latent steered</i>")
        self.prev_btn.on_click(lambda _: self.show(self.current - 1))
        self.next_btn.on_click(lambda _: self.show(self.current + 1))
        self.index.observe(self._on_index, names="value")
        self.search_btn.on_click(lambda _: self.run_search())
        self.try_btn.on_click(lambda _: self.run_text())
        self.steer_btn.on_click(lambda _: self.run_steering())
        tabs = W.Tab(children=[self.top, self.quantiles])
        tabs.set_title(0, "top examples")
        tabs.set_title(1, "quantile intervals")
        self.widget = W.VBox([
            W.HBox([self.index, self.prev_btn, self.next_btn, self.status]),
            W.HBox([self.search, self.search_text, self.search_btn]), self.results,
            self.header, W.HBox([self.act_fig, self.density_fig], layout=W.Layout(flex_flow="row wrap")),
            self.logits, tabs,
            W.HTML("<h4>Try your own text</h4>"), W.HBox([self.try_text, self.try_btn]), self.try_out,
            W.HTML("<h4>Steer generation with this latent</h4>"),
            W.HBox([self.steer_prompt, self.steer_mode, self.steer_strength, self.steer_tokens, self.steer_btn]),
            self.steer_out,
        ])
        self.current = first
        self.show(first)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ---- callbacks (explorer state only) ---------------------------------------------------------
    def _on_index(self, change) -> None:
        self.show(change["new"])

    def show(self, latent) -> bool:
        """Display `latent`; out-of-range or bad input leaves the current latent and says why."""
        try:
            latent = D.check_latent(self.stats, latent)
        except ValueError as e:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return False
        self.status.value = ""
        self.current = latent
        if self.index.value != latent:
            self.index.value = latent  # re-enters show() once with the same latent
            return True
        st, tok = self.stats, self.lm.tokenizer
        self.header.value = D.latent_header_html(st, latent, self.explanations.get(latent))
        act = D.activation_figure(st, latent)
        dens = D.density_figure(st, latent)
        with self.act_fig.batch_update():
            self.act_fig.data[0].x, self.act_fig.data[0].y = act.data[0].x, act.data[0].y
            self.act_fig.layout.title.text = act.layout.title.text
        with self.density_fig.batch_update():
            self.density_fig.layout.shapes = dens.layout.shapes
            self.density_fig.layout.annotations = dens.layout.annotations
        self.logits.value = D.logit_effects_html(D.logit_effects(self.lm, self.sae, latent))
        self.top.value = D.top_examples_html(st, latent, tok)
        self.quantiles.value = D.quantile_examples_html(st, latent, tok)
        if self._live is not None:
            self.try_out.value = D.live_text_html(*self._live, latent)
        return True

    def run_search(self) -> list[tuple[int, float]]:
        """Search latents by token (the 'by token' box) or by a text's strongest latents ('by text')."""
        if self.search_text.value.strip():
            toks, dense = D.encode_text(self.lm, self.sae, self.search_text.value)
            found, what = D.strongest_latents(dense), f"strongest latents of {self.search_text.value!r}"
        else:
            found, what = D.latents_for_token(self.stats, self.lm.tokenizer, self.search.value), \
                f"latents firing on tokens containing {self.search.value!r}"
        items = ", ".join(f"<b>{i}</b> ({v:.2f})" for i, v in found) or "none"
        self.results.value = f"<div>{html.escape(what)}: {items}</div>"
        if found:
            self.show(found[0][0])
        return found

    def run_text(self) -> None:
        """Run the LM and SAE on the 'try your own text' box and highlight the current latent."""
        toks, dense = D.encode_text(self.lm, self.sae, self.try_text.value)
        self._live = (toks, dense) if toks else None
        self.try_out.value = D.live_text_html(toks, dense, self.current)

    def run_steering(self) -> tuple[str, str]:
        """Greedy continuations of the steering prompt, unedited and with the current latent steered."""
        from saelab.interp.steering import generate

        prompt = self.steer_prompt.value
        if not prompt.strip():
            self.steer_out.value = "<i>type a prompt first</i>"
            return "", ""
        try:
            edit, label = D.steering_edit(self.stats, self.current, self.steer_mode.value, self.steer_strength.value)
        except ValueError as e:
            self.steer_out.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return "", ""
        n = int(self.steer_tokens.value)
        plain = generate(self.lm, self.sae, prompt, [], n)
        steered = generate(self.lm, self.sae, prompt, [edit], n)
        self.steer_out.value = D.steering_html(prompt, plain, steered, label)
        return plain, steered
