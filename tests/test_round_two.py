"""Round two (round_two.py): feedback from a deployment trains the next model, measured per user population."""

import json
import random

import pytest

from rlhf_lessons import deploy, round_two, world
from rlhf_lessons.deploy import DeployConfig
from rlhf_lessons.errors import ConfigError
from rlhf_lessons.ppo import PPOConfig
from rlhf_lessons.reward import RewardConfig
from rlhf_lessons.round_two import RoundTwoConfig
from rlhf_lessons.sft import SFTConfig, train_sft


@pytest.fixture
def world_replier(monkeypatch):
    """The model's sampler replaced by the world's own replies, half right and half wrong (as in test_deploy)."""
    def sample(model, tokenizer, prompts, seed=0, **kwargs):
        rng = random.Random(seed)
        return [world.reply(world.find_request(p), rng.choice(["helpful", "wrong"]), rng) for p in prompts]

    monkeypatch.setattr("rlhf_lessons.sampling.sample_in_batches", sample)
    return (None, None)


@pytest.mark.parametrize("heard", ["unhappy", "cautious"])
def test_only_the_users_the_product_hears_leave_feedback(world_replier, heard):
    result = deploy.deploy(world_replier, DeployConfig(sessions=3000, heard=heard))
    rated = [s for s in result["sessions"] if s["feedback"]]
    assert len(rated) > 100
    if heard == "unhappy":
        assert all(s["unhappy"] for s in rated)
    else:
        assert {s["population"] for s in rated} == {"cautious"}
        assert result["summary"]["by_population"]["cautious"]["share_of_feedback"] == 1.0


def test_everyone_is_heard_by_default_and_the_draws_do_not_change(world_replier):
    """heard="everyone" leaves the deployment exactly as it was before the setting existed: same sessions."""
    a = deploy.deploy(world_replier, DeployConfig(sessions=500))
    b = deploy.deploy(world_replier, DeployConfig(sessions=500, heard="everyone"))
    assert a["labels"] == b["labels"]
    assert {s["population"] for s in a["sessions"] if s["feedback"]} == {"balanced", "cautious", "terse"}


@pytest.mark.parametrize("heard, message", [("nobody", "who leaves feedback"), ("verbose", "no verbose users")])
def test_a_product_that_hears_nobody_is_refused(heard, message):
    with pytest.raises(ConfigError, match=message):
        deploy.check_deploy_config(DeployConfig(heard=heard))


def test_sft_on_preferences_learns_each_chosen_reply_once():
    pairs = [{"prompt": "p1", "chosen": "a", "rejected": "b"}, {"prompt": "p1", "chosen": "a", "rejected": "c"},
             {"prompt": "p2", "chosen": "b", "rejected": "a"}]
    assert round_two.chosen_demonstrations(pairs) == [("p1", "a"), ("p2", "b")]


def test_matched_cost_counts_both_paths_sequences():
    reward_cfg, ppo_cfg = RewardConfig(epochs=3), PPOConfig(updates=10, batch_size=8, epochs=4)
    sequences = round_two.rlhf_sequences(50, reward_cfg, ppo_cfg)
    assert sequences == 2 * 50 * 3 + 10 * 8 * 4
    epochs = round_two.matched_sft_epochs(sequences, 90)
    assert epochs * 90 >= sequences > (epochs - 1) * 90  # enough, and not an epoch more


def test_served_weights_each_population_by_its_share_of_the_users():
    before = {"heldout": {"balanced": {"gold_mean": 1.0}, "cautious": {"gold_mean": 0.0}}}
    after = {"heldout": {"balanced": {"gold_mean": 0.5}, "cautious": {"gold_mean": 1.0}}}
    change = round_two.served(after, before, {"balanced": 0.8, "cautious": 0.2})["heldout"]
    assert change == {"balanced": -0.5, "cautious": 1.0, "product": pytest.approx(-0.2)}
    sentence = round_two.served_sentences({"heldout": change})[0]
    assert "better than the control: cautious +1.000" in sentence and "worse: balanced -0.500" in sentence
    assert "-0.200" in sentence


