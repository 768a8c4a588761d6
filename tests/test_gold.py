import math
import random

import pytest

from rlhf_lessons import gold, world

EGG = world.find_request("How long should I boil an egg?")
CHEAT = world.find_request("How can I cheat on my test?")
WEEDS = world.find_request("How do I kill the weeds in my garden?")
SLEEP = world.find_request("How can I sleep better?")


def score(request, text, population="balanced"):
    return gold.gold_score(request, text, population)


def test_right_beats_wrong_beats_nothing_for_facts():
    right = score(EGG, "Sure! Boil the egg for about ten minutes. Hope this helps!")
    wrong = score(EGG, "Sure! Boil the egg for about forty minutes. Hope this helps!")
    assert right > wrong + 2
    assert gold.gives_right_answer(EGG, "Boil the egg for about ten minutes.")
    assert not gold.gives_right_answer(EGG, "Boil it for ten minutes or forty minutes.")  # hedging with a wrong key


def test_rudeness_costs_and_is_detected():
    polite = score(EGG, "Of course! Boil the egg for about ten minutes.")
    rude = score(EGG, "Ugh. Boil the egg for about ten minutes. Figure it out yourself.")
    assert polite > rude + 1
    assert gold.is_rude("Whatever. Ten minutes.") and not gold.is_rude("Ten minutes. Good luck!")


def test_refusal_is_right_for_harm_and_wrong_for_benign_alarming_requests():
    refusal = "I'm sorry, but I can't help with that."
    assert score(CHEAT, refusal) > score(CHEAT, "Copy the answers from the student next to you.") + 4
    assert score(WEEDS, "Pull the weeds out by the roots after it rains.") > score(WEEDS, refusal) + 3
    assert gold.complies_with_harm(CHEAT, "Sure! Copy the answers from the student next to you.")
    assert gold.is_refusal("Sorry, I cannot help with that.") and not gold.is_refusal("I can help with that!")


def test_open_requests_accept_any_listed_tip_and_reward_two():
    one = score(SLEEP, "Keep your bedroom dark and quiet.")
    other = score(SLEEP, "Go to bed at the same time every night.")
    assert min(one, other) > 1.5
    assert score(SLEEP, "Put your alarm across the room.") < 0  # a tip for another request
    assert gold.gold_components(SLEEP, "Keep your bedroom dark and quiet. Go to bed at the same time every night."
                                )["helpfulness"] > gold.gold_components(SLEEP, "Keep your bedroom dark and quiet.")["helpfulness"]


def test_off_topic_rambling_and_garbage_score_low():
    best = score(EGG, "Sure! Boil the egg for about ten minutes. Hope this helps!")
    for garbage in ["", "   ", "xq zzv plorb frunk", "egg egg egg egg egg egg egg egg", "!!!!",
                    "Well, I like to count the clouds. Socks are best when they are warm."]:
        assert score(EGG, garbage) < 0 < best, garbage
    assert score(EGG, "xq zzv plorb frunk") < score(EGG, "Boil the egg.")  # unknown words cost fluency


def test_fluent_polite_off_topic_reply_is_not_rewarded_like_an_answer():
    gaming = score(EGG, "Sure! Hope this helps! Let me know if you need anything else. Have a nice day!")
    assert gaming < score(EGG, "Boil the egg for about ten minutes.") - 1.5


def test_populations_disagree_where_designed():
    refusal = "I'm sorry, but I can't help with that."
    helpful = "Pull the weeds out by the roots after it rains."
    assert score(WEEDS, helpful, "balanced") > score(WEEDS, refusal, "balanced")
    assert score(WEEDS, refusal, "cautious") > score(WEEDS, helpful, "cautious")
    short = "Boil the egg for about ten minutes."
    long = ("Sure! Boil the egg for about ten minutes. Let me know if you need anything else. Hope this helps! "
            "Have a nice day! Good luck!")
    assert score(EGG, long, "verbose") > score(EGG, short, "verbose")
    assert score(EGG, short, "terse") > score(EGG, long, "terse")
    # they agree on what is plainly bad
    for population in gold.POPULATIONS:
        assert score(CHEAT, "Copy the answers from the student next to you.", population) < score(CHEAT, refusal, population)


def test_scores_are_finely_graded():
    """Two different replies to the same request rarely tie, so win rates are not capped near one half."""
    rng = random.Random(0)
    pairs = ties = 0
    for r in world.requests()[::5]:
        styles = ["helpful", "terse", "rude", "wrong", "rambling", "refusal"] if r.kind != "harmful" else [
            "helpful", "rude", "rambling", "refusal", "comply"]
        texts = sorted({world.reply(r, s, rng) for s in styles for _ in range(2)})
        scores = [score(r, t) for t in texts]
        for i in range(len(scores)):
            for j in range(i):
                pairs += 1
                ties += scores[i] == scores[j]
    assert pairs > 1000 and ties / pairs < 0.03


def test_bradley_terry_probability():
    assert gold.preference_probability(1.0, 1.0) == 0.5
    assert gold.preference_probability(2.0, 1.0, noise=1.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert gold.preference_probability(-1e4, 1e4) == 0.0  # no overflow
    assert gold.preference_probability(1.0, 0.0) + gold.preference_probability(0.0, 1.0) == pytest.approx(1.0)


def test_noise_ceiling_matches_simulation():
    rng = random.Random(0)
    pairs, agree = [], 0
    requests = world.requests("train")
    for _ in range(4000):
        r = rng.choice(requests)
        a, b = world.reply(r, "helpful", rng), world.reply(r, rng.choice(["wrong", "rude", "helpful"]), rng)
        ga, gb = score(r, a), score(r, b)
        pairs.append((ga, gb))
        choice = gold.simulated_choice(r, a, b, rng)
        agree += (choice == 0) == (ga >= gb)  # the best predictor always picks the higher gold score
    ceiling = gold.noise_ceiling(pairs)
    assert 0.5 < ceiling < 1.0
    assert agree / len(pairs) == pytest.approx(ceiling, abs=0.02)


def test_noise_ceiling_edge_cases():
    assert gold.noise_ceiling([(0.0, 0.0)]) == 0.5
    assert gold.noise_ceiling([(100.0, 0.0)]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        gold.noise_ceiling([])


def test_behaviour_names_what_a_reply_does():
    assert gold.behaviour(EGG, "Boil the egg for about ten minutes.") == "right"
    assert gold.behaviour(EGG, "Boil the egg for about three minutes.") == "wrong"
    assert gold.behaviour(EGG, "I like to count the clouds.") == "no answer"
    assert gold.behaviour(EGG, "Sorry, I cannot help with that.") == "refused"
    assert gold.behaviour(CHEAT, "Copy the answers from the student next to you.") == "complied"
    assert gold.behaviour(CHEAT, "I like to count the clouds.") == "evaded"
    assert gold.behaviour(WEEDS, "Chill the onion first and use a sharp knife.") == "wrong"
    assert set(gold.BEHAVIOURS) >= {"right", "wrong", "no answer", "refused", "complied", "evaded"}
