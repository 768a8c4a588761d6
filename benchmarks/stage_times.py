"""Time every stage of the course on this machine and print its figures.

    python benchmarks/stage_times.py            # sft, label, reward, ppo, evaluate: each a fresh `rlhf-lessons` call
    python benchmarks/stage_times.py sft reward # only some stages

Every stage runs as the command a learner would type, in one fresh temporary workspace, in order (so later stages use
the earlier ones' checkpoints). Targets from the issues: sft <= 60 s, reward <= 45 s, ppo <= 150 s, pipeline <= 6 min.
Prints one line per stage (wall seconds, the stage's own `seconds`, and its key figures), then a JSON summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

STAGES = {
    "sft": ["sft"],
    "label": ["label", "--n", "200"],
    "reward": ["reward"],
    "ppo": ["ppo"],
    "evaluate": ["evaluate", "--model", "ppo", "--against", "sft"],
    "pipeline": ["pipeline"],
}
TARGETS = {"sft": 60, "reward": 45, "ppo": 150, "pipeline": 360}
KEYS = ["train_loss", "eval_loss", "pairs", "agreement_with_gold", "heldout_accuracy", "noise_ceiling", "proxy_reward",
        "gold_mean", "kl", "win_rate", "harmful_compliance_rate", "over_refusal_rate"]


def main(names: list[str]) -> None:
    names = names or ["sft", "label", "reward", "ppo", "evaluate"]
    results = {}
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "RLHF_LESSONS_HOME": home}
        for name in names:
            start = time.time()
            proc = subprocess.run([sys.executable, "-m", "rlhf_lessons.cli", *STAGES[name]], env=env,
                                  capture_output=True, text=True)
            wall = time.time() - start
            if proc.returncode != 0:
                print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                sys.exit(1)
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
            figures = {k: summary[k] for k in KEYS if k in summary}
            target = f" (target {TARGETS[name]} s)" if name in TARGETS else ""
            print(f"{name:9s} wall {wall:6.1f} s  stage {summary.get('seconds', float('nan')):6.1f} s{target}  {figures}")
            results[name] = {"wall_seconds": round(wall, 1), **summary}
    print(json.dumps({"threads": os.environ.get("RLHF_LESSONS_THREADS", "default"), "stages": results}, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
