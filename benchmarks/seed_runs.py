"""One seed per process: the driver that benchmarks/outcomes.py and benchmarks/round_two_outcomes.py share.

Each seed runs as `python SCRIPT --seeds N --threads T [worker args] --one-seed-json FILE` (the script's worker mode
writes that seed's summary to FILE), `jobs` seeds at a time, each with its own log beside the summaries.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def run_seeds(script: str | Path, seeds: list[int], jobs: int, threads: int, out: Path, name: str,
              worker_args: tuple[str, ...] = (), reuse: bool = False) -> dict[int, dict]:
    """{seed: summary} of every seed, run in worker processes of `script`; summaries and logs go to
    out/<name><seed>.json and .log. reuse: read a summary already in `out` instead of running its seed again.
    Exits with the log's name when a seed fails."""
    runs: dict[int, dict] = {}
    t0 = time.time()
    pending = list(seeds)
    while pending:
        batch, pending = pending[:jobs], pending[jobs:]
        procs = []
        for seed in batch:
            target, log = out / f"{name}{seed}.json", out / f"{name}{seed}.log"
            if reuse and target.exists():  # a seed run before into this folder: read, not run again
                runs[seed] = json.loads(target.read_text())
                print(f"seed {seed}: reusing {target}", file=sys.stderr)
                continue
            cmd = [sys.executable, str(script), "--seeds", str(seed), "--threads", str(threads), *worker_args,
                   "--one-seed-json", str(target)]
            print(f"seed {seed}: running ({threads} thread(s)), log in {log}", file=sys.stderr)
            procs.append((seed, target, log, subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)))
        for seed, target, log, proc in procs:
            if proc.wait() != 0:
                sys.exit(f"seed {seed} failed: see {log}")
            runs[seed] = json.loads(target.read_text())
            print(f"seed {seed}: done ({time.time() - t0:.0f} s so far)", file=sys.stderr)
    return runs


def add_seed_arguments(parser) -> None:
    """The options every seeds benchmark takes: --seeds, --jobs, --threads (and the worker's hidden one)."""
    import argparse

    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, each in its own process")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per seed (default: cores / jobs)")
    parser.add_argument("--one-seed-json", default=None, help=argparse.SUPPRESS)  # a worker of --jobs


def seeds_and_threads(args) -> tuple[list[int], int]:
    """The seeds asked for, and the threads each seed's process uses."""
    import os

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    return seeds, args.threads or max(1, (os.cpu_count() or 2) // max(args.jobs, 1))


def work_one_seed(args, threads: int, run) -> None:
    """Worker mode: run(seed) for the one seed given, its summary as JSON to --one-seed-json."""
    import torch

    torch.set_num_threads(threads)
    seed = seeds_and_threads(args)[0][0]
    Path(args.one_seed_json).write_text(json.dumps(run(seed), default=str))


def command_line(script: str, seeds: list[int], jobs: int) -> str:
    """How the table was made, as its first line says: `python benchmarks/SCRIPT --seeds ... [--jobs N]`."""
    return f"python benchmarks/{script} --seeds " + ",".join(map(str, seeds)) + (f" --jobs {jobs}" if jobs > 1 else "")


def write_results(name: str, table: str, runs: dict[int, dict], out: Path) -> None:
    """Print the table; write it to benchmarks/NAME.md and the figures to NAME.json, with `out` (a local path) in
    the figures replaced by <out>, so that nothing local is committed."""
    here = Path(__file__).resolve().parent
    print(table)
    (here / f"{name}.md").write_text(table)
    figures = json.dumps({str(s): runs[s] for s in sorted(runs)}, indent=1, default=str)
    (here / f"{name}.json").write_text(figures.replace(str(out), "<out>") + "\n")
