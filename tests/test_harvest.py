"""Harvesting: early stop, cache format, resume after a kill, refusal of mismatched caches, loaders."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from saelab.acts.cache import ActivationCache, CacheError, ShuffledCacheLoader
from saelab.acts.harvest import HarvestConfig, harvest
from saelab.acts.stream import StreamShuffleBuffer, stream_activations
from saelab.lm.sites import find_blocks, run_to_site

TINY = HarvestConfig(model="tiny-gpt2", corpus="synthetic", layer=2, max_tokens=63 * 96, batch_size=16,
                     shard_contexts=16, store_dtype="float32", outlier_factor=None)


def _all(cache, key="acts"):
    return torch.cat([cache.read_shard(i, (key,))[key] for i in range(len(cache.shard_sizes))])


def _rows_sorted(t: torch.Tensor) -> torch.Tensor:
    """Rows in lexicographic order over all columns: equal multisets give equal tensors, whatever the
    order of ties on any one column (a sort by one column made this test depend on the CPU)."""
    a = t.numpy()
    return t[torch.from_numpy(np.lexsort(a.T[::-1]).copy())]


def test_run_to_site_matches_hidden_states_and_stops_early(tiny_lm):
    ids = torch.randint(1, 200, (2, 16))
    full = tiny_lm.model(input_ids=ids, output_hidden_states=True)
    for layer in (0, 2, 3):
        got = run_to_site(tiny_lm, ids, "resid_post", layer)
        if layer < 3:  # the last hidden state has the final norm applied by HF
            torch.testing.assert_close(got, full.hidden_states[layer + 1])
    calls = []
    blocks = find_blocks(tiny_lm.model)
    handles = [b.register_forward_hook(lambda m, i, o, j=j: calls.append(j)) for j, b in enumerate(blocks)]
    head = tiny_lm.model.lm_head.register_forward_hook(lambda *a: calls.append("head"))
    run_to_site(tiny_lm, ids, "mlp_out", 1)
    for h in handles + [head]:
        h.remove()
    assert calls == [0]  # block 1's MLP ran inside block 1, whose output hook never fired; no head
    assert run_to_site(tiny_lm, ids, "attn_out", 1).shape == (2, 16, 64)


def test_harvest_cache_contents_and_manifest(tmp_path, tiny_lm):
    cache = harvest(TINY, tmp_path / "c", lm=tiny_lm, progress=False)
    m = cache.manifest
    assert m["model"] == "tiny-gpt2" and m["layer"] == 2 and m["site"] == "resid_post"
    assert cache.n_tokens == 96 * 63 and len(cache.shard_sizes) == 6
    pos = _all(cache, "pos")
    assert int(pos.min()) == 1  # position 0 excluded
    # Stored activations equal a direct forward pass on the stored tokens' contexts.
    from saelab.acts.corpus import build_contexts, load_corpus

    ctx = build_contexts(load_corpus("synthetic"), tiny_lm.tokenizer, TINY.context, max_contexts=96)
    direct = run_to_site(tiny_lm, torch.from_numpy(ctx.tokens_NT[:4]).long(), "resid_post", 2)[:, 1:]
    torch.testing.assert_close(_all(cache)[: 4 * 63], direct.reshape(-1, 64))
    assert torch.equal(_all(cache, "tokens")[:63], torch.from_numpy(ctx.tokens_NT[0, 1:]).int())


def test_opening_a_cache_verifies_and_names_the_broken_shard(tmp_path, tiny_lm):
    harvest(TINY, tmp_path / "c", lm=tiny_lm, progress=False)
    shard = tmp_path / "c" / "shard-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    ActivationCache(tmp_path / "c")  # size-only check passes a same-size flip...
    with pytest.raises(CacheError, match="shard-00003"):
        ActivationCache(tmp_path / "c", verify="sha256")  # ...the checksum does not
    shard.write_bytes(bytes(data[:100]))
    with pytest.raises(CacheError, match="shard-00003.safetensors is corrupt"):
        ActivationCache(tmp_path / "c")


def test_a_cache_for_another_site_or_model_is_refused(tmp_path, tiny_lm):
    harvest(TINY, tmp_path / "c", lm=tiny_lm, progress=False)
    with pytest.raises(CacheError, match="layer: cache has 2, asked 1"):
        harvest(replace(TINY, layer=1), tmp_path / "c", lm=tiny_lm, progress=False)
    with pytest.raises(CacheError, match="built for model='tiny-gpt2', not 'gpt2'"):
        ActivationCache(tmp_path / "c", expect={"model": "gpt2"})


def test_killed_harvest_resumes_without_lost_or_duplicated_tokens(tmp_path, tiny_lm):
    cfg = replace(TINY, max_tokens=63 * 1200, shard_contexts=8, batch_size=8)
    ref = harvest(cfg, tmp_path / "ref", lm=tiny_lm, progress=False)
    out = tmp_path / "killed"
    code = (f"from saelab.acts.harvest import *; from saelab.acts.corpus import ContextConfig; "
            f"harvest(HarvestConfig(model='tiny-gpt2', corpus='synthetic', layer=2, max_tokens={63 * 1200}, "
            f"batch_size=8, shard_contexts=8, store_dtype='float32', outlier_factor=None), '{out}', progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shard-*.safetensors"))) < 20:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the harvest finished before the kill; nothing was tested"
    assert 0 < len(list(out.glob("shard-*.safetensors"))) < 150
    resumed = harvest(cfg, out, lm=tiny_lm, progress=False)
    assert resumed.n_tokens == ref.n_tokens
    for key in ("tokens", "ctx", "pos"):
        assert torch.equal(_all(resumed, key), _all(ref, key)), key
    # the killed process may have used another thread count: matmul sums can round differently
    torch.testing.assert_close(_all(resumed), _all(ref), atol=2e-3, rtol=2e-3)
    assert not list(out.glob(".*tmp"))


def test_shuffled_loader_covers_each_token_once_and_is_deterministic(tmp_path, tiny_lm):
    cache = harvest(TINY, tmp_path / "c", lm=tiny_lm, progress=False)
    full = _all(cache)
    loader = ShuffledCacheLoader(cache, batch_size=63, seed=1, shards_in_memory=2)
    batches = list(loader.iter_epoch(0))
    got = torch.cat(batches)
    assert len(batches) == loader.batches_per_epoch() == 96
    assert not torch.equal(got, full)  # shuffled
    assert torch.equal(_rows_sorted(got), _rows_sorted(full))  # the same multiset of rows
    torch.testing.assert_close(torch.cat(list(loader.iter_epoch(0, start_batch=40))), got[40 * 63:])
    assert not torch.equal(torch.cat(list(loader.iter_epoch(1))), got)
    halves = [torch.cat(list(ShuffledCacheLoader(cache, 126, seed=1, shards_in_memory=2, rank=r, world=2)
                             .iter_epoch(0))) for r in (0, 1)]
    assert halves[0].shape == halves[1].shape == (48 * 63, 64)


def test_stream_and_shuffle_buffer(tiny_lm):
    cfg = replace(TINY, max_tokens=63 * 32)
    blocks = list(stream_activations(cfg, lm=tiny_lm))
    total = torch.cat(blocks)
    assert total.shape == (32 * 63, 64)
    out = torch.cat(list(StreamShuffleBuffer(iter(blocks), batch_size=100, capacity=500)))
    assert len(out) == (len(total) // 100) * 100 or len(out) >= len(total) - 100
    assert not torch.equal(out[:100], total[:100])


def _stream_ids(cfg, lm, rank=None, world=None):
    parts = list(stream_activations(cfg, lm=lm, rank=rank, world=world, with_ids=True))
    return torch.cat([a for a, _ in parts]), torch.cat([i for _, i in parts])


def test_stream_drops_outliers_like_the_cache_and_ranks_split_it(tmp_path, tiny_lm):
    # an outlier rule low enough that the tiny model has outliers; shards that are not a multiple of the batch
    cfg = replace(TINY, max_tokens=63 * 48, outlier_factor=1.15, shard_contexts=24)
    cache = harvest(cfg, tmp_path / "c", lm=tiny_lm, progress=False)
    assert cache.manifest["n_dropped_outliers"] > 0
    acts, ids = _stream_ids(cfg, tiny_lm)
    cached_ids = _all(cache, "ctx").long() * cfg.context.ctx_len + _all(cache, "pos").long()
    assert torch.equal(ids, cached_ids)  # the same tokens, in the same order: separators never stream
    torch.testing.assert_close(acts, _all(cache).float())
    halves = [_stream_ids(cfg, tiny_lm, rank=r, world=2)[1] for r in (0, 1)]
    assert not set(halves[0].tolist()) & set(halves[1].tolist())
    assert sorted(torch.cat(halves).tolist()) == sorted(ids.tolist())


def _torchrun_two(tmp_path, port: int, body: str) -> None:
    """Run `body` in two gloo processes under torchrun (one thread each); fail with their stderr."""
    script = tmp_path / "job.py"
    script.write_text("import torch.distributed as dist\ndist.init_process_group('gloo')\n" + body
                      + "dist.destroy_process_group()\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        str(port), str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_torchrun_ranks_stream_disjoint_tokens_whose_union_is_one_process(tmp_path, tiny_lm):
    cfg = replace(TINY, max_tokens=63 * 48, outlier_factor=1.15)
    _, one = _stream_ids(cfg, tiny_lm)
    _torchrun_two(tmp_path, 29534,
                  "import torch\n"
                  "from saelab.acts.harvest import HarvestConfig\n"
                  "from saelab.acts.stream import stream_activations\n"
                  f"cfg = HarvestConfig(model='tiny-gpt2', corpus='synthetic', layer=2, max_tokens={63 * 48},"
                  " batch_size=16, outlier_factor=1.15)\n"
                  "ids = torch.cat([i for _, i in stream_activations(cfg, with_ids=True)])\n"
                  f"torch.save(ids, '{tmp_path}/rank%d.pt' % dist.get_rank())\n")
    ranks = [set(torch.load(tmp_path / f"rank{i}.pt", weights_only=True).tolist()) for i in (0, 1)]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]
    assert ranks[0] | ranks[1] == set(one.tolist())


@pytest.mark.slow
def test_torchrun_two_ranks_harvest_the_same_cache(tmp_path, tiny_lm):
    ref = harvest(TINY, tmp_path / "ref", lm=tiny_lm, progress=False)
    _torchrun_two(tmp_path, 29531,
                  "from saelab.acts.harvest import HarvestConfig, harvest\n"
                  f"harvest(HarvestConfig(model='tiny-gpt2', corpus='synthetic', layer=2, max_tokens={63 * 96},"
                  " batch_size=16, shard_contexts=16, store_dtype='float32', outlier_factor=None),"
                  f" '{tmp_path / 'dist'}', progress=False)\n")
    dist_cache = ActivationCache(tmp_path / "dist", verify="sha256")
    assert dist_cache.n_tokens == ref.n_tokens
    assert torch.equal(_all(dist_cache, "tokens"), _all(ref, "tokens"))
    # the ranks ran with one thread each: matmul sums may round differently from this process's
    torch.testing.assert_close(_all(dist_cache), _all(ref), atol=2e-3, rtol=2e-3)
    assert json.loads(Path(tmp_path / "dist" / "manifest.json").read_text())["complete"]


def test_weights_hash_is_the_recorded_digest_and_notices_a_changed_weight():
    """The digest caches record (blake2b over fp32 bytes) is unchanged by the faster hashing; a changed
    parameter is noticed."""
    import hashlib

    from saelab.acts.harvest import weights_hash
    from saelab.lm.models import load_lm

    lm = load_lm("tiny-gpt2")
    h = hashlib.blake2b(digest_size=12)
    for name, t in sorted(lm.model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    assert weights_hash(lm.model) == h.hexdigest() == weights_hash(lm.model)
    with torch.no_grad():
        next(lm.model.parameters()).add_(1.0)
    assert weights_hash(lm.model) != h.hexdigest()


def _counting(monkeypatch, lm) -> list:
    """Count the LM's forward passes (each batch of a harvest is one call of the model)."""
    calls, forward = [], lm.model.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(lm.model, "forward", counted)
    return calls


