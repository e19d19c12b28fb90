"""Compare two versions of the server with `bench/run.py`, alternating them run after run.

    .venv/bin/python bench/ab.py --base HEAD~1 -- --phases create,pay,fulfil --half-duration 0 --duration 8
    .venv/bin/python bench/ab.py --base main --pairs 4 -- --phases get,list --half-duration 0

On a shared 2-core VM identical runs move by ±10 %, and the machine's speed drifts over minutes, so
one run of each version says little about a change of a few per cent. This runs the base revision
(checked out into a temporary git worktree) and the working tree in turns — base, work, work, base,
base, work, … — each a full `bench/run.py` with its own fresh server and database, and prints every
run's requests/s per operation, the means, and the difference with its spread over the pairs. The
arguments after `--` go to `bench/run.py` as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def _run(source: Path, run_args: list[str], out: Path) -> dict[str, float]:
    """One `bench/run.py` with the server's code taken from `source` (a `src` folder): req/s per op, the
    server's CPU µs a request at the peak as `<op> µs`, and the p95 in ms at half the peak rate as
    `<op> p95½`, where the run measured them."""
    env = dict(os.environ, PYTHONPATH=str(source))
    command = [sys.executable, str(BENCH_DIR / "run.py"), *run_args, "--json-out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"bench/run.py failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    results = json.loads(out.read_text())
    figures = {op: float(run["peak"]["rps"]) for op, run in results["ops"].items()}
    for op, run in results["ops"].items():
        if run["peak"].get("server_cpu_us"):
            figures[f"{op} µs"] = float(run["peak"]["server_cpu_us"])
        half = (run.get("half_rate") or {}).get("result")
        if half:
            figures[f"{op} p95½"] = float(half["p95_ms"])
    if results.get("hello"):
        figures["hello"] = float(results["hello"]["rps"])
    return figures


def _check_source(source: Path) -> None:
    """The server started with PYTHONPATH=`source` imports its package from there, not the venv's."""
    env = dict(os.environ, PYTHONPATH=str(source))
    found = subprocess.run(
        [sys.executable, "-c", "import stateset_server; print(stateset_server.__file__)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(found).resolve().is_relative_to(source.resolve()):
        raise SystemExit(f"PYTHONPATH={source} imports stateset_server from {found}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ours, run_args = (args[: args.index("--")], args[args.index("--") + 1 :]) if "--" in args else (args, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare the working tree with")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each version (default 3)")
    opts = parser.parse_args(ours)
    with tempfile.TemporaryDirectory(prefix="stateset-ab-") as tmp:
        worktree = Path(tmp) / "base"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", "-q", str(worktree), opts.base], check=True)
        try:
            sources = {"base": worktree / "src", "work": ROOT / "src"}
            for source in sources.values():
                _check_source(source)
            runs: dict[str, list[dict[str, float]]] = {"base": [], "work": []}
            for pair in range(opts.pairs):
                order = ("base", "work") if pair % 2 == 0 else ("work", "base")
                for label in order:
                    figures = _run(sources[label], run_args, Path(tmp) / f"{label}-{pair}.json")
                    runs[label].append(figures)
                    shown = "  ".join(f"{op} {value:,.{1 if 'p95' in op else 0}f}" for op, value in figures.items())
                    print(f"pair {pair + 1} {label:4s}: {shown}", flush=True)
        finally:
            subprocess.run([*git, "remove", "--force", str(worktree)], check=False)
    print()
    print("req/s; µs: the server's CPU a request at the peak; p95½: ms at half the peak rate")
    print(f"{'operation':12s} {'base':>10s} {'work':>10s} {'change':>8s}  per pair")
    for op in (op for op in runs["base"][0] if all(op in r for r in runs["base"] + runs["work"])):
        base = [r[op] for r in runs["base"]]
        work = [r[op] for r in runs["work"]]
        changes = [w / b - 1 for b, w in zip(base, work, strict=True)]
        print(
            f"{op:12s} {statistics.mean(base):10,.1f} {statistics.mean(work):10,.1f}"
            f" {statistics.mean(work) / statistics.mean(base) - 1:+8.1%}  " + " ".join(f"{c:+.1%}" for c in changes)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