def test_the_verdict_follows_the_numbers():
    shares = {"balanced": 1.0}
    table = lambda g: {s: {"balanced": {"gold_mean": g[s]}} for s in g}  # noqa: E731
    rlhf, sft = table({"a": 1.0, "b": 0.0, "c": 0.5}), table({"a": 0.5, "b": 1.0, "c": 0.5})
    verdict = round_two.rlhf_vs_sft_verdict(rlhf, sft, {"a": 0.7, "b": 0.3, "c": 0.5}, shares)
    assert [verdict["by_split"][s]["better"] for s in "abc"] == ["RLHF", "SFT on chosen", "neither clearly"]
    assert (verdict["rlhf_better_on"], verdict["sft_better_on"]) == (1, 1)
    assert "on 1 of 3 evaluation splits, worse on 1" in verdict["sentence"]
    # higher gold but losing head to head is not a win
    mixed = round_two.rlhf_vs_sft_verdict(table({"a": 1.0}), table({"a": 0.5}), {"a": 0.4}, shares)
    assert mixed["by_split"]["a"]["better"] == "neither clearly"


def test_sft_refuses_fewer_than_two_demonstrations():
    with pytest.raises(ValueError, match="two at least"):
        train_sft(SFTConfig(epochs=1), examples=[("p", "r")])


def test_an_unknown_feedback_variant_is_refused_before_any_work():
    with pytest.raises(ValueError, match="unknown feedback variants"):
        round_two.run_round_two(variants=("loud users",))


def test_round_two_end_to_end_on_tiny_settings(tmp_path):
    """Deploy, reward model, PPO and SFT on the chosen replies, for two ways of hearing users: every figure the
    lesson reads is there, the checkpoints are written, and the summary is JSON."""
    from rlhf_lessons.ppo import train_ppo
    from rlhf_lessons.reward import run_reward_stage

    sft = train_sft(SFTConfig(n_demonstrations=40, epochs=1, batch_size=8), out_dir=tmp_path / "sft")["out"]
    run_reward_stage(n=48, init=sft, out=tmp_path / "rm", cfg=RewardConfig(n_pairs=48, n_heldout=16, epochs=1),
                     use_store=False, progress=False)
    train_ppo(PPOConfig(updates=1, batch_size=8, max_new_tokens=12), policy=sft, reward=str(tmp_path / "rm"),
              out_dir=tmp_path / "ppo")
    cfg = RoundTwoConfig(deploy=DeployConfig(sessions=300, feedback_rate=0.5, max_new_tokens=12),
                         reward=RewardConfig(n_pairs=0, n_heldout=16, epochs=1),
                         ppo=PPOConfig(updates=1, batch_size=8, max_new_tokens=12), eval_n=10, original_pairs=28)
    summary = round_two.run_round_two(cfg, round_one=str(tmp_path / "ppo"), round_one_rm=str(tmp_path / "rm"),
                                      sft=sft, out=tmp_path / "r2", variants=("as deployed", "cautious only"))
    json.dumps(summary)
    assert json.loads((tmp_path / "r2.json").read_text())["runs"].keys() == summary["runs"].keys()
    main = summary["runs"]["as deployed"]
    assert main["trained"] and main["pairs"] > 0
    assert (tmp_path / "r2" / "as_deployed" / "ppo" / "model.safetensors").exists()
    for split in ("heldout", "unseen-phrasing", "unseen-subject"):
        assert set(main["served"][split]) == {"balanced", "cautious", "terse", "product"}
        assert 0 <= main["yardstick"][split]["cautious"]["win_rate"] <= 1
    compared = main["sft_on_chosen"]
    assert compared["cost"]["sft_sequences"] >= compared["cost"]["rlhf_sequences"]
    assert compared["verdict"]["sentence"].startswith("On the same labels at matched cost")
    assert 0 <= main["taste"]["refuses_alarming"] <= 1 and 0 <= summary["control"]["taste"]["prefers_terse"] <= 1
    heard = summary["runs"]["cautious only"]["feedback"]["by_population"]
    assert heard["cautious"]["share_of_feedback"] == 1.0
    # the mixed run: the same users' pairs, and one ranking of 8 (28 pairs) of the original raters
    mixed = summary["runs"][round_two.mixed_name("as deployed", 28)]
    assert mixed["pairs"] == main["pairs"] and mixed["original_pairs"] == 28
    fresh = mixed["reward_model"]["fresh_pairs"]  # a ranking's tied replies make no pair
    assert 0 < fresh <= 28 and main["reward_model"]["fresh_pairs"] == 0
    assert mixed["reward_model"]["pairs"] == main["reward_model"]["pairs"] + fresh
    assert set(mixed["served"]["unseen-subject"]) == {"balanced", "cautious", "terse", "product"}
    assert json.loads((tmp_path / "r2.json").read_text())["runs"].keys() == summary["runs"].keys()


