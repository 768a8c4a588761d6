"""Tests of lesson 06's over-optimisation tools: the best-of-n KL, the order-statistics estimator, the curve fits of
Gao et al. on synthetic data, tiny end-to-end runs, and (slow) gold peaking and falling under an unleashed PPO."""

import itertools
import json
import math

import pytest
import torch
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

from rlhf_lessons import cli, overoptimization as oo
from rlhf_lessons.models import save_checkpoint, tiny_config


# ----- the KL of best-of-n -----

def test_bestofn_kl_known_values():
    assert oo.bestofn_kl(1) == 0.0  # one sample is the policy itself
    assert oo.bestofn_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert oo.bestofn_kl(4) == pytest.approx(1.3862944 - 0.75)
    assert oo.bestofn_kl(64) == pytest.approx(math.log(64) - 63 / 64)
    assert oo.bestofn_kl(64.0) == oo.bestofn_kl(64)


def test_bestofn_kl_increases_and_grows_like_log_n():
    values = [oo.bestofn_kl(n) for n in range(1, 200)]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert oo.bestofn_kl(10_000) == pytest.approx(math.log(10_000) - 1, abs=1e-3)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, float("nan")])
def test_bestofn_kl_refuses_bad_n(bad):
    with pytest.raises(ValueError, match="whole number"):
        oo.bestofn_kl(bad)


def test_bestofn_kl_matches_the_exact_kl_of_picking_the_best_of_n_distinct_items():
    # m equally likely distinct replies ranked by reward: best-of-n picks the i-th best with prob w_i; its KL to the
    # uniform policy tends to log n - (n-1)/n as m grows
    m, n = 4000, 8
    w = torch.tensor(oo.bestofn_weights(m, n), dtype=torch.float64)
    kl = (w[w > 0] * torch.log(w[w > 0] * m)).sum().item()
    assert kl == pytest.approx(oo.bestofn_kl(n), abs=5e-3)


# ----- the order-statistics estimator -----

def test_bestofn_weights_sum_to_one_and_match_brute_force():
    m = 6
    for n in range(1, m + 1):
        w = oo.bestofn_weights(m, n)
        assert sum(w) == pytest.approx(1.0)
        counts = [0] * m  # brute force: the best of every n-subset of ranks 0 (best) .. m - 1
        for subset in itertools.combinations(range(m), n):
            counts[min(subset)] += 1
        assert w == pytest.approx([c / math.comb(m, n) for c in counts])
    assert oo.bestofn_weights(5, 1) == pytest.approx([0.2] * 5)  # n = 1: a random reply
    assert oo.bestofn_weights(5, 5) == [1.0, 0.0, 0.0, 0.0, 0.0]  # n = m: always the best
    with pytest.raises(ValueError, match="sample more"):
        oo.bestofn_weights(4, 8)


def test_bestofn_expectation_is_the_mean_over_all_subsets():
    gen = torch.Generator().manual_seed(0)
    proxy, values = torch.randn(3, 7, generator=gen), torch.randn(3, 7, generator=gen)
    for n in (1, 3, 7):
        got = oo.bestofn_expectation(proxy, values, n)
        for row in range(3):
            picks = [values[row, max(s, key=lambda i: proxy[row, i].item())].item()
                     for s in itertools.combinations(range(7), n)]
            assert got[row].item() == pytest.approx(sum(picks) / len(picks))
    with pytest.raises(ValueError, match="requests, samples"):
        oo.bestofn_expectation(proxy, values[:, :3], 2)


def test_bestofn_gold_peaks_and_falls_when_the_proxy_pays_for_a_hack():
    """Picking by a proxy that pays for a hack (h) that gold likes a little and then dislikes: gold rises at small
    n, peaks, and falls at large n, while the proxy keeps rising. (Picking by gold would never fall.)"""
    gen = torch.Generator().manual_seed(0)
    quality, hack = torch.randn(400, 64, generator=gen), 1.5 * torch.randn(400, 64, generator=gen)
    proxy, gold = quality + hack, quality + 0.6 * hack - 0.4 * hack ** 2
    rows = oo.bestofn_curve({"proxy": proxy, "gold": gold}, [1, 2, 4, 8, 16, 32, 64])
    golds = [r["gold"] for r in rows]
    peak = golds.index(max(golds))
    assert 0 < peak < len(rows) - 1, golds  # an interior peak ...
    assert golds[-1] < golds[peak] - 0.3, golds  # ... and a fall after it
    assert [r["proxy"] for r in rows] == sorted(r["proxy"] for r in rows)
    honest = oo.bestofn_curve({"proxy": gold, "gold": gold}, [1, 4, 64])  # a perfect proxy: gold only rises
    assert honest[0]["gold"] < honest[1]["gold"] < honest[2]["gold"]


