import random

import pytest

from rlhf_lessons import world


def test_every_kind_is_present_in_train_and_heldout_and_every_unseen_split_but_greetings():
    for kind in world.KIND_NAMES:
        assert world.requests("train", kind), kind
        assert world.requests("heldout", kind), kind
        if kind != "greeting":
            assert world.requests("unseen-phrasing", kind), kind
            assert world.requests("unseen-subject", kind), kind


def test_splits_never_share_a_prompt():
    prompts = {split: {r.prompt for r in world.requests(split)} for split in world.SPLITS}
    for a in world.SPLITS:
        assert prompts[a], a
        for b in world.SPLITS:
            assert a == b or not prompts[a] & prompts[b], (a, b)


def _uses(prompt, part):
    return part.strip().lower().rstrip("?!.,:") in prompt.lower()


def test_unseen_phrasings_use_an_opener_or_frame_that_no_training_text_uses():
    """Every unseen-phrasing prompt holds an UNSEEN opener or frame; no prompt that trains anything (train, or the
    pretraining-only prompts) holds one."""
    unseen_parts = [o for o in world.UNSEEN_OPENERS] + [f.replace("{q}", "").strip() for f in world.UNSEEN_FRAMES]
    for r in world.requests("unseen-phrasing"):
        assert any(_uses(r.prompt, part) for part in unseen_parts), r.prompt
    for split in ("train", "pretrain", "heldout", "unseen-subject"):
        for r in world.requests(split):
            assert not any(_uses(r.prompt, part) for part in unseen_parts), (split, r.prompt)


def test_unseen_subjects_appear_only_in_pretraining_and_their_evaluation_split():
    for kind, subjects in world.UNSEEN_SUBJECTS.items():
        for subject in subjects:
            splits = {r.split for r in world.requests(kind=kind) if r.subject == subject}
            assert splits == {"pretrain", "unseen-subject"}, (kind, subject, splits)
    trained = {(r.kind, r.subject) for r in world.requests("train")}
    assert not trained & {(k, s) for k, subjects in world.UNSEEN_SUBJECTS.items() for s in subjects}
    for request, _ in world.demonstrations():
        assert request.subject not in world.UNSEEN_SUBJECTS[request.kind]


def test_the_grammar_asks_each_subject_in_many_ways():
    egg = [r.prompt for r in world.requests("train", "fact") if r.subject == "egg"]
    assert len(egg) > 50
    openers = {o for o in world.TRAIN_OPENERS if o and any(p.lower().startswith(o.lower()) for p in egg)}
    assert len(openers) >= 6
    assert any(p == p.lower() for p in egg) and any(not p.endswith("?") for p in egg)  # casual forms


def test_is_evaluation_prompt_marks_every_split_but_train():
    assert not world.is_evaluation_prompt(world.requests("train")[0].prompt)
    for split in ("heldout", "unseen-phrasing", "unseen-subject", "pretrain"):
        assert world.is_evaluation_prompt(world.requests(split)[0].prompt)
    assert not world.is_evaluation_prompt("a prompt from elsewhere")


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
    assert {r.split for r, _, _ in dialogues} == {"train", "pretrain"}  # pretrain: the unseen subjects


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
