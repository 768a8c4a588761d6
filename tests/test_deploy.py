"""The deployed model's users and their feedback (deploy.py): who is heard, what is stored, and bad settings."""

import json
import random

import pytest

from rlhf_lessons import deploy, gold, world
from rlhf_lessons.deploy import DeployConfig
from rlhf_lessons.errors import ConfigError
from rlhf_lessons.store import PreferenceStore


@pytest.fixture
def world_replier(monkeypatch):
    """Replace the model's sampler with the world's own replies, half right and half wrong, so that a test sees
    satisfied and unhappy users in known proportions without training a model."""
    def sample(model, tokenizer, prompts, seed=0, **kwargs):
        rng = random.Random(seed)
        return [world.reply(world.find_request(p), rng.choice(["helpful", "wrong"]), rng) for p in prompts]

    monkeypatch.setattr("rlhf_lessons.sampling.sample_in_batches", sample)
    return (None, None)  # what deploy() takes for a loaded (model, tokenizer) pair


def test_unhappy_users_are_heard_more_often_by_their_factor(world_replier):
    for factor in (1.0, 4.0):
        result = deploy.deploy(world_replier, DeployConfig(sessions=6000, feedback_rate=0.1, unhappy_factor=factor))
        sessions = result["sessions"]
        rate = {mood: sum(bool(s["feedback"]) for s in sessions if s["unhappy"] == mood)
                / sum(s["unhappy"] == mood for s in sessions) for mood in (True, False)}
        assert rate[False] == pytest.approx(0.1, abs=0.02)
        assert rate[True] == pytest.approx(0.1 * factor, abs=0.03)
        summary = result["summary"]
        if factor > 1:  # the feedback over-represents what went wrong
            assert summary["unhappy_share_of_feedback"] > summary["unhappy_share_of_sessions"] + 0.15


def test_the_product_mix_of_users_and_kinds_is_the_one_asked_for_and_only_training_requests_are_sent(world_replier):
    cfg = DeployConfig(sessions=3000, users="cautious:0.7,terse:0.3", kinds="fact:0.5,harmful:0.5")
    result = deploy.deploy(world_replier, cfg)
    train = {r.prompt for r in world.requests("train")}
    assert all(s["request"].prompt in train for s in result["sessions"])
    by_population = result["summary"]["by_population"]
    assert set(by_population) == {"cautious", "terse"}
    assert by_population["cautious"]["share_of_sessions"] == pytest.approx(0.7, abs=0.03)
    kinds = [s["request"].kind for s in result["sessions"]]
    assert set(kinds) == {"fact", "harmful"} and kinds.count("fact") / len(kinds) == pytest.approx(0.5, abs=0.03)


def test_feedback_is_stored_by_the_lesson_03_rules(world_replier, tmp_path):
    store = PreferenceStore(tmp_path / "product.sqlite")
    cfg = DeployConfig(sessions=800, feedback_rate=0.5, regenerate_rate=0.6, correction_rate=0.3)
    result = deploy.deploy(world_replier, cfg, store=store, name="round-1")
    sessions = result["sessions"]
    compared = [s for s in sessions if s["feedback"] == "comparison" and s["reply"] != s["second_reply"]]
    assert compared and all(not s["thumbs"] for s in compared)
    assert len(result["labels"]) == sum(len(s["thumbs"]) + (s["feedback"] == "correction") for s in sessions) + len(
        compared)
    distinct = {tuple(sorted((k, str(v)) for k, v in label.items() if k != "meta")) for label in result["labels"]}
    assert len(store) == result["stored"] == len(distinct)  # a regenerated reply that came out the same, rated alike
    corrected = [s for s in sessions if s["feedback"] == "correction"]
    assert corrected and all(s["unhappy"] for s in corrected)  # satisfied users do not rewrite replies
    assert all(s["edited"] != s["reply"] for s in corrected)  # an edit that changes nothing is no pair
    for s in corrected:  # the edit is what this user's population prefers to the original
        assert gold.gold_score(s["request"], s["edited"], s["population"]) >= gold.gold_score(
            s["request"], s["reply"], s["population"])
    assert deploy.corrections(store) == result["corrections"] == [(s["request"].prompt, s["edited"])
                                                                  for s in corrected]
    # thumbs make pairs only within one user's ratings of one request: a regenerated reply rated otherwise
    differing = [s for s in sessions if len(set(s["thumbs"])) == 2 and s["reply"] != s["second_reply"]]
    pairs = store.pairs()
    assert len(pairs) == len(corrected) + len(differing) + len(compared) and differing
    assert {p["rater"] for p in pairs} <= {s["user"] for s in sessions if s["feedback"]}


