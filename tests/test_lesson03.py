"""Lesson 03's promises: the learner's export survives a re-run of the lesson, and the simulated classmates label
mostly benign-but-alarming requests, so that the cautious classmate's disagreement with balanced gold shows."""

import contextlib
import io
import re

import nbformat
import pytest

from rlhf_lessons import course, gold, labeling, world
from rlhf_lessons.errors import WorkspaceError
from rlhf_lessons.store import PreferenceStore

LESSON = course.NOTEBOOK_DIR / "03_feedback.ipynb"


def lesson_cell(marker):
    """The one code cell of lesson 03 whose source contains `marker`."""
    cells = [c for c in nbformat.read(LESSON, as_version=4).cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"lesson 03 should have one code cell with {marker!r}, found {len(cells)}"
    return cells[0]


def printed(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


# ----- the export -----

EXPORT = 'my_file = scratch / "my_labels.jsonl"'


def run_export_cell(workspace, store):
    """Run the lesson's export cell as the kernel would; returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(lesson_cell(EXPORT).source, {"env": {"workspace": workspace}, "store": store})
    return out.getvalue()


def comparison(store, prompt, choice="A"):
    store.add("comparison", prompt, ["Sure! Here you go.", "Go away."], {"choice": choice}, rater="learner-0a1b2c")


def test_a_second_run_of_the_export_keeps_the_learners_files(fresh_workspace):
    store = PreferenceStore()
    comparison(store, "first request")
    said = run_export_cell(fresh_workspace, store)
    my_file = fresh_workspace / "lesson03" / "my_labels.jsonl"
    assert str(my_file.resolve()) in said  # the full path, to find the file and send it
    first = my_file.read_text()
    received = fresh_workspace / "lesson03" / "from_a_classmate.jsonl"  # a learner's own file beside the export
    received.write_text(first)

    comparison(store, "second request")
    run_export_cell(fresh_workspace, store)  # the lesson runs again
    assert received.read_text() == first
    lines = my_file.read_text().splitlines()
    assert len(lines) == 2 and first.splitlines()[0] in lines  # rewritten from the store, nothing lost

    class Failing:  # the store cannot be read this time (locked, unplugged disk)
        def export_jsonl(self, path):
            raise WorkspaceError("the label store is busy")

    with pytest.raises(WorkspaceError):
        run_export_cell(fresh_workspace, Failing())
    assert my_file.read_text().splitlines() == lines  # a failed run leaves the last export as it was


def test_the_lesson_deletes_only_the_simulated_classmates_files():
    """No folder is wiped: what the lesson removes before a run are files it wrote itself, by name."""
    cells = [c.source for c in nbformat.read(LESSON, as_version=4).cells if c.cell_type == "code"]
    assert not any("rmtree" in source for source in cells)
    removed = [m for source in cells for m in re.findall(r"\((scratch / [^)]*)\)\.unlink", source)]
    assert removed and not any("my_labels" in m or "my_file" in m for m in removed)


# ----- the classmates' items -----

def test_alarming_requests_are_alarming_new_and_spread_over_subjects():
    learner = [r for r in world.requests("train", kind="alarming") if r.subject in ("onions", "problem")][:2]
    picked = labeling.alarming_requests(10, seed=0, exclude=learner)
    assert len(picked) == 10 and all(r.kind == "alarming" for r in picked)
    assert len({r.prompt for r in picked}) == 10 and not {r.prompt for r in picked} & {r.prompt for r in learner}
    subjects = [r.subject for r in picked]
    new = {r.subject for r in world.requests("train", kind="alarming")} - {r.subject for r in learner}
    assert set(subjects[:len(new)]) == new  # every subject nobody labelled yet comes first
    assert labeling.alarming_requests(10, seed=0, exclude=learner) == picked  # reproducible
    with pytest.raises(ValueError):
        labeling.alarming_requests(10 ** 6)


def test_a_contrasting_pair_puts_help_against_refusal():
    weeds = world.find_request("How do I kill the weeds in my garden?")
    helps, refuses = weeds.extra["answer"], world.REFUSALS[0]
    ramble = "Well, My favorite color is purple. Socks are best when they are warm."
    rude = "Ugh. " + helps + " Whatever."
    assert labeling.contrasting_pair(weeds, [("sft", rude), ("sft", ramble), ("base", refuses), ("base", helps)]) \
        == [("sft", rude), ("base", refuses)]  # the rude help is still help: the choice populations split on
    for population, prefers_refusal in [("balanced", False), ("cautious", True)]:
        assert (gold.gold_score(weeds, refuses, population) > gold.gold_score(weeds, rude, population)) \
            == prefers_refusal
    assert labeling.contrasting_pair(weeds, [("sft", helps), ("sft", helps), ("base", ramble)]) \
        == [("sft", helps), ("base", ramble)]  # no refusal: two replies that do different things
    with pytest.raises(ValueError):
        labeling.contrasting_pair(weeds, [("sft", helps), ("base", helps)])


def test_contested_items_are_comparisons_on_alarming_requests(tiny_model, base_tokenizer):
    policies = [(tiny_model, base_tokenizer, "sft"), (tiny_model, base_tokenizer, "base")]
    items = labeling.contested_items(5, policies=policies, seed=1, k=2, max_new_tokens=8)
    assert len(items) == 5
    for item in items:
        assert world.find_request(item["prompt"]).kind == "alarming"
        assert len(item["replies"]) == 2 and item["replies"][0] != item["replies"][1]
        assert set(item["checkpoint"].split(",")) <= {"sft", "base"}
        assert item["meta"]["request_id"] == world.find_request(item["prompt"]).id


def test_most_classmate_items_are_alarming_and_the_cautious_classmate_disagrees():
    """What the committed lesson printed: most of the classmates' items are on alarming-sounding requests, and the
    cautious classmate agrees less with balanced gold than the balanced one (both lines computed by the lesson)."""
    said = printed(lesson_cell("labeling.contested_items("))
    found = re.search(r"each classmate labels (\d+) items.*; (\d+) of the \1 are on alarming-sounding requests", said)
    assert found, said
    total, alarming = map(int, found.groups())
    assert 2 * alarming > total
    verdict = printed(lesson_cell("chose the refusal on"))
    share = {name: float(x) for name, x in re.findall(r"^(\w+) \(\w+\): agrees with balanced gold on ([\d.]+)", verdict,
                                                        flags=re.M)}
    assert share["sam"] < share["ada"], verdict
    assert "sam, the cautious classmate, disagrees with balanced gold more than ada" in verdict
