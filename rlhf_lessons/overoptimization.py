"""Reward over-optimisation: push hard on a learned reward and the proxy keeps rising while the gold score turns down.

A reward model is a proxy, fitted to a few thousand noisy comparisons. Optimising it a little finds replies people
prefer; optimising it hard finds replies the proxy overrates. Gao, Schulman and Hilton (2022, "Scaling laws for
reward model overoptimization") measured this as a function of how far the policy moved from where it started,

    d = sqrt(KL(pi || pi_ref))                   (nats per reply; sqrt, because then the curves are simple)

and found the gold reward gained over the start, R(d), follows one of two forms:

    best-of-n:  R(d) = d (a - b d)               (rises, peaks at d* = a / (2b), falls)
    RL (PPO):   R(d) = d (a - b log d)           (rises, peaks at d* = exp(a / b - 1), falls slowly)

The proxy reward, fitted with the same forms, keeps rising (its b is near zero or negative).

Two ways to climb the proxy, measured here on the course's world:

- **Best-of-n** (`bestofn_sweep`): sample n replies, keep the one the reward model likes best. No training; its
  KL to the sampling policy is known in closed form (`bestofn_kl`).
- **PPO without a leash** (`ppo_overoptimization`): `ppo.train_ppo` with kl_coef 0 (or small) and enough updates;
  the per-update log gives (proxy, gold, KL) along the run.

Everything returns plain dicts of numbers, so the CLI prints them as JSON and the lesson plots them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from statistics import mean

import torch

from . import gold
from .evaluate import heldout_requests
from .workspace import workspace_dir

DEFAULT_N_LIST = (1, 2, 4, 8, 16, 32, 64)


# --------------------------------------------------------------------------------------------------------------------
# Best-of-n
# --------------------------------------------------------------------------------------------------------------------

def bestofn_kl(n: int) -> float:
    """KL(best-of-n || policy) = log n - (n - 1) / n  nats (Stiennon et al. 2020, appendix G.3).

    Exact when the n replies are distinct and the reward ranks them without ties (Beirami et al. 2024 show it is an
    upper bound otherwise). n = 1 gives 0: one sample is the policy itself. It grows like log n, so n = 64 is only
    3.2 nats: best-of-n reaches its reward with far less KL than RL usually spends.
    """
    if isinstance(n, bool) or not float(n).is_integer() or n < 1:
        raise ValueError(f"n must be a whole number >= 1 (the number of replies to choose from), got {n!r}")
    n = int(n)
    return math.log(n) - (n - 1) / n


def bestofn_weights(m: int, n: int) -> list[float]:
    """P(the i-th best of m replies is the best of a random n of them), i = 0 (best) .. m - 1: a list of m floats.

        w_i = C(m - 1 - i, n - 1) / C(m, n)

    (the n - 1 other replies of the subset must all come from the m - 1 - i worse ones). The weights sum to 1; with
    them, m samples give the *unbiased* estimate of best-of-n for every n <= m at once: the mean over all C(m, n)
    subsets, not just the first n replies, so the curve is smooth in n without extra sampling.
    """
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= m (n replies chosen from m samples), got n={n}, m={m}: sample more replies")
    total = math.comb(m, n)
    return [math.comb(m - 1 - i, n - 1) / total for i in range(m)]  # exact ints, one division: no overflow


def bestofn_expectation(proxy: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Expected value of the reply best-of-n picks (by `proxy`) for each request: (R, m), (R, m) -> (R,).

    proxy: the reward model's scores of m sampled replies to each of R requests; values: what to average (the
    proxy itself, the gold score, the length...). Replies are ranked by proxy, best first, and weighted by
    `bestofn_weights(m, n)`.
    """
    if proxy.shape != values.shape or proxy.dim() != 2:
        raise ValueError(f"proxy and values must both be (requests, samples), got {tuple(proxy.shape)} and "
                         f"{tuple(values.shape)}")
    weights = torch.tensor(bestofn_weights(proxy.shape[1], n), dtype=torch.float64)
    order = torch.argsort(proxy, dim=1, descending=True, stable=True)
    return (values.double().gather(1, order) * weights).sum(1)


