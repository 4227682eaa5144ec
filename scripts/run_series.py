"""Run the notebook series in order, as a teacher preparing a class would, and time each notebook.

    .venv/bin/python scripts/run_series.py                  # full size, reference solutions, into runs/series
    .venv/bin/python scripts/run_series.py --fast --only 00,02
    .venv/bin/python scripts/run_series.py --learner        # no solutions: each notebook stops at its first exercise

Writes each executed notebook and an HTML copy to --out (not committed), prints every notebook's wall time next
to the time the notebook itself states, and writes times.json. Caches (activations, zoo SAEs, scaling grids) live
in $SAELAB_HOME as usual, so a second run is much faster than the first (notebooks state both times).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stated_time(nb) -> str:
    """The notebook's own **Time** line, shortened."""
    text = nb.cells[0].source if nb.cells else ""
    m = re.search(r"\*\*Time\*\*[^:]*:\s*(.+?)(?:\n\n|\n#|$)", text, flags=re.S)
    return " ".join(m.group(1).split())[:110] if m else "(not stated)"


def run_one(path: Path, out: Path, timeout: int, learner: bool) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from saelab.teach.handout import self_contained_html

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1][:300]
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    executed = out / path.name
    tmp = executed.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(executed)
    page = executed.with_suffix(".html")  # self-contained: formulas as MathML, plotly.js inlined (no network)
    page.with_suffix(".html.tmp").write_text(self_contained_html(nb), encoding="utf-8")
    page.with_suffix(".html.tmp").replace(page)
    stopped_at_exercise = bool(error and "not written yet" in error)
    ok = error is None or (learner and stopped_at_exercise)
    return {"notebook": path.name, "seconds": round(seconds, 1), "ok": ok, "error": error, "stated": stated_time(nb)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "series"), help="folder for executed notebooks and HTML")
    p.add_argument("--fast", action="store_true", help="SAELAB_FAST=1: the small sizes CI uses")
    p.add_argument("--learner", action="store_true", help="run without the reference solutions")
    p.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 00,03")
    p.add_argument("--timeout", type=int, default=7200, help="seconds allowed per cell")
    p.add_argument("--keep-going", action="store_true", help="run the next notebooks after a failure")
    args = p.parse_args(argv)

    os.environ["SAELAB_FAST"] = "1" if args.fast else ""
    if args.learner:
        os.environ.pop("SAELAB_SOLUTIONS", None)
    else:
        os.environ["SAELAB_SOLUTIONS"] = "1"
    wanted = {s.strip().zfill(2) for s in args.only.split(",") if s.strip()}
    paths = [q for q in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) if not wanted or q.name[:2] in wanted]
    if not paths:
        print(f"no notebook matches --only {args.only!r}", file=sys.stderr)
        return 2
    out = Path(args.out)
    size = "fast" if args.fast else "full size"
    print(f"running {len(paths)} notebooks at {size}{' as a learner' if args.learner else ' with the solutions'}; "
          f"executed copies and HTML in {out}", flush=True)
    results, total = [], 0.0
    for path in paths:
        print(f"  {path.name} ...", end="", flush=True)
        r = run_one(path, out, args.timeout, args.learner)
        total += r["seconds"]
        results.append(r)
        status = "FAILED: " + str(r["error"]) if not r["ok"] else f"stopped: {r['error']}" if r["error"] else "ok"
        print(f" {r['seconds'] / 60:5.1f} min  {status}", flush=True)
        if not r["ok"] and not args.keep_going:
            break
    print(f"\n{'notebook':40s} {'measured':>9s}   stated in the notebook")
    for r in results:
        print(f"{r['notebook']:40s} {r['seconds'] / 60:7.1f} m   {r['stated']}")
    print(f"{'total':40s} {total / 60:7.1f} m")
    summary = {"size": size, "learner": args.learner, "total_seconds": round(total, 1), "notebooks": results,
               "saelab_home": "$SAELAB_HOME" if os.environ.get("SAELAB_HOME") else "~/.cache/saelab"}
    (out / "times.json").write_text(json.dumps(summary, indent=1))
    return 0 if all(r["ok"] for r in results) and len(results) == len(paths) else 1


if __name__ == "__main__":
    sys.exit(main())