def test_bestofn_curve_on_a_perfect_proxy_rises_with_n():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(50, 16, generator=gen)
    rows = oo.bestofn_curve({"proxy": scores, "gold": scores}, [1, 2, 4, 16])
    assert [r["n"] for r in rows] == [1, 2, 4, 16] and rows[0]["gold_gain"] == 0 and rows[0]["kl"] == 0
    assert all(b["gold"] > a["gold"] for a, b in zip(rows, rows[1:]))
    with pytest.raises(ValueError, match="between 1 and the 16"):
        oo.bestofn_curve({"proxy": scores, "gold": scores}, [1, 32])


# ----- the functional forms, fitted -----

D = torch.linspace(0.0, 3.0, 25, dtype=torch.float64)


@pytest.mark.parametrize("a,b", [(1.2, 0.4), (0.5, -0.1), (2.0, 1.0)])
def test_fit_bestofn_recovers_known_coefficients(a, b):
    fit = oo.fit_bestofn(D, oo.bestofn_form(D, a, b))
    assert fit["a"] == pytest.approx(a, abs=1e-9) and fit["b"] == pytest.approx(b, abs=1e-9)
    assert fit["rmse"] < 1e-9 and len(fit["fitted"]) == len(D) and fit["form"] == "d(a - b d)"


@pytest.mark.parametrize("a,b", [(1.0, 0.5), (0.3, -0.2), (2.5, 1.5)])
def test_fit_rl_recovers_known_coefficients(a, b):
    fit = oo.fit_rl(D, oo.rl_form(D, a, b))
    assert fit["a"] == pytest.approx(a, abs=1e-9) and fit["b"] == pytest.approx(b, abs=1e-9)
    assert fit["rmse"] < 1e-9 and fit["form"] == "d(a - b log d)"


def test_fits_recover_coefficients_through_noise():
    gen = torch.Generator().manual_seed(0)
    d = torch.linspace(0.05, 4.0, 400, dtype=torch.float64)
    noise = 0.05 * torch.randn(400, generator=gen, dtype=torch.float64)
    bon = oo.fit_bestofn(d, oo.bestofn_form(d, 1.0, 0.3) + noise)
    assert bon["a"] == pytest.approx(1.0, abs=0.03) and bon["b"] == pytest.approx(0.3, abs=0.01)
    assert bon["rmse"] == pytest.approx(0.05, rel=0.15)
    rl = oo.fit_rl(d, oo.rl_form(d, 0.8, 0.6) + noise)
    assert rl["a"] == pytest.approx(0.8, abs=0.03) and rl["b"] == pytest.approx(0.6, abs=0.03)


def test_fit_peaks():
    assert oo.peak_of(oo.fit_bestofn(D, oo.bestofn_form(D, 1.2, 0.4))) == pytest.approx(1.5)  # a / 2b
    assert oo.peak_of(oo.fit_rl(D, oo.rl_form(D, 1.0, 0.5))) == pytest.approx(math.e)  # exp(a/b - 1)
    assert oo.peak_of(oo.fit_bestofn(D, oo.bestofn_form(D, 1.0, -0.1))) is None  # never turns down
    # the fitted form's maximum really is there
    grid = torch.linspace(0.01, 3.0, 3000, dtype=torch.float64)
    assert grid[oo.rl_form(grid, 1.0, 0.5).argmax()].item() == pytest.approx(math.e, abs=0.01)


def test_rl_form_is_zero_at_zero():
    assert oo.rl_form([0.0], 1.0, 2.0).tolist() == [0.0]
    assert oo.bestofn_form([0.0], 1.0, 2.0).tolist() == [0.0]