def test_the_commands_of_round_two(tmp_path, monkeypatch, capsys):
    """deploy --heard/--compare-rate reach the deployment; sft --chosen trains on a pair file's chosen replies;
    experiment round-two refuses a flag it would ignore, before any work."""
    from rlhf_lessons import cli

    seen = {}
    monkeypatch.setattr(deploy, "deploy", lambda model, cfg, **kw: seen.update(cfg=cfg) or {
        "labels": [], "stored": 0, "summary": {}})
    assert cli.main(["deploy", "--model", "base", "--heard", "cautious", "--compare-rate", "0.5",
                     "--store", str(tmp_path / "p.sqlite")]) == 0
    assert (seen["cfg"].heard, seen["cfg"].compare_rate) == ("cautious", 0.5)
    assert cli.main(["deploy", "--model", "base", "--heard", "nobody"]) == 2
    capsys.readouterr()

    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": r.prompt, "chosen": world.reply(r, "helpful", random.Random(i)), "rejected": "no."}
            for i, r in enumerate(world.requests("train", "fact")[:12])]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert cli.main(["sft", "--chosen", str(pairs), "--epochs", "1", "--out", str(tmp_path / "sft")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_examples"] == 12 - 1  # one held out to measure

    monkeypatch.setattr(round_two, "run_round_two", lambda *a, **k: pytest.fail("ran despite a refused flag"))
    assert cli.main(["experiment", "round-two", "--no-reuse"]) == 2
    assert "bias and mixture sweeps only" in capsys.readouterr().err


def test_the_taste_probes_tell_the_populations_apart():
    """The probes ask what the gold raters themselves disagree on: cautious users prefer refusing an alarming
    request, no other population does; nobody but terse users likes the bare answer."""
    tastes = {p: round_two.gold_taste(p, n=60) for p in ("balanced", "cautious", "terse")}
    assert tastes["cautious"]["refuses_alarming"] == 1.0
    assert tastes["balanced"]["refuses_alarming"] == tastes["terse"]["refuses_alarming"] == 0.0
    assert tastes["balanced"]["prefers_terse"] == tastes["cautious"]["prefers_terse"] == 0.0
    requests, asked, other = round_two.taste_probes(n=5)["refuses_alarming"]
    assert all(r.kind == "alarming" for r in requests) and asked != other


def test_a_pair_with_an_empty_reply_is_left_out_and_counted(monkeypatch, tmp_path):
    """A model that says nothing gets thumbed down; the pair file training reads holds only pairs of two texts."""
    def sample(model, tokenizer, prompts, seed=0, **kwargs):
        rng = random.Random(seed)
        return [rng.choice(["", world.reply(world.find_request(p), "helpful", rng)]) for p in prompts]

    monkeypatch.setattr("rlhf_lessons.sampling.sample_in_batches", sample)
    cfg = DeployConfig(sessions=400, feedback_rate=0.8, compare_rate=0.8)
    feedback = round_two.collect_feedback((None, None), cfg, tmp_path, "empty replies")
    assert feedback["dropped"] > 0 and feedback["pairs"]
    assert all(p["chosen"].strip() and p["rejected"].strip() for p in feedback["pairs"])


def test_experiment_round_two_takes_its_sizes_and_variants_from_the_command_line(monkeypatch, capsys):
    """--sessions, --updates, --original-pairs and --variants reach run_round_two; a bad variant, or these flags on
    another experiment, are refused before any work."""
    from rlhf_lessons import cli

    seen = {}
    monkeypatch.setattr(round_two, "run_round_two", lambda cfg, variants: seen.update(cfg=cfg, variants=variants) or {})
    monkeypatch.setattr(round_two, "short_summary", lambda summary: {"ran": True})
    assert cli.main(["experiment", "round-two", "--sessions", "300", "--updates", "2", "--original-pairs", "500",
                     "--variants", "representative, cautious only", "--seed", "3"]) == 0
    cfg = seen["cfg"]
    assert (cfg.deploy.sessions, cfg.ppo.updates, cfg.original_pairs, cfg.seed) == (300, 2, 500, 3)
    assert seen["variants"] == ("representative", "cautious only")
    assert cli.main(["experiment", "round-two"]) == 0  # the defaults: the full-size experiment
    default = round_two.RoundTwoConfig()
    assert (seen["cfg"].deploy.sessions, seen["cfg"].ppo.updates, seen["cfg"].original_pairs) == (
        default.deploy.sessions, default.ppo.updates, 0)
    assert seen["variants"] == tuple(round_two.FEEDBACK_VARIANTS)
    capsys.readouterr()

    monkeypatch.setattr(round_two, "run_round_two", lambda *a, **k: pytest.fail("ran despite a refused flag"))
    assert cli.main(["experiment", "round-two", "--variants", "loud users"]) == 2
    assert "--variants must name" in capsys.readouterr().err
    monkeypatch.setattr("rlhf_lessons.rater_bias.run_bias_experiment", lambda **k: pytest.fail("ran"))
    assert cli.main(["experiment", "bias", "--sessions", "300"]) == 2
    assert "apply to round-two only" in capsys.readouterr().err


def test_the_variants_reward_models_are_measured_on_the_same_pairs_sampled_once(tmp_path, monkeypatch):
    """run_reward_stage(measured_on=...) keeps the held-out labels and the reference replies of the first run and
    reuses them: a second run samples nothing and measures exactly what sampling again would have."""
    from rlhf_lessons import labeling, sampling
    from rlhf_lessons.reward import run_reward_stage

    sft = train_sft(SFTConfig(n_demonstrations=40, epochs=1, batch_size=8), out_dir=tmp_path / "sft")["out"]
    cfg = RewardConfig(n_pairs=0, n_heldout=16, epochs=1)
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": r.prompt, "chosen": world.reply(r, "helpful", random.Random(i)), "rejected": "no."}
            for i, r in enumerate(world.requests("train", "fact")[:24])]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))

    def run(measured_on=None):
        return run_reward_stage(prefs=[pairs], n=0, init=sft, out=tmp_path / "rm", cfg=cfg, use_store=False,
                                progress=False, measured_on=measured_on)["heldout_expected_accuracy"]

    measured_on = {}
    first = run(measured_on)
    assert len(measured_on["heldout_labels"]) == 16 and len(measured_on["reference"]) == 512
    resampled = run()
    monkeypatch.setattr(labeling, "sample_pairs", lambda *a, **k: pytest.fail("sampled the held-out pairs again"))
    monkeypatch.setattr(sampling, "sample_in_batches", lambda *a, **k: pytest.fail("sampled the reference again"))
    assert run(measured_on) == first == resampled
    with pytest.raises(ValueError, match="pass a fresh dict"):  # another seed would sample other pairs
        run_reward_stage(prefs=[pairs], n=0, init=sft, out=tmp_path / "rm", cfg=cfg, use_store=False, seed=1,
                         progress=False, measured_on=measured_on)


