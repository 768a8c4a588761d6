"""Does a second round on a product's feedback hold across seeds? Lesson 07's experiment at full size, per seed.

    python benchmarks/round_two_outcomes.py --seeds 0,1,2 --jobs 2 --round-one /tmp/r2  # ~25 min a seed, 1 core

Each seed trains round one as lesson 05 does (SFT, the reward model of 1500 rankings, PPO; `--round-one DIR` reuses
DIR/seed-N/{sft,rm,ppo} where they exist, and the summary DIR/round-two-seed-N.json of a seed already run), then
runs `round_two.run_round_two(RoundTwoConfig(seed=N, original_pairs=2000))`: a deployment of 20,000 sessions heard
four ways, a reward model and PPO per way against the control (the same PPO on the round-one reward model), the first
way again with 2000 fresh pairs of the original balanced raters mixed into the reward model's training, and SFT on the
chosen replies against reward model + PPO at matched cost. Two tables come out, with
a column per seed and the spread: round two minus the control, per population of the users and split; and RLHF
against SFT on the chosen replies. Written to benchmarks/round_two_outcomes.md (figures: round_two_outcomes.json).
Nothing in them is typed in.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path



def round_one(folder: Path, seed: int) -> None:
    """SFT, reward model and PPO at the lessons' defaults into folder, unless they are there already."""
    from rlhf_lessons.ppo import PPOConfig, train_ppo
    from rlhf_lessons.reward import run_reward_stage
    from rlhf_lessons.sft import SFTConfig, train_sft

    if not (folder / "sft" / "config.json").exists():
        train_sft(SFTConfig(seed=seed), out_dir=folder / "sft")
    if not (folder / "rm" / "config.json").exists():
        run_reward_stage(init=folder / "sft", out=folder / "rm", seed=seed, use_store=False, progress=False)
    if not (folder / "ppo" / "config.json").exists():
        train_ppo(PPOConfig(seed=seed), policy=str(folder / "sft"), reward=str(folder / "rm"), out_dir=folder / "ppo")


ORIGINAL_PAIRS = 2000  # the mixed run: the users' pairs as deployed, and this many of the original raters' pairs


def run_seed(seed: int, folder: Path) -> dict:
    """round_two.run_round_two at full size with the mixed run; a seed's folder/round_two.json from an earlier run of
    this script is reused, and only the mixed run added to it if it lacks one."""
    import torch

    from rlhf_lessons.round_two import (FEEDBACK_VARIANTS, RoundTwoConfig, add_original_labels_run, mixed_name,
                                        run_round_two)

    round_one(folder, seed)
    cfg, first = RoundTwoConfig(seed=seed, original_pairs=ORIGINAL_PAIRS), next(iter(FEEDBACK_VARIANTS))
    saved = folder / "round_two.json"
    if saved.exists():
        summary = json.loads(saved.read_text())
        if mixed_name(first, ORIGINAL_PAIRS) not in summary["runs"]:
            add_original_labels_run(summary, cfg, first, folder / "rm", folder / "sft")
            saved.write_text(json.dumps(summary, indent=1) + "\n")
    else:
        summary = run_round_two(cfg, round_one=str(folder / "ppo"), round_one_rm=str(folder / "rm"),
                                sft=str(folder / "sft"), out=folder / "round_two")
    summary["threads"] = torch.get_num_threads()
    return summary


def _cells(values: list[float]) -> str:
    spread = f" | {max(values) - min(values):.3f}" if len(values) > 1 else " | "
    return " | ".join(f"{v:+.3f}" for v in values) + spread


