"""Run the whole pipeline on whatever device runtime.pick_device() finds (a GPU when there is one) and print figures.

    python benchmarks/device_pipeline.py [OUT_DIR]

Checks that the course's code, written for the CPU, also runs end to end on CUDA (or MPS), and how long each stage
takes there. Prints the device, each stage's seconds and the yardstick of base, SFT and PPO, then the JSON summary.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import torch

from rlhf_lessons.pipeline import run_pipeline
from rlhf_lessons.runtime import pick_device


def main() -> None:
    device = pick_device()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else str(device)
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    t0 = time.time()
    summary = run_pipeline(out=out)
    print(f"pipeline on {name}: {time.time() - t0:.1f} s; stage seconds {summary['stage_seconds']}")
    for model in ("base", "sft", "ppo"):
        print(model, summary[model])
    print("win rate PPO vs SFT", summary["win_rate_ppo_vs_sft"], "| reward model", summary["reward_model"])
    print(json.dumps({"device": name, **summary}))


if __name__ == "__main__":
    main()
