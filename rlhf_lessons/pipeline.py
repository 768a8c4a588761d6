"""The whole of RLHF, headless: base -> SFT -> simulated labels -> reward model -> PPO -> evaluation.

`rlhf-lessons pipeline` calls the same stage functions as the lessons and the stage commands, then measures base, SFT
and PPO with the yardstick on each evaluation split (heldout, unseen-phrasing, unseen-subject) with the same
requests and seed, and writes a short report (report.md with PNG plots) beside the checkpoints.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from matplotlib.figure import Figure

from .evaluate import SPLITS, YARDSTICK_KEYS, evaluate_splits
from .workspace import workspace_dir


def run_pipeline(population: str = "balanced", out: str | Path | None = None, seed: int = 0, sft_cfg=None,
                 reward_cfg=None, ppo_cfg=None, eval_n: int | None = None) -> dict:
    """Run every stage into `out` (default: the workspace, so later lessons find the checkpoints) and report.

    The configs default to each stage's defaults; tests pass tiny ones. Returns the JSON summary.
    """
    from .ppo import PPOConfig, run_ppo_stage
    from .reward import run_reward_stage
    from .sft import SFTConfig, train_sft

    from . import gold

    if population not in gold.POPULATIONS:  # fail before minutes of training, not after
        raise ValueError(f"unknown population {population!r}; choose from {sorted(gold.POPULATIONS)}")
    t0 = time.time()
    root = Path(out) if out is not None else workspace_dir()
    root.mkdir(parents=True, exist_ok=True)
    stages = {}

    def step(name: str) -> None:
        print(f"pipeline: {name} ({time.time() - t0:.0f} s so far)", file=sys.stderr, flush=True)

    step("supervised fine-tuning")
    sft_cfg = sft_cfg or SFTConfig()
    sft_cfg.seed = seed
    stages["sft"] = train_sft(sft_cfg, base="base", out_dir=root / "sft")
    step(f"simulated labels from the {population} population, and the reward model")
    stages["reward"] = run_reward_stage(population=population, init=root / "sft", out=root / "rm", seed=seed,
                                        cfg=reward_cfg)
    step("PPO")
    stages["ppo"] = run_ppo_stage(policy=str(root / "sft"), reward=str(root / "rm"), out=root / "ppo", seed=seed,
                                  cfg=ppo_cfg or PPOConfig(), evaluate_n=eval_n)
    step("evaluation of base, SFT and PPO on the three evaluation splits")
    splits = measure_splits(root / "ppo", root / "sft", n=eval_n, seed=seed)

    summary = {
        "population": population, "out": str(root), "seed": seed,
        **{key: splits["heldout"][key] for key in ("base", "sft", "ppo", "win_rate_ppo_vs_sft",
                                                   "win_rate_sft_vs_base")},  # the held-out split, as before
        "splits": splits,
        "reward_model": {k: stages["reward"].get(k) for k in ("heldout_accuracy", "heldout_expected_accuracy",
                                                              "noise_ceiling", "ceiling_gap", "gold_correlation",
                                                              "pairs", "heldout_pairs")},
        "ppo_training": {k: stages["ppo"].get(k) for k in ("proxy_reward", "gold_reward", "kl", "updates")},
        "stage_seconds": {name: stage.get("seconds") for name, stage in stages.items()},
    }
    summary["report"] = str(write_report(root, summary))
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


def measure_splits(ppo, sft, base="base", n: int | None = None, seed: int = 0) -> dict:
    """{split: {"base", "sft", "ppo": yardstick figures, "win_rate_ppo_vs_sft", "win_rate_sft_vs_base", "n"}}.

    Two head-to-head evaluations sample each model once per split; "other" is the opponent's yardstick."""
    ppo_vs_sft = evaluate_splits(ppo, against=sft, n=n, seed=seed)
    sft_vs_base = evaluate_splits(sft, against=base, n=n, seed=seed)
    splits = {}
    for split in SPLITS:
        figures = {"base": sft_vs_base[split]["other"], "sft": sft_vs_base[split], "ppo": ppo_vs_sft[split]}
        splits[split] = {**{name: {k: figures[name][k] for k in YARDSTICK_KEYS} for name in figures},
                         "win_rate_ppo_vs_sft": ppo_vs_sft[split]["win_rate"],
                         "win_rate_sft_vs_base": sft_vs_base[split]["win_rate"], "n": ppo_vs_sft[split]["n"]}
    return splits


