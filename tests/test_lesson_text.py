"""What every lesson's text promises a learner and a workshop: a glossary in lesson 00 that defines the course's
jargon and that each lesson's header links to, and discussion questions at the end of every lesson."""

import re

import nbformat
import pytest

from rlhf_lessons import course

NOTEBOOKS = [course.NOTEBOOK_DIR / name for name, _ in course.available_lessons()]
# Terms the lessons use that a newcomer cannot be expected to know (the notebooks issue names the first six).
JARGON = ["Policy", "nats", "ECE", "Whitening", "Order-statistics weights", "Reward hacking", "Token", "Logits",
          "Temperature", "SFT", "Gold rater", "Population", "Win rate", "Over-refusal", "Bradley-Terry model",
          "Reward model", "Noise ceiling", "Proxy reward", "Rollout", "Reference model", "KL leash", "PPO",
          "Value head", "GAE", "Best-of-n", "Rater bias"]


def _markdown(path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


def _glossary() -> dict[str, str]:
    """Lesson 00's glossary: {defined term: its definition}, from its '- **Term.** definition' entries."""
    cells = [s for s in _markdown(course.NOTEBOOK_DIR / "00_welcome.ipynb") if s.startswith("## Glossary")]
    assert len(cells) == 1, "lesson 00 needs exactly one '## Glossary' cell"
    entries = re.findall(r"^- \*\*(.+?)\.\*\* (.+?)(?=^- |\Z)", cells[0], flags=re.M | re.S)
    return {term: definition for term, definition in entries}


def test_the_glossary_defines_the_jargon():
    glossary = _glossary()
    defined = " ".join(glossary)  # "KL divergence, nats" defines both
    missing = [term for term in JARGON if not re.search(rf"\b{re.escape(term)}\b", defined)]
    assert not missing, f"lesson 00's glossary does not define {missing}"
    short = [term for term, definition in glossary.items() if len(definition.split()) < 8]
    assert not short, f"these glossary entries say too little to define anything: {short}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_lesson_links_to_the_glossary_and_ends_with_discussion_questions(path):
    cells = nbformat.read(path, as_version=4).cells
    target = "(#Glossary)" if path.name == "00_welcome.ipynb" else "(00_welcome.ipynb#Glossary)"
    assert target in cells[0].source, f"{path.name}'s header should link to the glossary: {target}"
    discussion = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Discussion")]
    assert len(discussion) == 1, f"{path.name} needs one '## Discussion' cell"
    after = [c for c in cells[discussion[0] + 1:] if c.cell_type == "code" or not c.source.startswith("## Glossary")]
    assert len(after) == 1 and "this notebook ran in" in after[0].source, (
        f"{path.name}: the discussion comes last, before the cell that prints the run time")
    questions = re.findall(r"^\d+\. (.+\?)\s*$", cells[discussion[0]].source, flags=re.M)
    assert 2 <= len(questions) <= 3, f"{path.name}: two or three discussion questions, found {len(questions)}"


WIDGET_CELL = re.compile(r"\b(CompareWidget|RankWidget|RatingWidget|ChatWidget)\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_widget_is_shown_first_as_a_screenshot(path):
    """GitHub renders a widget as `VBox(children=...)`: a screenshot before each widget cell shows what it looks
    like (made by `make screenshots`, rlhf_lessons/screenshots.py)."""
    cells = nbformat.read(path, as_version=4).cells
    for i, cell in enumerate(cells):
        lines = cell.source.strip().splitlines()
        if cell.cell_type != "code" or not WIDGET_CELL.search(cell.source) or not re.fullmatch(r"\w+", lines[-1]):
            continue
        images = re.findall(r"!\[[^\]]*\]\((images/[\w.-]+\.png)\)", cells[i - 1].source)
        assert cells[i - 1].cell_type == "markdown" and images, f"{path.name} cell {i}: no screenshot before the widget"
        image = course.NOTEBOOK_DIR / images[0]
        assert image.exists() and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{image} is missing: make screenshots"