def test_a_user_asked_to_compare_picks_what_their_population_prefers(world_replier):
    """Every user who rates may be shown two replies (satisfied ones too, unlike regenerations and corrections):
    the choice follows the user's own gold rater, noisily, and the chosen reply becomes the pair's winner."""
    result = deploy.deploy(world_replier, DeployConfig(sessions=4000, feedback_rate=0.5, compare_rate=1.0))
    compared = [s for s in result["sessions"] if s["feedback"] == "comparison" and s["reply"] != s["second_reply"]]
    assert any(not s["unhappy"] for s in compared)
    agree = [s["choice"] == (0 if gold.gold_score(s["request"], s["reply"], s["population"])
                             > gold.gold_score(s["request"], s["second_reply"], s["population"]) else 1)
             for s in compared if gold.gold_score(s["request"], s["reply"], s["population"])
             != gold.gold_score(s["request"], s["second_reply"], s["population"])]
    assert len(agree) > 200 and 0.7 < sum(agree) / len(agree) < 0.99  # mostly their taste, not always
    assert result["summary"]["comparisons"] == sum(s["feedback"] == "comparison" for s in result["sessions"])


def test_a_deployment_reuses_replies_already_sampled_for_the_same_sessions(world_replier):
    cfg = DeployConfig(sessions=300)
    first = deploy.deploy(world_replier, cfg)
    again = deploy.deploy(world_replier, cfg, first_replies=[s["reply"] for s in first["sessions"]])
    assert again["labels"] == first["labels"]
    with pytest.raises(ValueError, match="299 first replies for 300 sessions"):
        deploy.deploy(world_replier, cfg, first_replies=[s["reply"] for s in first["sessions"]][:-1])


def test_a_seed_repeats_the_deployment(world_replier):
    first, again = (deploy.deploy(world_replier, DeployConfig(sessions=200, seed=3)) for _ in range(2))
    assert first["labels"] == again["labels"] and first["summary"] == again["summary"]
    assert deploy.deploy(world_replier, DeployConfig(sessions=200, seed=4))["labels"] != first["labels"]


def test_deploy_samples_from_a_real_model(tiny_model, base_tokenizer, tmp_path):
    result = deploy.deploy((tiny_model, base_tokenizer), DeployConfig(sessions=6, feedback_rate=1.0,
                                                                      max_new_tokens=4))
    assert len(result["sessions"]) == 6 and all(isinstance(s["reply"], str) for s in result["sessions"])
    path = deploy.write_sessions(result, tmp_path / "sessions.jsonl")
    assert len(path.read_text().splitlines()) == 6


@pytest.mark.parametrize("settings, says", [
    ({"users": "balanced:0.5,everyone:0.5"}, "NAME one of"),
    ({"users": "balanced:0.5,cautious:0.6"}, "add up to 1.1"),
    ({"users": "balanced:half"}, "must be a number"),
    ({"kinds": "fact:1.5,open:-0.5"}, "from 0 to 1"),
    ({"kinds": "fact"}, "NAME:SHARE"),
    ({"feedback_rate": 1.5}, "feedback_rate must be"),
    ({"unhappy_factor": 0.5}, "unhappy_factor must be >= 1"),
    ({"sessions": 0}, "sessions must be"),
    ({"correction_rate": float("nan")}, "correction_rate must be a finite number"),
])
def test_bad_settings_are_refused_before_any_sampling(settings, says, monkeypatch):
    monkeypatch.setattr("rlhf_lessons.sampling.sample_in_batches",
                        lambda *a, **k: pytest.fail("sampled despite bad settings"))
    with pytest.raises(ConfigError, match=says):
        deploy.deploy((None, None), DeployConfig(**settings))


def test_the_deploy_command_stores_feedback_apart_and_exports_its_pairs(fresh_workspace, tmp_path, capsys):
    from rlhf_lessons import cli

    out = tmp_path / "product-pairs.jsonl"
    argv = ["deploy", "--model", "base", "--sessions", "30", "--feedback-rate", "1", "--max-new-tokens", "8",
            "--out", str(out)]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["store"] == str(fresh_workspace / "product.sqlite")  # not the learner's preferences.sqlite
    assert summary["sessions"] == 30 and summary["with_feedback"] == 30 and summary["labels"] >= 30
    assert summary["pairs_exported"] == summary["pairs_in_store"] == len(out.read_text().splitlines())
    assert cli.main(["deploy", "--model", "base", "--unhappy-factor", "0.5"]) == 2  # refused by argparse
    assert cli.main(["deploy", "--model", "base", "--feedback-rate", "1.5"]) == 2  # refused before the model loads
    assert "feedback_rate must be >= 0 and <= 1" in capsys.readouterr().err
