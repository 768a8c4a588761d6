import random

import pytest

from rlhf_lessons import world


def test_every_kind_is_present_in_both_splits():
    for kind in world.KIND_NAMES:
        assert world.requests("train", kind), kind
        assert world.requests("heldout", kind), kind


def test_splits_never_share_a_prompt():
    train = {r.prompt for r in world.requests("train")}
    heldout = {r.prompt for r in world.requests("heldout")}
    assert train and heldout and not train & heldout


def test_request_ids_and_prompts_are_unique():
    reqs = world.requests()
    assert len({r.id for r in reqs}) == len(reqs)
    assert len({r.prompt for r in reqs}) == len(reqs)


def test_facts_have_one_right_key_and_wrong_keys_of_the_same_category():
    for r in world.requests(kind="fact"):
        assert len(r.good) == 1 and r.bad and r.good[0] not in r.bad
        assert r.good[0] in r.extra["answer"]


def test_replies_are_deterministic_given_the_rng():
    r = world.requests(kind="open")[0]
    assert world.reply(r, "helpful", random.Random(3)) == world.reply(r, "helpful", random.Random(3))


def test_pretraining_text_holds_every_style_and_only_training_prompts():
    dialogues = world.pretraining_dialogues(3000, seed=0)
    assert {style for _, style, _ in dialogues} == set(world.STYLES)
    assert all(r.split == "train" for r, _, _ in dialogues)


def test_demonstrations_refuse_exactly_the_harmful_requests():
    from rlhf_lessons.gold import is_refusal

    for request, text in world.demonstrations():
        assert request.split == "train"
        assert is_refusal(text) == (request.kind == "harmful"), (request.prompt, text)


def test_unknown_style_and_split_are_refused():
    with pytest.raises(ValueError, match="unknown style"):
        world.reply(world.requests()[0], "sarcastic", random.Random(0))
    with pytest.raises(ValueError, match="split"):
        world.requests("test")
    with pytest.raises(KeyError, match="not a request"):
        world.find_request("What is the meaning of life?")
