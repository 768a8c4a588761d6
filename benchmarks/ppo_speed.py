"""How fast PPO and the reward model train on this machine, and how much of the work is real.

    python benchmarks/ppo_speed.py                  # PPO shared / separate value network, packed / padded; RM epochs
    python benchmarks/ppo_speed.py --threads 2 --updates 12
    python benchmarks/ppo_speed.py --write          # also write the table to benchmarks/ppo_speed_t<threads>.md

Each configuration runs in its own process (so its peak RSS is its own) on identical work: the shipped base model as
policy and reference, a reward model made from it with a fresh head, 64 requests per update, at most 32 new tokens,
4 epochs x 2 minibatches, fixed KL. It prints, per configuration:
  s/update      median seconds per PPO update after 2 warm-up updates
  tokens/s      positions through a transformer (sampling excluded), fwd + bwd counted once, per second
  real share    real tokens / positions computed in the training passes (the grad-enabled transformer calls)
  GFLOP/s       matmul FLOPs of those passes and every LM head (2 x params x tokens forward, 6 x with grad), per
                second, and as a share of fp32 torch.matmul measured in this process on the model's own shapes
  peak RSS      of the process, MiB
and the same for the reward model's default path (rankings of 8) per epoch; last, bf16 autocast against fp32 on a
training step of the course's model (the course trains in fp32). The referee against TRL is
../shared/bench/side_by_side.py; this script measures what it cannot see from outside (the real-token share).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 2


def matmul_gflops(n_embd: int, tokens: int = 2048, repeats: int = 30) -> float:
    """fp32 matmul rate on the model's own shapes: (tokens, d) @ (d, 4d), the MLP's first layer."""
    import torch
    a, b = torch.randn(tokens, n_embd), torch.randn(n_embd, 4 * n_embd)
    for _ in range(5):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * tokens * n_embd * 4 * n_embd * repeats / (time.perf_counter() - start) / 1e9


class Counter:
    """Counts positions and real tokens through every GPT-2 trunk, and rows through every LM head."""

    def __init__(self):
        self.positions = self.real = self.trunk_flop = self.head_flop = 0.0
        self.last_packed_real = 0

    def instrument(self, model):
        import torch
        trunk_params = sum(p.numel() for n, p in model.named_parameters() if ".h." in n and p.dim() == 2)
        head_params = model.config.vocab_size * model.config.n_embd

        def trunk_hook(module, args, kwargs, output):
            if kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None:
                return  # sampling: KV-cached, one new token per row
            ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
            grad = torch.is_grad_enabled()
            self.trunk_flop += (6 if grad else 2) * trunk_params * ids.numel()
            if grad:
                self.positions += ids.numel()
                self.real += self.last_packed_real if mask is not None and mask.dim() == 4 else float(mask.sum())

        def head_hook(module, inputs, output):
            self.head_flop += (6 if torch.is_grad_enabled() else 2) * head_params * output.shape[:-1].numel()

        for name, module in model.named_modules():
            if type(module).__name__ == "GPT2Model":
                module.register_forward_hook(trunk_hook, with_kwargs=True)
            if name.endswith("lm_head"):
                module.register_forward_hook(head_hook)
        return model


def run_ppo(value_model: str, packed: bool, updates: int, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    import rlhf_lessons.packing as packing
    import rlhf_lessons.ppo as ppo
    import rlhf_lessons.reward as reward
    from rlhf_lessons.models import load_tokenizer, save_checkpoint

    counter = Counter()
    real_pack = packing.pack

    def counting_pack(*args, **kwargs):
        result = real_pack(*args, **kwargs)
        counter.last_packed_real = result.slots.numel()
        return result

    packing.pack = counting_pack
    load_policy, load_rm = ppo.load_policy, reward.load_reward_model
    ppo.load_policy = lambda *a, **k: (lambda mt: (counter.instrument(mt[0]), mt[1]))(load_policy(*a, **k))
    reward.load_reward_model = lambda *a, **k: (lambda mt: (counter.instrument(mt[0]), mt[1]))(load_rm(*a, **k))
    base = ROOT / "data" / "base"
    times, marks = [], {}

    def on_update(update, row):
        times.append(time.perf_counter())
        if update == WARMUP - 1:
            marks.update(positions=counter.positions, real=counter.real,
                         flop=counter.trunk_flop + counter.head_flop)

    with tempfile.TemporaryDirectory() as work:
        rm, _ = reward.reward_model_from(base, seed=0)
        save_checkpoint(rm, load_tokenizer(base), Path(work) / "rm", {"stage": "rm", "note": "ppo_speed.py"})
        cfg = ppo.PPOConfig(updates=updates, batch_size=64, max_new_tokens=32, kl_coef=0.15, target_kl=None,
                            epochs=4, minibatches=2, value_model=value_model, packed=packed, seed=0, device="cpu")
        ppo.train_ppo(cfg, policy=str(base), reward=str(Path(work) / "rm"), out_dir=Path(work) / "ppo",
                      on_update=on_update)
    steps = [b - a for a, b in zip(times[WARMUP - 1:], times[WARMUP:])]
    seconds = sum(steps)
    flop = counter.trunk_flop + counter.head_flop - marks["flop"]
    positions = counter.positions - marks["positions"]
    return {"s_per_update": statistics.median(steps), "tokens_per_s": positions / seconds,
            "real_share": (counter.real - marks["real"]) / positions,
            "gflops": flop / seconds / 1e9, "matmul_gflops": matmul_gflops(base_n_embd()),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_reward(epochs: int, threads: int) -> dict:
    import random

    import torch
    torch.set_num_threads(threads)
    from rlhf_lessons import labeling, reward

    base = str(ROOT / "data" / "base")
    groups = labeling.sample_rankings(256, k=8, policies=(base,), seed=0, progress=False)  # the default path's kind
    pairs, _ = labeling.simulate_rankings(groups, "balanced", seed=0)  # of labels: rankings of 8, balanced raters
    cfg = reward.RewardConfig(epochs=epochs, seed=0)
    rng = random.Random(cfg.seed)  # the batches train_reward will make: the same generator, in the same order
    bounds = [0]
    for _ in range(epochs):
        bounds.append(bounds[-1] + len(reward.grouped_batches(pairs, cfg.batch_size, rng)))
    ends = []
    with tempfile.TemporaryDirectory() as work:
        reward.train_reward(cfg, pairs, init=base, out_dir=Path(work) / "rm", progress=False, device="cpu",
                            on_step=lambda *a: ends.append(time.perf_counter()))
    epoch_s = [ends[bounds[e + 1] - 1] - ends[bounds[e] - 1] for e in range(1, epochs)]  # epoch 1 warms up
    return {"s_per_epoch": statistics.median(epoch_s), "pairs": len(pairs),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_autocast(threads: int, steps: int = 10) -> dict:
    """bf16 autocast against fp32: seconds of one training step (forward, backward, AdamW) of the base model on a
    PPO minibatch's shape (32 sequences of 64 positions), and a large matmul's rate in each dtype (where the CPU has
    bf16 instructions the large matmul gains; the question is whether the course's small shapes do)."""
    import torch
    torch.set_num_threads(threads)
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(ROOT / "data" / "base")
    ids = torch.randint(0, model.config.vocab_size, (32, 64), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step_seconds(bf16: bool) -> float:
        times = []
        for _ in range(steps + WARMUP):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - start)
        return statistics.median(times[WARMUP:])

    def big_matmul_gflops(dtype) -> float:
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ b
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        return 2 * 2048 ** 3 * 5 / (time.perf_counter() - start) / 1e9

    return {"fp32_step_s": step_seconds(False), "bf16_step_s": step_seconds(True),
            "fp32_matmul_gflops": big_matmul_gflops(torch.float32),
            "bf16_matmul_gflops": big_matmul_gflops(torch.bfloat16)}


def base_n_embd() -> int:
    return json.loads((ROOT / "data" / "base" / "config.json").read_text())["n_embd"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--updates", type=int, default=12)
    parser.add_argument("--rm-epochs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the table to benchmarks/ppo_speed_t<N>.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print its JSON
    a = parser.parse_args()
    if a.one:
        kind, *rest = a.one.split(":")
        result = (run_reward(a.rm_epochs, a.threads) if kind == "rm" else run_autocast(a.threads)
                  if kind == "autocast" else run_ppo(rest[0], rest[1] == "packed", a.updates, a.threads))
        print(json.dumps(result))
        return
    lines = [f"threads {a.threads}, {a.updates} PPO updates ({WARMUP} warm-up), {a.rm_epochs} RM epochs "
             f"(python benchmarks/ppo_speed.py --threads {a.threads} --updates {a.updates}, "
             f"{time.strftime('%Y-%m-%d')})",
             "", "| PPO value network | layout | s/update | tokens/s | real share | GFLOP/s | of matmul | peak RSS |",
             "|---|---|---|---|---|---|---|---|"]
    print(lines[0])
    results = {}
    for value_model in ("shared", "reward"):
        for layout in ("packed", "padded"):
            r = one(f"ppo:{value_model}:{layout}", a)
            results[f"ppo_{value_model}_{layout}"] = r
            lines.append(f"| {value_model} | {layout} | {r['s_per_update']:.3f} | {r['tokens_per_s']:.0f} | "
                         f"{r['real_share']:.3f} | {r['gflops']:.1f} | {r['gflops'] / r['matmul_gflops']:.0%} | "
                         f"{r['peak_rss_mib']:.0f} MiB |")
            print(lines[-1])
    r = one("rm", a)
    results["reward_rankings"] = r
    lines += ["", f"Reward model, rankings of 8 ({r['pairs']} pairs, the default path): "
                  f"{r['s_per_epoch']:.2f} s/epoch, peak RSS {r['peak_rss_mib']:.0f} MiB."]
    print(lines[-1])
    r = one("autocast", a)
    results["autocast"] = r
    lines += ["", f"bf16 autocast, one training step of the base model on 32 x 64 positions: fp32 "
                  f"{r['fp32_step_s'] * 1000:.0f} ms, bf16 {r['bf16_step_s'] * 1000:.0f} ms; a 2048 x 2048 matmul: "
                  f"fp32 {r['fp32_matmul_gflops']:.0f} GFLOP/s, bf16 {r['bf16_matmul_gflops']:.0f} GFLOP/s."]
    print(lines[-1])
    if a.write:
        (ROOT / "benchmarks" / f"ppo_speed_t{a.threads}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps({"threads": a.threads, "updates": a.updates, **results}))


def one(spec: str, a) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--one", spec, "--threads", str(a.threads), "--updates",
                           str(a.updates), "--rm-epochs", str(a.rm_epochs)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
