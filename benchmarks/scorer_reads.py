"""What scorer actors read from storage per round on a stored pool with Ray Train workers (#28).

Writes the digits pool as a stored pool (`autoal-dist pool write`) under a temporary
directory, then runs `autoal-dist run --dataset pool:DIR --ray --workers W --shards K
--rounds R` in this process, and after each round's forward pass records every scorer
actor's process id and the row groups / bytes its copy of the pool fetched from storage
(`ScorerActor.stats()`: counters of its process, so a new pid starts from zero). The bytes
are the sample column's chunks as stored (what an object store would send). The journal's
sha256 and the final accuracy are printed too: the selections do not depend on where or for
how long the actors live.

    python benchmarks/scorer_reads.py --label after    # --workers 1 --shards 1 --rounds 3
    python benchmarks/scorer_reads.py --quick          # no results file

Each labelled run is a section of results/scorer_reads.md (a new label is appended; the
`before` section was measured on the commit before #28's, whose actors were restarted every
round with `--workers > 0`).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (
    RESULTS,
    HelpFormatter,
    command,
    journal_digest,
    load_average,
    machine,
    write_result,
)


def measure(pool: Path, out: Path, workers: int, shards: int, rounds: int) -> list[dict]:
    from autoal_dist.cli import main
    from autoal_dist.scoring.ray_scorer import RayScorer

    rows: list[dict[str, Any]] = []
    seen: dict[int, tuple[int, int]] = {}  # pid -> (groups, bytes) at its last snapshot
    prepare = RayScorer.prepare

    def recorded(self: RayScorer, *args: Any, **kw: Any) -> Any:
        got = prepare(self, *args, **kw)
        for k, st in enumerate(self.stats()):
            g0, b0 = seen.get(st["pid"], (0, 0))
            rows.append({"round": len(rows) // len(self.actors), "actor": k, "pid": st["pid"],
                         "new_process": st["pid"] not in seen,
                         "groups": st["groups_read"] - g0, "bytes": st["bytes_read"] - b0,
                         "kept_bytes": st["kept_bytes"]})
            seen[st["pid"]] = (st["groups_read"], st["bytes_read"])
        return got

    RayScorer.prepare = recorded  # type: ignore[method-assign]
    try:
        code = main(["run", "--dataset", f"pool:{pool}", "--ray", "--workers", str(workers),
                     "--shards", str(shards), "--rounds", str(rounds), "--epochs", "2",
                     "--out", str(out), "--quiet"])
    finally:
        RayScorer.prepare = prepare  # type: ignore[method-assign]
    if code != 0:
        raise SystemExit(f"the campaign failed (exit {code})")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--label", default="", help="a word for the results table (before/after)")
    ap.add_argument("--quick", action="store_true", help="print only, no results file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scorer-reads-") as tmp:
        pool, out = Path(tmp, "pool"), Path(tmp, "run")
        subprocess.run([sys.executable, "-m", "autoal_dist", "pool", "write", "--dataset",
                        "digits", "--to", str(pool)], check=True, capture_output=True)
        stored = sum(p.stat().st_size for p in pool.rglob("*.parquet"))
        before = load_average()
        rows = measure(pool, out, args.workers, args.shards, args.rounds)
        import pyarrow.parquet as pq

        metrics = pq.read_table(out / "metrics.parquet").to_pylist()
        digest, accuracy = journal_digest(out)[:16], metrics[-1]["accuracy"]
    lines = ["| round | actor | pid | new process | row groups read | bytes read | kept bytes |",
             "|---:|---:|---:|---|---:|---:|---:|"]
    lines += [f"| {r['round']} | {r['actor']} | {r['pid']} | {'yes' if r['new_process'] else 'no'} "
              f"| {r['groups']} | {r['bytes']:,} | {r['kept_bytes']:,} |" for r in rows]
    total = sum(r["bytes"] for r in rows)
    text = (f"## {args.label or 'run'}\n\nCommand: {command()}; load average (1/5/15 min) "
            f"before: {before}, after: {load_average()}\n\n--workers {args.workers} --shards "
            f"{args.shards} --rounds {args.rounds}; pool files {stored:,} bytes\n\n"
            + "\n".join(lines) + f"\n\nbytes read in all: {total:,} over {len(rows)} actor-"
            f"rounds; journal sha256 {digest}; final accuracy {accuracy:.4f}\n")
    print(text)
    if not args.quick:
        path = RESULTS / "scorer_reads.md"
        head = ("# Scorer actors' reads per round, stored digits pool (#28)\n\n"
                f"{machine()}\n" if not path.exists() or args.label in ("", "before")
                else path.read_text(encoding="utf-8") + "\n")
        print(write_result(path.name, head + text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