def markdown(runs: dict[int, dict], command: str) -> str:
    seeds = sorted(runs)
    first = runs[seeds[0]]
    variants = [v for v in first["runs"] if all(runs[s]["runs"][v].get("trained") for s in seeds)]
    splits = list(first["control"]["served_vs_round_one"])
    groups = list(first["control"]["served_vs_round_one"][splits[0]])
    head = "| " + " | ".join(f"seed {s}" for s in seeds) + " | spread |"
    lines = [f"Measured by `{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {first['threads']} "
             f"thread(s) per seed). Users: {first['users']}; {first['config']['deploy']['sessions']} sessions; "
             f"round two = the round-one reward model trained on the feedback's pairs, then "
             f"{first['config']['ppo']['updates']} PPO updates from the SFT model against it.", "",
             "Change in mean gold score, round two minus the control (the same PPO on the round-one reward model, "
             "without the users' feedback), by the users' population; `product` weights the populations by their "
             "share of the users:",
             "", f"`... + {ORIGINAL_PAIRS} raters' pairs`: the same users' pairs, with {ORIGINAL_PAIRS} fresh pairs of "
             "the original balanced raters mixed into the reward model's training (`--original-pairs`).",
             "", "| heard | pairs (per seed) | split | population " + head,
             "|---|---|---|---|" + "---|" * (len(seeds) + 1)]
    for variant in variants:
        pairs = "/".join(str(runs[s]["runs"][variant]["pairs"]) for s in seeds)
        for split in splits:
            for group in groups:
                values = [runs[s]["runs"][variant]["served"][split][group] for s in seeds]
                lines.append(f"| {variant} | {pairs} | {split} | {group} | {_cells(values)} |")
    lines += ["", "The control against the deployed round-one model (the same recipe with fewer PPO updates, when "
              "the config has fewer than lesson 05's):", "",
              "| split | population " + head, "|---|---|" + "---|" * (len(seeds) + 1)]
    for split in splits:
        for group in groups:
            values = [runs[s]["control"]["served_vs_round_one"][split][group] for s in seeds]
            lines.append(f"| {split} | {group} | {_cells(values)} |")
    compared = [v for v in variants if all("sft_on_chosen" in runs[s]["runs"][v] for s in seeds)]
    if compared:
        v = compared[0]
        lines += ["", f"RLHF (reward model + PPO) against SFT on the chosen replies of the same pairs ({v}), at "
                  "matched training sequences; gold is the users' share-weighted mean:", "",
                  "| split | measure " + head, "|---|---|" + "---|" * (len(seeds) + 1)]
        for split in splits:
            for key in ("rlhf_gold", "sft_gold", "rlhf_win_rate"):
                values = [runs[s]["runs"][v]["sft_on_chosen"]["verdict"]["by_split"][split][key] for s in seeds]
                lines.append(f"| {split} | {key} | {_cells(values)} |")
        costs = "; ".join(f"seed {s}: {runs[s]['runs'][v]['sft_on_chosen']['cost']}" for s in seeds)
        lines += ["", "Verdicts, one per seed (computed by round_two.rlhf_vs_sft_verdict):", ""]
        lines += [f"- seed {s}: {runs[s]['runs'][v]['sft_on_chosen']['verdict']['sentence']}" for s in seeds]
        lines += ["", f"Training cost: {costs}."]
    lines += ["", "Seconds per seed (round two only): " + ", ".join(f"seed {s} {runs[s]['seconds']}" for s in seeds)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    from seed_runs import (add_seed_arguments, command_line, run_seeds, seeds_and_threads,  # beside this script
                           work_one_seed, write_results)

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_seed_arguments(parser)
    parser.add_argument("--round-one", default=None, help="folder whose seed-N/{sft,rm,ppo} are reused (and where "
                                                          "missing ones are trained; default: a temporary folder)")
    args = parser.parse_args(argv)
    seeds, threads = seeds_and_threads(args)
    out = Path(args.round_one) if args.round_one else Path(tempfile.mkdtemp(prefix="rlhf-round-two-"))
    os.environ.setdefault("RLHF_LESSONS_HOME", str(out / "workspace"))
    if args.one_seed_json:  # worker: one seed, its summary to a file
        return work_one_seed(args, threads, lambda seed: run_seed(seed, out / f"seed-{seed}"))

    t0 = time.time()
    runs = run_seeds(__file__, seeds, args.jobs, threads, out, "round-two-seed-", ("--round-one", str(out)),
                     reuse=True)
    write_results("round_two_outcomes", markdown(runs, command_line("round_two_outcomes.py", seeds, args.jobs)), runs,
                  out)
    print(json.dumps({"seeds": seeds, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
