"""The lessons themselves: their list, their measured run times, and the command that re-executes them.

`python -m rlhf_lessons.course refresh` runs every notebook top to bottom, in order, on one fresh workspace, stores the outputs
(so a learner browsing the repository sees the plots), clears saved widget state (which stops notebooks rendering on
GitHub), removes local paths from outputs, and writes each notebook's run time to notebooks/timings.json, which the
welcome lesson and the README show, with the float fingerprint of the machine that ran them (runtime.float_fingerprint).

`python -m rlhf_lessons.course time` runs them the same way at a learner's thread count ($RLHF_LESSONS_THREADS, default 2)
without saving outputs, and records those times beside the refresh's: the lessons' budget is for a learner's run.

`python -m rlhf_lessons.course same-floats` says whether this machine rounds floats as that one did, which decides how
strictly `make test` compares the committed outputs (see same_floats).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

from .workspace import PACKAGE_DIR

NOTEBOOK_DIR = PACKAGE_DIR.parent / "notebooks"
README = PACKAGE_DIR.parent / "README.md"
README_START, README_END = "<!-- lesson-times:", "<!-- /lesson-times -->"
TIMINGS_FILE = NOTEBOOK_DIR / "timings.json"

LESSONS = [
    ("00_welcome.ipynb", "what RLHF is and is not; the toy world and its simulated humans; setup check"),
    ("01_base_model.ipynb", "tokens, sampling, temperature; why a base model is not an assistant"),
    ("02_sft.ipynb", "instruction formatting, prompt masking, the SFT loss by hand and at scale"),
    ("03_feedback.ipynb", "you rank replies; simulated raters; how preferences become data"),
    ("04_reward_model.ipynb", "Bradley-Terry from scratch; accuracy against the noise ceiling; calibration"),
    ("05_ppo.ipynb", "rollouts, KL-shaped reward, GAE, the clipped objective; PPO against SFT"),
    ("06_what_goes_wrong.ipynb", "over-optimisation, rater bias, over-refusal, length hacking"),
    ("07_product_feedback.ipynb", "a deployed model's users and their feedback; round two; RLHF against fine-tuning"),
]


def available_lessons() -> list[tuple[str, str]]:
    return [(name, what) for name, what in LESSONS if (NOTEBOOK_DIR / name).exists()]


def read_timings() -> dict:
    return json.loads(TIMINGS_FILE.read_text()) if TIMINGS_FILE.exists() else {}


def lesson_table() -> str:
    """A markdown table of the lessons and their measured run times: at the thread count of the last refresh, and, once
    `course time` has run, at a learner's default thread count (the lessons' budget is for a learner's run)."""
    timings = read_timings()
    refresh_seconds, learner = timings.get("seconds", {}), timings.get("learner", {})
    learner_seconds = learner.get("seconds", {})
    columns = [("measured run time", refresh_seconds)]
    if learner_seconds:
        columns = [(f"{_threads(timings.get('threads', 1))} (refresh)", refresh_seconds),
                   (f"{_threads(learner['threads'])} (a learner's default)", learner_seconds)]
    rows = ["| lesson | what you learn | " + " | ".join(title for title, _ in columns) + " |",
            "|---|---|" + "---|" * len(columns)]
    for name, what in available_lessons():
        cells = [f"{seconds[name]:.0f} s" if name in seconds else "not measured yet" for _, seconds in columns]
        rows.append(f"| `{name}` | {what} | " + " | ".join(cells) + " |")
    totals = []
    for _, seconds in columns:
        measured = [seconds.get(name) for name, _ in available_lessons()]
        totals.append(f"{sum(measured) / 60:.1f} min" if measured and None not in measured else "")
    if any(totals):
        rows.append("| the whole course | | " + " | ".join(totals) + " |")
    if timings:
        how = f"{_threads(timings['threads'])} (`make notebooks`)"
        if learner_seconds:
            how += f" and {_threads(learner['threads'])} (`make times`)"
        rows.append(f"\nMeasured on a {timings['machine']}, {how}, lessons run in order on a fresh workspace.")
    return "\n".join(rows)


def _threads(n: int) -> str:
    return f"{n} thread" + ("s" if n != 1 else "")


def readme_with_times(text: str) -> str:
    """README text with the block between the lesson-times markers replaced by the current lesson_table()."""
    start = text.index(README_START)
    start = text.index("\n", start) + 1
    end = text.index(README_END)
    return text[:start] + lesson_table() + "\n" + text[end:]