def test_several_layers_and_sites_from_one_pass_equal_single_site_harvests(tmp_path, tiny_lm, monkeypatch):
    from saelab.acts.harvest import harvest_sites, targets

    cfg = replace(TINY, layers="0,1,3", sites="resid_post,mlp_out", outlier_factor=1.2, max_tokens=63 * 40,
                  shard_contexts=16, batch_size=8)
    calls = _counting(monkeypatch, tiny_lm)
    caches = harvest_sites(cfg, tmp_path / "many", lm=tiny_lm, progress=False)
    batches = sum(-(-min(16, 40 - c0) // 8) for c0 in range(0, 40, 16))
    assert len(calls) == batches  # the LM ran once per batch for all six sites
    assert sorted(caches) == sorted((s, layer) for s in ("resid_post", "mlp_out") for layer in (0, 1, 3))
    assert (tmp_path / "many" / "mlp_out3" / "manifest.json").exists()
    dropped = set()
    for one in targets(cfg):
        calls.clear()
        single = harvest(one, tmp_path / f"single-{one.site}{one.layer}", lm=tiny_lm, progress=False)
        assert len(calls) == batches
        many = caches[(one.site, one.layer)]
        for key in ("acts", "tokens", "ctx", "pos", "doc"):
            assert torch.equal(_all(many, key), _all(single, key)), (one.site, one.layer, key)
        assert {k: v for k, v in many.manifest.items() if k not in ("shards", "created")} == \
            {k: v for k, v in single.manifest.items() if k not in ("shards", "created")}
        dropped.add(many.manifest["n_dropped_outliers"])
    assert len(dropped) > 1 and min(dropped) > 0  # the outlier rule ran per site: different tokens at each
    # resumable per site: a lost shard of one site reruns only that shard's batches, and comes back the same
    before = _all(caches[("mlp_out", 1)])
    (tmp_path / "many" / "mlp_out1" / "shard-00001.safetensors").unlink()
    (tmp_path / "many" / "mlp_out1" / "manifest.json").unlink()
    calls.clear()
    again = harvest_sites(cfg, tmp_path / "many", lm=tiny_lm, progress=False)
    assert len(calls) == 2 and torch.equal(_all(again[("mlp_out", 1)]), before)
    with pytest.raises(ValueError, match="several sites.*harvest_sites"):
        harvest(cfg, tmp_path / "x", lm=tiny_lm, progress=False)
    with pytest.raises(ValueError, match="unknown site"):
        HarvestConfig(sites="resid_post,resid_pre")


def test_default_folders_of_a_several_site_harvest_are_the_single_site_ones(tmp_path, tiny_lm, monkeypatch):
    from saelab.acts.harvest import default_cache_dir, harvest_key, harvest_sites

    monkeypatch.setenv("SAELAB_HOME", str(tmp_path / "home"))
    cfg = replace(TINY, layers="1,2", max_tokens=63 * 8)
    caches = harvest_sites(cfg, lm=tiny_lm, progress=False)
    single = replace(TINY, max_tokens=63 * 8)
    assert caches[("resid_post", 2)].folder == default_cache_dir(single, 2)  # a later single-site run reuses it
    assert harvest_key(cfg) == harvest_key(single)  # `layers` is in no cache's key
