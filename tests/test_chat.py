"""The chat widget: any request gets replies from each model; the world's requests are judged, others said so."""

import pytest

from rlhf_lessons import chat, gold, world


@pytest.fixture
def models(tiny_model, base_tokenizer):
    return {"tiny": (tiny_model, base_tokenizer)}


def test_requests_match_up_to_case_spacing_and_end_punctuation():
    egg = world.find_request("How long should I boil an egg?")
    assert chat.match_request("How long should I boil an egg?") == (egg, [])
    assert chat.match_request("  how long should i boil an EGG ") == (egg, [])
    request, closest = chat.match_request("How long should I boil a duck egg?")
    assert request is None and "How long should I boil an egg?" in closest


def test_unknown_words_are_the_ones_the_world_never_writes():
    assert chat.unknown_words("How long should I boil an egg?") == []
    assert chat.unknown_words("How long should I boil a platypus egg, platypus?") == ["platypus"]


def test_a_request_of_the_world_is_judged_by_the_gold_rater(models):
    answer = chat.ask("how long should I boil an egg", models, seed=3, max_new_tokens=8)
    out = answer["replies"]["tiny"]
    request = world.find_request("How long should I boil an egg?")
    assert answer["request"] == request
    assert out["verdict"]["gold"] == pytest.approx(gold.gold_score(request, out["reply"]))
    assert out["verdict"]["behaviour"] == gold.behaviour(request, out["reply"])
    assert chat.ask("how long should I boil an egg", models, seed=3, max_new_tokens=8) == answer  # seeded
    assert "training request" in chat.describe_request(answer)


def test_a_request_the_world_does_not_know_gets_replies_and_says_it_cannot_be_judged(models):
    answer = chat.ask("Write me a sonnet about databases", models, max_new_tokens=6)
    assert answer["request"] is None and answer["replies"]["tiny"]["verdict"] is None
    assert isinstance(answer["replies"]["tiny"]["reply"], str)
    assert "cannot judge" in chat.describe_request(answer)
    assert answer["unknown_words"] == ["sonnet", "databases"]
    assert any("not judged" in line for line in chat.summary_lines(answer))


def test_everything_shown_is_escaped(models):
    answer = chat.ask("<script>alert(1)</script> \u202eegg", models, max_new_tokens=4)
    answer["replies"]["tiny"]["reply"] = "<img src=x onerror=alert(1)>"
    page = chat.render(answer, missing={"<b>ppo</b>": "not trained <i>yet</i>"})
    assert "<script>" not in page and "<img" not in page and "<b>ppo" not in page and "<i>yet" not in page
    assert "\u202e" not in page and "\\u202e" in page


@pytest.mark.parametrize("text, says", [("   ", "empty"), ("x" * 400, "shorten")])
def test_bad_text_gets_a_clear_message(models, text, says):
    with pytest.raises(ValueError, match=says):
        chat.ask(text, models)


def test_the_widget_asks_on_click_samples_anew_and_shows_errors_in_place(models):
    widget = chat.ChatWidget(models=models, text="How long should I boil an egg?")
    first = widget.last
    assert "gold" in widget.html.value and first["request"] is not None
    widget.ask_button.click()
    assert widget.seed == 2 and widget.last is not first
    widget.text.value = ""
    widget.ask_button.click()
    assert "empty" in widget.html.value


def test_missing_checkpoints_are_named_with_the_lesson_that_makes_them(fresh_workspace):
    loaded, missing = chat.load_models(("base", "sft", "ppo"))
    assert list(loaded) == ["base"]
    assert "lesson 02" in missing["sft"] and "lesson 05" in missing["ppo"]