def _sanitise(nb, replacements: dict[str, str]) -> None:
    """Drop saved widget state and replace local paths in outputs with neutral names."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                for old, new in replacements.items():
                    output["text"] = output["text"].replace(old, new)
            for key, value in output.get("data", {}).items():
                if isinstance(value, str) and key.startswith("text/"):
                    for old, new in replacements.items():
                        value = value.replace(old, new)
                    output["data"][key] = value


def _execute_in_order(names: list[str] | None, timeout: int, save: bool) -> dict[str, float]:
    """Execute the lessons (all, or those in `names`) in order on one fresh workspace, as a learner taking them in
    order would; save their outputs if `save`. Returns each lesson's wall seconds.

    With `names`, the lessons before the last of them run first too (neither saved nor timed): a lesson's time is
    measured on the workspace its predecessors left, never with their training counted in it."""
    import nbformat
    from nbclient import NotebookClient

    lessons = [name for name, _ in available_lessons()]
    unknown = sorted(set(names or ()) - set(lessons))
    if unknown:
        raise SystemExit(f"no such lessons: {', '.join(unknown)}; the lessons are {', '.join(lessons)}")
    if names:
        lessons = lessons[:max(lessons.index(name) for name in names) + 1]
    seconds_by_lesson = {}
    with tempfile.TemporaryDirectory() as workspace:
        os.environ["RLHF_LESSONS_HOME"] = workspace
        for name in lessons:
            measured = not names or name in names
            path = NOTEBOOK_DIR / name
            nb = nbformat.read(path, as_version=4)
            start = time.time()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
            seconds = time.time() - start
            if not measured:
                print(f"{name}: {seconds:.0f} s (a prerequisite, not recorded)", file=sys.stderr)
                continue
            if save:
                _sanitise(nb, {workspace: "~/.rlhf-lessons", str(PACKAGE_DIR.parent): ".", str(Path.home()): "~"})
                for cell in nb.cells:
                    cell.metadata.pop("execution", None)  # per-cell timestamps: noise in every diff
                nbformat.write(nb, path)
            seconds_by_lesson[name] = round(seconds, 1)
            print(f"{name}: {seconds:.0f} s", file=sys.stderr)
    return seconds_by_lesson


def refresh(names: list[str] | None = None, timeout: int = 900) -> dict:
    """Execute lessons in order on one fresh workspace; save outputs and run times. Returns the timings."""
    timings = read_timings() or {"seconds": {}}
    timings["seconds"].update(_execute_in_order(names, timeout, save=True))
    timings["machine"] = f"{os.cpu_count()}-core {platform.machine()} CPU (no GPU)"
    timings["threads"] = int(os.environ.get("RLHF_LESSONS_THREADS", "2"))
    here, before = _this_machines_fingerprint(), timings.get("float_fingerprint")
    if names and before != here:  # the lessons not re-run keep outputs that another machine's rounding made
        print(f"note: the other notebooks were executed on a machine that rounds differently ({before}); run all of "
              "them so that make test can compare every output here", file=sys.stderr)
        here = None
    timings["float_fingerprint"] = here
    return _record(timings)


def _record(timings: dict) -> dict:
    """Write the timings, and the table made from them into the README and lesson 00's output."""
    TIMINGS_FILE.write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")
    README.write_text(readme_with_times(README.read_text()))
    show_measured_times_in_lesson_00()
    return timings


def time_lessons(names: list[str] | None = None, timeout: int = 900) -> dict:
    """Execute the lessons in order on a fresh workspace at this process's thread count ($RLHF_LESSONS_THREADS, 2 by
    default, as a learner runs them) without saving their outputs; record the times as the learner's column of the
    README's table (the committed outputs are a 1-thread refresh's, whose floats nbval compares). Returns the timings."""
    timings = read_timings() or {"seconds": {}}
    threads = int(os.environ.get("RLHF_LESSONS_THREADS", "2"))
    learner = timings.get("learner", {})
    if learner.get("threads") != threads:
        learner = {"threads": threads, "seconds": {}}
    learner["seconds"].update(_execute_in_order(names, timeout, save=False))
    timings["learner"] = learner
    return _record(timings)


def show_measured_times_in_lesson_00() -> None:
    """Lesson 00 runs first, before this refresh has measured the others: put the table of the times just measured
    into the output of its `lesson_table()` cell, so that it shows what the README shows."""
    import nbformat

    path = NOTEBOOK_DIR / LESSONS[0][0]
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "Markdown(lesson_table())" in cell.source:
            for output in cell.get("outputs", []):
                if "text/markdown" in output.get("data", {}):
                    output["data"]["text/markdown"] = lesson_table()
    nbformat.write(nb, path)


def _this_machines_fingerprint() -> str:
    from .runtime import default_threads, float_fingerprint, set_threads

    set_threads(default_threads())  # the notebooks' kernels use $RLHF_LESSONS_THREADS the same way (runtime.setup)
    return float_fingerprint()


def same_floats() -> bool:
    """Print whether this machine rounds floats as the one that executed the committed notebooks; True if it does.

    Where it does, a seed gives every cell the committed output, and nbval compares them all. Where it does not (another
    instruction set, another thread count), a sampled token flips here and there and figures move in their third
    digit: then only the cells tagged nbval-check-output, whose outputs no rounding can change, are compared
    (nbval --nbval-lax), every cell must still run without error, and the figures themselves are held to their
    targets, with tolerances, by the slow outcome tests.
    """
    committed = read_timings().get("float_fingerprint")
    here = _this_machines_fingerprint()
    if committed == here:
        print(f"floats: this machine rounds as the one that executed the notebooks ({here}): every output is compared")
        return True
    print(f"floats: this machine rounds differently from the one that executed the notebooks ({here} here, "
          f"{committed or 'not recorded'} there), so sampled replies and the figures made from them differ in the odd "
          "digit: every cell must run, and only the cells tagged nbval-check-output are compared (nbval --nbval-lax); "
          "the figures are checked against their targets by the slow tests. `make notebooks` re-executes the "
          "notebooks here, after which every output is compared on this machine.")
    return False


if __name__ == "__main__":
    if sys.argv[1:2] == ["same-floats"]:
        sys.exit(0 if same_floats() else 3)
    if sys.argv[1:2] == ["time"]:
        time_lessons(sys.argv[2:] or None)
        sys.exit(0)
    if len(sys.argv) < 2 or sys.argv[1] != "refresh":
        sys.exit("usage: python -m rlhf_lessons.course refresh|time [NOTEBOOK.ipynb ...] | same-floats")
    refresh(sys.argv[2:] or None)