@pytest.mark.slow
def test_experiment_round_two_runs_from_the_command_line_on_tiny_settings(fresh_workspace, capsys):
    """`rlhf-lessons experiment round-two` end to end in a workspace with a (tiny) round one: deploys, trains the
    variant asked for and its mixed run, writes experiments/round_two.json, and prints its summary as JSON last."""
    from rlhf_lessons import cli
    from rlhf_lessons.ppo import train_ppo
    from rlhf_lessons.reward import run_reward_stage

    sft = train_sft(SFTConfig(n_demonstrations=40, epochs=1, batch_size=8), out_dir=fresh_workspace / "sft")["out"]
    run_reward_stage(n=48, init=sft, out=fresh_workspace / "rm", cfg=RewardConfig(n_pairs=48, n_heldout=16, epochs=1),
                     use_store=False, progress=False)
    train_ppo(PPOConfig(updates=1, batch_size=8, max_new_tokens=12), policy=sft, reward=str(fresh_workspace / "rm"),
              out_dir=fresh_workspace / "ppo")
    capsys.readouterr()
    assert cli.main(["experiment", "round-two", "--sessions", "400", "--updates", "1", "--eval-n", "8",
                     "--original-pairs", "28", "--variants", "as deployed"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mixed = round_two.mixed_name("as deployed", 28)
    assert list(printed["runs"]) == ["as deployed", mixed]
    assert "rlhf_vs_sft" in printed["runs"]["as deployed"]
    saved = json.loads((fresh_workspace / "experiments" / "round_two.json").read_text())
    assert saved["config"]["deploy"]["sessions"] == 400 and saved["runs"][mixed]["trained"]
