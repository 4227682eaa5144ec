"""`saelab push`: the folder it uploads loads in SAE Lens and in saelab, the card says what the SAE is, and the
upload is one huggingface_hub call; a missing token or an unreachable Hub is one line and changes nothing local."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saelab.sae.config import SAEConfig
from saelab.sae.formats import load_sae
from saelab.sae.formats.push import push, stage_folder
from saelab.sae.model import SAE

D, N = 16, 64
METRICS = {"final": {"nmse": 0.1567, "l0": 31.8, "dead_train_frac": 0.0123, "dead_eval_frac": 0.045, "tokens": 16000},
           "validation": {"nmse": 0.1601}}


def run_folder(tmp_path: Path, normalize: str = "none") -> tuple[Path, SAE]:
    """A run folder as `saelab train --out` leaves it: sae/ (with the data record) and report/metrics.json."""
    sae = SAE(SAEConfig(d_in=D, n_latents=N, k=4, normalize=normalize, model="smollm2-135m", site="resid_post",
                        layer=22), seed=1)
    with torch.no_grad():
        sae.b_pre.normal_()
        sae.tokens_seen.fill_(123456)
    sae.data_record = {"corpus": "english-mix", "split": "train", "context": {"ctx_len": 64}, "exclude_first": 1,
                       "outlier_factor": 10.0}
    run = tmp_path / "run"
    sae.save(run / "sae")
    (run / "report").mkdir(parents=True)
    (run / "report" / "metrics.json").write_text(json.dumps(METRICS))
    return run, sae


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("normalize", ["none", "per_token_unit_norm"])
def test_the_pushed_folder_loads_in_saelens_and_saelab_and_its_card_says_what_the_sae_is(tmp_path, normalize):
    from tests.test_formats import need

    sl = need("sae_lens")
    run, ours = run_folder(tmp_path, normalize)
    out = stage_folder(run, tmp_path / "staged", "someone/smollm2-topk-l22")
    sid = "blocks.22.hook_resid_post"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", sid]
    x = torch.randn(128, D) * 3 + 1
    theirs = sl.SAE.load_from_disk(str(out / sid))
    with torch.no_grad():
        # SAE Lens's layer_norm has its eps inside; saelab's per-token unit norm none: equal up to that eps
        torch.testing.assert_close(theirs(x), ours.reconstruct(x), atol=1e-5 if normalize == "none" else 2e-3,
                                   rtol=1e-4)
    back = load_sae(out / sid)  # saelab's own folder inside: exact, with the data record
    assert back.cfg == ours.cfg and back.data_record == ours.data_record
    for name, t in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name
    card = (out / "README.md").read_text()
    for text in ("library_name: saelens", "base_model: HuggingFaceTB/SmolLM2-135M-Instruct", "resid_post of block 22",
                 sid, "| family | TopK |", "| latents n | 64 |", "k = 4", "123,456", "english-mix",
                 "| normalized MSE | 0.1567 | MSE / MSE of always predicting the mean", "| L0 | 31.80 |",
                 "0.1601", f'load_sae("hf://someone/smollm2-topk-l22/{sid}")',
                 f'SAE.from_pretrained("someone/smollm2-topk-l22", "{sid}")', "CC BY-SA 4.0", "ParlSpeech"):
        assert text in card, text
    assert json.loads((out / sid / "saelab" / "metrics.json").read_text()) == METRICS


class FakeApi:
    """huggingface_hub.HfApi's two calls push makes, recorded (and the folder's files seen at upload time)."""

    def __init__(self, fail: Exception | None = None):
        self.calls, self.fail = [], fail

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        if self.fail:
            raise self.fail

    def upload_folder(self, folder_path, repo_id, **kwargs):
        self.calls.append(("upload_folder", repo_id, sorted(str(p.relative_to(folder_path))
                                                            for p in Path(folder_path).rglob("*") if p.is_file())))
        return "https://huggingface.co/someone/x/commit/abc"


def test_push_uploads_one_folder_in_one_call_and_changes_nothing_local(tmp_path, monkeypatch):
    run, _ = run_folder(tmp_path)
    before = digest(run)
    api = FakeApi()
    url = push(run, "someone/x", private=True, token="hf_test", api=api)
    assert url.endswith("/commit/abc")
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][2]["private"] is True and api.calls[0][2]["exist_ok"] is True
    assert api.calls[1][2] == ["README.md", "blocks.22.hook_resid_post/cfg.json",
                               "blocks.22.hook_resid_post/sae_weights.safetensors",
                               "blocks.22.hook_resid_post/saelab/cfg.json",
                               "blocks.22.hook_resid_post/saelab/metrics.json",
                               "blocks.22.hook_resid_post/saelab/sae.safetensors"]
    assert digest(run) == before


def test_no_token_or_no_hub_is_one_clear_line_and_nothing_changes(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    run, _ = run_folder(tmp_path)
    before = digest(run)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ValueError, match=r"no Hugging Face token: run `hf auth login` or set HF_TOKEN"):
        push(run, "someone/x")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the real HfApi, refused before any request
    with pytest.raises(ValueError, match=r"could not upload to someone/x \(.*\).*nothing local was changed"):
        push(run, "someone/x", token="hf_test")
    with pytest.raises(ValueError, match="could not upload.*ConnectionError: unreachable"):
        push(run, "someone/x", token="hf_test", api=FakeApi(ConnectionError("unreachable")))
    assert digest(run) == before
    with pytest.raises(ValueError, match="owner/name"):
        push(run, "just-a-name", token="hf_test")


def test_cli_push_dry_run_and_missing_token(tmp_path):
    run, _ = run_folder(tmp_path)
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1")
    dry = subprocess.run([sys.executable, "-m", "saelab", "push", "--sae", str(run), "--repo", "someone/x",
                          "--dry-run", str(tmp_path / "staged")], capture_output=True, text=True, env=env, timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert (tmp_path / "staged" / "README.md").exists() and "nothing was uploaded" in dry.stdout
    real = subprocess.run([sys.executable, "-m", "saelab", "push", "--sae", str(run), "--repo", "someone/x"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert real.returncode == 2 and "no Hugging Face token" in real.stderr and "Traceback" not in real.stderr
    assert len([line for line in real.stderr.splitlines() if line.startswith("saelab: error")]) == 1