def sample_and_score(policy="sft", reward="rm", requests=None, m: int = 64, seed: int = 0, max_new_tokens: int = 40,
                     temperature: float = 1.0, population: str = "balanced", batch_size: int = 256,
                     progress: bool = True) -> dict:
    """m replies of `policy` to each request, scored by the reward model (normalised, as PPO sees it) and the gold
    rater. Returns {"requests": [Request], "replies": [[str] * m], "proxy": (R, m), "gold": (R, m)} tensors.

    policy, reward: checkpoint names or folders (or already-loaded (model, tokenizer) pairs).
    """
    from .runtime import progress_bar

    from .models import check_same_tokenizer, load_policy
    from .reward import load_reward_model, reward_scores
    from .sampling import sample_replies

    if m < 1:
        raise ValueError(f"m (replies per request) must be at least 1, got {m}")
    if population not in gold.POPULATIONS:
        raise ValueError(f"unknown population {population!r}; choose from {sorted(gold.POPULATIONS)}")
    requests = heldout_requests() if requests is None else list(requests)
    model, tok = load_policy(policy) if isinstance(policy, (str, Path)) else policy
    rm, rm_tok = load_reward_model(reward) if isinstance(reward, (str, Path)) else reward
    check_same_tokenizer(rm_tok, tok, "the reward model and the policy")

    prompts = [r.prompt for r in requests for _ in range(m)]  # request-major: row j * m + i is sample i of request j
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    texts: list[str] = []
    bar = progress_bar(total=len(prompts), desc=f"sampling {m} replies per request", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        texts += sample_replies(model, tok, chunk, max_new_tokens=max_new_tokens, temperature=temperature,
                                generator=generator).texts
        bar.update(len(chunk))
    bar.close()
    proxy = reward_scores(rm, rm_tok, prompts, texts).double().reshape(len(requests), m)
    gold_scores = torch.tensor([gold.gold_score(r, t, population) for r, t in
                                zip((r for r in requests for _ in range(m)), texts)], dtype=torch.float64)
    replies = [texts[j * m:(j + 1) * m] for j in range(len(requests))]
    return {"requests": requests, "replies": replies, "proxy": proxy, "gold": gold_scores.reshape(len(requests), m)}


def bestofn_curve(scored: dict, n_list=DEFAULT_N_LIST) -> list[dict]:
    """Per n: {"n", "kl", "sqrt_kl", "proxy", "gold", "proxy_gain", "gold_gain"} from `sample_and_score` output.

    proxy and gold are means over requests of the chosen reply's scores; the gains are relative to n = 1 (a single
    sample: the policy itself), the R of Gao et al.
    """
    n_list = sorted({int(n) for n in n_list})
    m = scored["proxy"].shape[1]
    if not n_list or n_list[0] < 1 or n_list[-1] > m:
        raise ValueError(f"every n must be between 1 and the {m} replies sampled per request, got {n_list}")
    proxy0, gold0 = scored["proxy"].mean().item(), scored["gold"].mean().item()  # n = 1
    rows = []
    for n in n_list:
        p = bestofn_expectation(scored["proxy"], scored["proxy"], n).mean().item()
        g = bestofn_expectation(scored["proxy"], scored["gold"], n).mean().item()
        kl = bestofn_kl(n)
        rows.append({"n": n, "kl": round(kl, 5), "sqrt_kl": round(math.sqrt(kl), 5), "proxy": round(p, 4),
                     "gold": round(g, 4), "proxy_gain": round(p - proxy0, 4), "gold_gain": round(g - gold0, 4)})
    return rows


def bestofn_sweep(policy="sft", reward="rm", n_list=DEFAULT_N_LIST, n_requests: int | None = None, seed: int = 0,
                  max_new_tokens: int = 40, population: str = "balanced", progress: bool = True) -> dict:
    """`rlhf-lessons bestofn`: best-of-n on held-out requests, for every n in n_list, from max(n_list) samples each.

    Each request gets m = max(n_list) replies once (seeded); every n is then estimated from the same samples with
    the unbiased order-statistics weights (`bestofn_weights`). Proxy: the reward model, normalised so the SFT
    policy's replies score mean 0, std 1. Gold: the `population` gold rater (balanced: the yardstick's).
    Returns {"rows": bestofn_curve, "fit_gold", "fit_proxy" (fit_bestofn of the gains on sqrt_kl), ...}.
    """
    from .ppo import build_missing

    n_list = sorted({int(n) for n in n_list})
    if not n_list or n_list[0] < 1:
        raise ValueError(f"n_list must hold whole numbers >= 1, got {n_list}")
    if population not in gold.POPULATIONS:  # before minutes of building a missing SFT or reward model
        raise ValueError(f"unknown population {population!r}; choose from {sorted(gold.POPULATIONS)}")
    build_missing(policy, reward)
    t0 = time.time()
    requests = heldout_requests(n_requests, seed)
    scored = sample_and_score(policy, reward, requests, m=n_list[-1], seed=seed, max_new_tokens=max_new_tokens,
                              population=population, progress=progress)
    rows = bestofn_curve(scored, n_list)
    out = {"policy": str(policy), "reward": str(reward), "population": population, "requests": len(requests),
           "samples_per_request": n_list[-1], "seed": seed, "rows": rows}
    if len(rows) >= 3:  # two coefficients need at least two points with d > 0
        d = [r["sqrt_kl"] for r in rows]
        out["fit_gold"] = _brief(fit_bestofn(d, [r["gold_gain"] for r in rows]))
        out["fit_proxy"] = _brief(fit_bestofn(d, [r["proxy_gain"] for r in rows]))
    best = max(rows, key=lambda r: r["gold"])
    out.update({"best_gold_n": best["n"], "best_gold": best["gold"], "seconds": round(time.time() - t0, 1)})
    return out


# --------------------------------------------------------------------------------------------------------------------
# The functional forms of Gao, Schulman and Hilton (2022), fitted by least squares
# --------------------------------------------------------------------------------------------------------------------

def bestofn_form(d, a: float, b: float) -> torch.Tensor:
    """R(d) = d (a - b d), for d >= 0: (N,) -> (N,)."""
    d = torch.as_tensor(d, dtype=torch.float64)
    return d * (a - b * d)


def rl_form(d, a: float, b: float) -> torch.Tensor:
    """R(d) = d (a - b log d), for d >= 0 (0 at d = 0, the limit of d log d): (N,) -> (N,)."""
    d = torch.as_tensor(d, dtype=torch.float64)
    d_log_d = torch.where(d > 0, d * torch.log(d.clamp(min=1e-300)), torch.zeros_like(d))
    return a * d - b * d_log_d


def _fit(d, R, second_feature, form: str) -> dict:
    """Least squares for R = a * d - b * f(d): linear in (a, b), so one solve of a 2-column system."""
    d = torch.as_tensor(d, dtype=torch.float64).flatten()
    R = torch.as_tensor(R, dtype=torch.float64).flatten()
    if d.shape != R.shape:
        raise ValueError(f"d and R must have the same length, got {d.numel()} and {R.numel()}")
    if not (torch.isfinite(d).all() and torch.isfinite(R).all()):
        raise ValueError("d and R must be finite numbers (drop NaN or infinite points first)")
    if (d < 0).any():
        raise ValueError("d = sqrt(KL) cannot be negative: pass sqrt of a KL, not a KL estimate below 0")
    X = torch.stack([d, -second_feature(d)], dim=1)  # (N, 2): R = X @ [a, b]
    if int((d > 0).sum()) < 2 or torch.linalg.matrix_rank(X).item() < 2:
        raise ValueError(f"fitting {form} needs at least two points with distinct d > 0 (got {d.tolist()})")
    coef = torch.linalg.lstsq(X, R[:, None]).solution.squeeze(1)
    fitted = X @ coef
    return {"form": form, "a": coef[0].item(), "b": coef[1].item(), "fitted": fitted.tolist(),
            "rmse": torch.sqrt(((fitted - R) ** 2).mean()).item()}


def fit_bestofn(d, R) -> dict:
    """Fit best-of-n's R(d) = d (a - b d) = a d - b d^2 by least squares. d, R: (N,) with d = sqrt(KL).

    R is the reward gained over the start (n = 1). Returns {"form", "a", "b", "fitted" (N values), "rmse"}; the
    curve peaks at d* = a / (2 b) when b > 0. Evaluate it anywhere with bestofn_form(d, a, b).
    """
    return _fit(d, R, lambda d: d * d, "d(a - b d)")


def fit_rl(d, R) -> dict:
    """Fit RL's R(d) = d (a - b log d) = a d - b d log d by least squares. d, R: (N,) with d = sqrt(KL).

    R is the reward gained over the start of the run. Returns {"form", "a", "b", "fitted", "rmse"}; the curve peaks at
    d* = exp(a / b - 1) when b > 0. Evaluate it anywhere with rl_form(d, a, b).
    """
    return _fit(d, R, lambda d: torch.where(d > 0, d * torch.log(d.clamp(min=1e-300)), torch.zeros_like(d)),
                "d(a - b log d)")


def peak_of(fit: dict) -> float | None:
    """The d at which a fitted curve peaks (None if it never turns down: b <= 0)."""
    a, b = fit["a"], fit["b"]
    if b <= 0:
        return None
    return a / (2 * b) if fit["form"] == "d(a - b d)" else math.exp(a / b - 1)


def _brief(fit: dict) -> dict:
    """A fit without the fitted values, rounded, for JSON summaries."""
    peak = peak_of(fit)
    return {"form": fit["form"], "a": round(fit["a"], 4), "b": round(fit["b"], 4), "rmse": round(fit["rmse"], 4),
            "peak_d": None if peak is None else round(peak, 4)}


# --------------------------------------------------------------------------------------------------------------------
# PPO without a leash
# --------------------------------------------------------------------------------------------------------------------

def overopt_config(**changes):
    """PPOConfig of the over-optimisation run: lesson 05's defaults with the leash off (kl_coef 0) and twice its
    learning rate (2e-4), a strong optimiser for a short run.

    Why the doubled step: a better reward model is harder to game (Gao et al. 2022 see the same as reward models
    grow). While the reward model's defaults were being improved, 100 unleashed updates at lesson 05's step size
    (1e-4) took gold only from 1.96 to a peak of 2.43 and back to 2.13. Measured with 2e-4 (seed 0, default SFT and
    reward model, 1 CPU thread, about 3 minutes; means of 10 updates): gold 1.84 at the start, 2.12 at its peak
    (update 10), then down to -1.14 by update 99 (KL 144 nats) while the proxy climbs the whole way, -0.17 -> 0.22 ->
    1.99. Lesson 05's leash (kl_coef 0.15) instead holds KL near 1.2 and ends with gold 2.63. Any field can be
    changed, e.g. overopt_config(kl_coef=0.02) for a short leash, or overopt_config(lr=1e-4).
    """
    from .ppo import PPOConfig

    return replace(PPOConfig(kl_coef=0.0, lr=2e-4), **changes)


def smooth_log(log: list[dict], window: int = 10) -> list[dict]:
    """Means of consecutive windows of a PPO log: [{"update", "proxy", "gold", "kl", "sqrt_kl", "reply_length"}].

    Row 0 is the first update alone: its replies come from the reference policy itself (KL 0), the start that the
    gains are measured from. Each later row averages `window` updates (each a fresh batch of replies), so the
    curve is smooth; sqrt_kl is the square root of the window's mean KL (clamped at 0: k1 estimates can dip below).
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 update, got {window}")
    if not log:
        raise ValueError("the PPO log is empty: train for at least one update")
    chunks = [log[:1]] + [log[i:i + window] for i in range(1, len(log), window)]
    rows = []
    for chunk in chunks:
        kl = max(mean(r["kl"] for r in chunk), 0.0)
        rows.append({"update": chunk[-1]["update"], "proxy": round(mean(r["proxy_reward"] for r in chunk), 4),
                     "gold": round(mean(r["gold_reward"] for r in chunk), 4), "kl": round(kl, 4),
                     "sqrt_kl": round(math.sqrt(kl), 4),
                     "reply_length": round(mean(r["reply_length"] for r in chunk), 2)})
    for row in rows:
        row["proxy_gain"] = round(row["proxy"] - rows[0]["proxy"], 4)
        row["gold_gain"] = round(row["gold"] - rows[0]["gold"], 4)
    return rows


def ppo_overoptimization(policy: str = "sft", reward: str = "rm", cfg=None, out: str | Path | None = None,
                         window: int = 10, on_update=None) -> dict:
    """PPO against the reward model with the leash off; (proxy, gold, KL) along the run. cfg: overopt_config().

    Why the training log suffices: every update samples a fresh batch of `cfg.batch_size` replies from the current
    policy and logs their mean proxy reward, mean gold score and mean KL to the reference; averaged over `window`
    updates that is a measurement of the policy at that point of the run, at no extra cost. (They are training
    requests, but the gold rater is never trained on, and the reward model saw those requests in its labels either
    way.) Saving checkpoints and re-sampling held-out replies would cost minutes and show the same curve.

    The policy is saved to `out` (default: <workspace>/experiments/overopt_ppo), never over the lesson's `ppo`.
    Returns {"curve": smooth_log rows, "peak": the row of highest gold, "final": the last row, "fit_gold",
    "fit_proxy" (fit_rl of the gains on sqrt_kl), "gold_fell_from_peak", "proxy_rose_after_gold_peak", ...}.
    """
    from .ppo import build_missing, train_ppo

    cfg = cfg or overopt_config()
    build_missing(policy, reward)
    out = Path(out) if out is not None else workspace_dir() / "experiments" / "overopt_ppo"
    t0 = time.time()
    result = train_ppo(cfg, policy=policy, reward=reward, out_dir=out, on_update=on_update)
    curve = smooth_log(result["log"], window)
    peak = max(curve, key=lambda r: r["gold"])
    final = curve[-1]
    summary = {"policy": str(policy), "reward": str(reward), "kl_coef": cfg.kl_coef, "updates": cfg.updates,
               "lr": cfg.lr, "window": window, "out": str(out), "curve": curve, "start": curve[0], "peak": peak,
               "final": final,
               "gold_fell_from_peak": round(peak["gold"] - final["gold"], 4),
               "proxy_rose_after_gold_peak": round(final["proxy"] - peak["proxy"], 4)}
    try:  # the start (d = 0, gain 0) is on every curve of this form: it costs the fit nothing
        d = [r["sqrt_kl"] for r in curve]
        summary["fit_gold"] = _brief(fit_rl(d, [r["gold_gain"] for r in curve]))
        summary["fit_proxy"] = _brief(fit_rl(d, [r["proxy_gain"] for r in curve]))
    except ValueError:  # too short a run to fit two coefficients
        pass
    summary["config"] = asdict(cfg)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


# --------------------------------------------------------------------------------------------------------------------
# The full sweeps, written into the workspace for the lesson to read
# --------------------------------------------------------------------------------------------------------------------

def experiments_dir() -> Path:
    """<workspace>/experiments: where the full sweeps of lesson 06 are written (created if missing)."""
    path = workspace_dir() / "experiments"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_result(name: str, result: dict) -> Path:
    """Write `result` to <workspace>/experiments/<name>.json (the lesson reads the full sweeps from there)."""
    path = experiments_dir() / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return path


def read_result(name: str) -> dict | None:
    """The JSON a full sweep wrote, or None when it has not been run in this workspace yet."""
    path = workspace_dir() / "experiments" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_overopt_experiment(policy: str = "sft", reward: str = "rm", seed: int = 0, cfg=None,
                           n_list=DEFAULT_N_LIST, progress: bool = True) -> dict:
    """`rlhf-lessons experiment overopt`: the best-of-n sweep and the unleashed PPO run, both written to
    <workspace>/experiments/overopt.json. Returns a short summary (the file holds the curves)."""
    t0 = time.time()
    cfg = cfg or overopt_config(seed=seed)
    print("over-optimisation: best-of-n on held-out requests", file=sys.stderr, flush=True)
    bon = bestofn_sweep(policy, reward, n_list=n_list, seed=seed, progress=progress)
    print("over-optimisation: PPO with the leash off", file=sys.stderr, flush=True)
    rl = ppo_overoptimization(policy, reward, cfg=cfg)
    result = {"bestofn": bon, "ppo": rl, "seconds": round(time.time() - t0, 1),
              "command": "rlhf-lessons experiment overopt"}
    path = write_result("overopt", result)
    return {"experiment": "overopt", "file": str(path),
            "bestofn": {k: bon[k] for k in ("best_gold_n", "best_gold", "fit_gold", "fit_proxy") if k in bon},
            "ppo": {k: rl[k] for k in ("start", "peak", "final", "gold_fell_from_peak", "proxy_rose_after_gold_peak",
                                       "fit_gold", "fit_proxy") if k in rl},
            "seconds": result["seconds"]}


# --------------------------------------------------------------------------------------------------------------------
# The lesson's plot
# --------------------------------------------------------------------------------------------------------------------

def plot_overoptimization(bestofn: dict | None = None, ppo: dict | None = None):
    """Gold and proxy reward gained, against d = sqrt(KL), with the fitted forms: one panel per method given.

    bestofn: bestofn_sweep output; ppo: ppo_overoptimization output. Returns a matplotlib Figure (a notebook shows
    it by displaying it; a script saves it with fig.savefig).
    """
    from matplotlib.figure import Figure

    panels = [(name, result) for name, result in (("best-of-n", bestofn), ("PPO, no KL penalty", ppo)) if result]
    if not panels:
        raise ValueError("give bestofn= (bestofn_sweep output) and/or ppo= (ppo_overoptimization output)")
    fig = Figure(figsize=(5.2 * len(panels), 3.6))
    for i, (title, result) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        rows = result["rows"] if "rows" in result else result["curve"]
        d = [r["sqrt_kl"] for r in rows]
        grid = torch.linspace(0, max(d), 200, dtype=torch.float64)
        form = bestofn_form if "rows" in result else rl_form
        for key, colour in (("proxy", "#c63"), ("gold", "#36c")):
            ax.plot(d, [r[f"{key}_gain"] for r in rows], "o", ms=4, color=colour, label=f"{key} (measured)")
            fit = result.get(f"fit_{key}")
            if fit:
                ax.plot(grid.tolist(), form(grid, fit["a"], fit["b"]).tolist(), "-", color=colour, alpha=0.7,
                        label=f"{key} fit: a={fit['a']:.2f}, b={fit['b']:.2f}")
        if "rows" in result:  # label the points with their n
            for r in rows:
                ax.annotate(f"n={r['n']}", (r["sqrt_kl"], r["gold_gain"]), fontsize=7, xytext=(2, -9),
                            textcoords="offset points")
        ax.axhline(0, color="#999", lw=0.8)
        ax.set(title=title, xlabel="d = sqrt(KL to the starting policy)", ylabel="reward gained over the start")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