def write_report(root: Path, summary: dict) -> Path:
    """report.md with two PNG plots: the yardstick of base, SFT and PPO, and PPO's training curves."""
    names = ["base", "sft", "ppo"]
    keys = ["gold_mean", "helpful_rate", "polite_rate", "harmful_compliance_rate", "over_refusal_rate"]
    fig = Figure(figsize=(12, 3.2 * len(SPLITS)))
    for row, split in enumerate(SPLITS):
        for i, key in enumerate(keys):
            ax = fig.add_subplot(len(SPLITS), len(keys), row * len(keys) + i + 1)
            ax.bar(names, [summary["splits"][split][n][key] for n in names], color=["#999", "#69c", "#c63"])
            ax.set_title(f"{key}\n({split})", fontsize=9)
            ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(root / "yardstick.png", dpi=100)

    log = json.loads((root / "ppo" / "log.json").read_text())
    fig = Figure(figsize=(10, 3))
    for i, (keys, title) in enumerate([(("proxy_reward", "gold_reward"), "reward"), (("kl",), "KL to reference"),
                                       (("reply_length",), "reply length (tokens)")]):
        ax = fig.add_subplot(1, 3, i + 1)
        for key in keys:
            if log and key in log[0]:
                ax.plot([row["update"] for row in log], [row[key] for row in log], label=key)
        ax.set(title=title, xlabel="update")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(root / "ppo_curves.png", dpi=100)

    header = " | ".join(f"{n} ({split})" for split in SPLITS for n in names)
    rows = "\n".join(f"| {key} | " + " | ".join(f"{summary['splits'][split][n][key]}" for split in SPLITS
                                                for n in names) + " |" for key in YARDSTICK_KEYS)
    wins = "\n".join(f"  - {split}: SFT over base {summary['splits'][split]['win_rate_sft_vs_base']}, PPO over SFT "
                     f"{summary['splits'][split]['win_rate_ppo_vs_sft']} ({summary['splits'][split]['n']} requests)"
                     for split in SPLITS)
    rm, ppo = summary["reward_model"], summary["ppo_training"]
    text = f"""# RLHF pipeline report ({summary['population']} raters, seed {summary['seed']})

Produced by `rlhf-lessons pipeline`; every number below was measured in this run on evaluation requests that no
training text used: `heldout` (new phrasings of trained subjects), `unseen-phrasing` (openers and frames no
training text uses) and `unseen-subject` (subjects no demonstration, label or PPO prompt uses).

| metric | {header} |
|---|{"---|" * (len(SPLITS) * len(names))}
{rows}

- Win rates (share of requests on which the gold rater prefers the first model's reply, ties counted half):
{wins}
- Reward model: expected held-out accuracy {rm['heldout_expected_accuracy']} against a noise ceiling of
  {rm['noise_ceiling']} (gap {rm['ceiling_gap']}, both expectations over the label noise, on {rm['heldout_pairs']}
  held-out pairs; one draw of the labels: {rm['heldout_accuracy']}); {rm['pairs']} training pairs; correlation with
  the gold score {rm['gold_correlation']}.
- PPO: {ppo['updates']} updates, final proxy reward {ppo['proxy_reward']}, KL to the SFT model {ppo['kl']} nats.
- Stage times (seconds): {summary['stage_seconds']}.

![yardstick](yardstick.png)

![PPO training](ppo_curves.png)
"""
    path = root / "report.md"
    path.write_text(text)
    return path