@pytest.mark.parametrize("fit", [oo.fit_bestofn, oo.fit_rl])
def test_fits_reject_bad_input(fit):
    with pytest.raises(ValueError, match="same length"):
        fit([0.1, 0.2, 0.3], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        fit([0.1, 0.2, float("nan")], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="negative"):
        fit([-0.1, 0.2, 0.3], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="two points"):
        fit([0.0, 0.5], [0.0, 1.0])  # only one d > 0
    with pytest.raises(ValueError, match="two points"):
        fit([0.5, 0.5, 0.5], [1.0, 1.1, 0.9])  # one distinct d


# ----- smoothing a PPO log -----

def fake_log(n=21):
    return [{"update": u, "proxy_reward": 0.1 * u, "gold_reward": 1.0 + 0.1 * u - 0.01 * u * u, "kl": 0.5 * u,
             "reply_length": 10.0} for u in range(n)]


def test_smooth_log_starts_at_the_reference_and_averages_windows():
    rows = oo.smooth_log(fake_log(21), window=10)
    assert [r["update"] for r in rows] == [0, 10, 20]
    assert rows[0]["kl"] == 0 and rows[0]["gold_gain"] == 0 and rows[0]["proxy_gain"] == 0
    assert rows[1]["kl"] == pytest.approx(0.5 * 5.5) and rows[1]["sqrt_kl"] == pytest.approx(math.sqrt(2.75), abs=1e-4)
    assert rows[2]["proxy_gain"] == pytest.approx(0.1 * 15.5)
    with pytest.raises(ValueError, match="window"):
        oo.smooth_log(fake_log(), window=0)
    with pytest.raises(ValueError, match="empty"):
        oo.smooth_log([])


def test_smooth_log_clamps_negative_kl_estimates():
    log = fake_log(3)
    log[1]["kl"] = log[2]["kl"] = -0.2  # the k1 estimate of a nearly unchanged policy can dip below 0
    assert oo.smooth_log(log, window=2)[1]["sqrt_kl"] == 0.0


# ----- tiny end-to-end runs -----

@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """A tiny policy and a tiny reward model with the course tokenizer, saved: (policy path, rm path)."""
    from rlhf_lessons.models import load_tokenizer
    from rlhf_lessons.reward import init_reward_head

    tok = load_tokenizer("base")
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(tiny_config(tok, n_layer=1, n_embd=32, n_head=2)).eval()
    save_checkpoint(policy, tok, root / "policy", {"stage": "test"})
    config = tiny_config(tok, n_layer=1, n_embd=32, n_head=2)
    config.num_labels = 1
    rm = GPT2ForSequenceClassification(config).eval()
    init_reward_head(rm)
    rm.config.reward_gain, rm.config.reward_bias = 1.0, 0.0
    save_checkpoint(rm, tok, root / "rm", {"stage": "rm"})
    return root / "policy", root / "rm"


def test_bestofn_sweep_tiny(tiny_pair):
    policy, rm = tiny_pair
    out = oo.bestofn_sweep(str(policy), str(rm), n_list=[4, 1, 2], n_requests=6, max_new_tokens=6, progress=False)
    assert [r["n"] for r in out["rows"]] == [1, 2, 4] and out["samples_per_request"] == 4 and out["requests"] == 6
    assert [r["kl"] for r in out["rows"]] == pytest.approx([oo.bestofn_kl(n) for n in (1, 2, 4)], abs=1e-5)
    proxies = [r["proxy"] for r in out["rows"]]
    assert proxies == sorted(proxies)  # picking by the proxy never lowers the proxy
    assert set(out["fit_gold"]) == {"form", "a", "b", "rmse", "peak_d"}
    json.dumps(out)
    again = oo.bestofn_sweep(str(policy), str(rm), n_list=[1, 2, 4], n_requests=6, max_new_tokens=6, progress=False)
    assert again["rows"] == out["rows"]  # seeded


def test_cli_bestofn_prints_json_last(tiny_pair, capsys):
    policy, rm = tiny_pair
    code = cli.main(["bestofn", "--policy", str(policy), "--reward", str(rm), "--n-list", "1,2", "--requests", "4",
                     "--max-new-tokens", "5"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["command"] == "bestofn" and [r["n"] for r in summary["rows"]] == [1, 2]
    for row in summary["rows"]:
        assert {"proxy", "gold", "kl"} <= set(row)


@pytest.mark.parametrize("bad", ["1,x", "0,2", ""])
def test_cli_bestofn_refuses_a_bad_n_list(bad, capsys):
    assert cli.main(["bestofn", "--n-list", bad]) == 2
    assert "n-list" in capsys.readouterr().err


def test_ppo_overoptimization_tiny(tiny_pair, tmp_path):
    policy, rm = tiny_pair
    cfg = oo.overopt_config(updates=3, batch_size=8, max_new_tokens=6, epochs=1, minibatches=2)
    assert cfg.kl_coef == 0.0
    out = oo.ppo_overoptimization(str(policy), str(rm), cfg=cfg, out=tmp_path / "ppo", window=2)
    assert [r["update"] for r in out["curve"]] == [0, 2]
    assert out["start"]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert {"peak", "final", "gold_fell_from_peak", "proxy_rose_after_gold_peak"} <= set(out)
    assert (tmp_path / "ppo" / "log.json").exists()
    json.dumps(out)


def test_plot_overoptimization_draws_both_methods():
    d = torch.linspace(0, 2, 5)
    rows = [{"n": 2 ** i, "sqrt_kl": x, "proxy_gain": x, "gold_gain": x * (1 - x / 2)}
            for i, x in enumerate(d.tolist())]
    bon = {"rows": rows, "fit_gold": {"a": 1.0, "b": 0.5}, "fit_proxy": {"a": 1.0, "b": 0.0}}
    ppo_run = {"curve": [{k: v for k, v in r.items() if k != "n"} for r in rows], "fit_gold": {"a": 1.0, "b": 0.5}}
    fig = oo.plot_overoptimization(bon, ppo_run)
    assert len(fig.axes) == 2
    assert len(oo.plot_overoptimization(bestofn=bon).axes) == 1
    with pytest.raises(ValueError, match="bestofn="):
        oo.plot_overoptimization()


def test_experiment_results_live_in_the_workspace(fresh_workspace):
    assert oo.read_result("overopt") is None
    path = oo.write_result("overopt", {"x": 1})
    assert path == fresh_workspace / "experiments" / "overopt.json"
    assert oo.read_result("overopt") == {"x": 1}


# ----- the default run's outcome -----

@pytest.mark.slow
def test_unleashed_ppo_overoptimizes_and_bestofn_does_too(default_run, tmp_path):
    """The experiment's default settings, from the session's default SFT and reward model: with the leash off the
    proxy keeps rising while gold peaks early and then falls; best-of-n, picking by the same proxy, raises the
    proxy at every n. Measured (seed 0, 1 thread): gold 1.84 at the start, 2.12 at its peak (update 10), -1.14 at
    the end, while the proxy climbs -0.17 -> 0.22 -> 1.99; best-of-n proxy -0.05 -> 0.49 -> 0.74 for n = 1, 4, 16."""
    sft, rm = str(default_run["root"] / "sft"), str(default_run["root"] / "rm")
    out = oo.ppo_overoptimization(sft, rm, out=tmp_path / "ppo")
    peak, final = out["peak"], out["final"]
    print("PPO over-optimisation", json.dumps({k: v for k, v in out.items() if k not in ("curve", "config")}))
    assert peak["update"] <= out["updates"] // 2, out  # gold peaks in the first half of the run ...
    assert final["gold"] < peak["gold"] - 0.5, out  # ... then falls
    assert final["proxy"] > peak["proxy"] + 0.3, out  # while the proxy keeps rising
    assert out["fit_proxy"]["b"] < out["fit_gold"]["b"], out
    bon = oo.bestofn_sweep(sft, rm, n_list=[1, 4, 16], n_requests=64)
    print("best-of-n", json.dumps(bon))
    # best-of-n on a reward model that learned something: gold improves at small n (picking at random would not)
    assert bon["rows"][1]["gold_gain"] > 0.1, bon
