"""The README's first screen states measured lesson times: they must be the ones the last refresh measured."""

from rlhf_lessons import course


def test_readme_lesson_times_come_from_the_last_measurement():
    text = course.README.read_text()
    assert course.readme_with_times(text) == text, "README times are stale: run `make notebooks`"


def test_every_lesson_notebook_is_in_the_table_with_a_measured_time():
    table = course.lesson_table()
    for name, _ in course.available_lessons():
        assert name in table
    assert "not measured yet" not in table, "a lesson has no measured time: run `make notebooks`"


def test_readme_outcomes_table_is_the_one_the_benchmark_wrote(outcomes):
    text = course.README.read_text()
    block = text.split(outcomes.START, 1)[1].split(outcomes.END, 1)[0].strip()
    written = (course.README.parent / "benchmarks" / "outcomes.md").read_text().strip()
    assert block == written, "README's outcomes table is not the last run's: python benchmarks/outcomes.py --readme"
    assert "seed 0" in block and "seed 1" in block and "seed 2" in block  # the table covers three seeds


def test_outcome_bars_reject_figures_that_miss_them(outcomes):
    good = {"sft": {"polite_rate": 0.95, "harmful_compliance_rate": 0.0, "over_refusal_rate": 0.0,
                    "helpful_rate": 0.7, "mean_reply_tokens": 10.0, "gold_mean": 1.0},
            "ppo": {"polite_rate": 1.0, "harmful_compliance_rate": 0.0, "over_refusal_rate": 0.0,
                    "helpful_rate": 0.8, "mean_reply_tokens": 11.0, "gold_mean": 1.5},
            "win_rate_sft_vs_base": 0.9, "win_rate_ppo_vs_sft": 0.75}
    run = {"splits": {split: {k: (dict(v) if isinstance(v, dict) else v) for k, v in good.items()}
                      for split in outcomes.SPLITS},
           "reward_model": {"ceiling_gap": 0.02, "heldout_pairs": 1000}}
    assert all(met for *_, met in outcomes.claims(run))
    run["splits"]["unseen-phrasing"]["ppo"]["mean_reply_tokens"] = 14.0  # 1.4 times SFT's length
    run["reward_model"]["ceiling_gap"] = 0.031
    missed = [(claim, split) for claim, split, _, _, met in outcomes.claims(run) if not met]
    assert missed == [("reward model: ceiling - expected accuracy", "heldout pairs (1000)"),
                      ("PPO reply length / SFT's", "unseen-phrasing")]


def test_lesson_00_shows_the_times_the_readme_shows():
    import nbformat

    nb = nbformat.read(course.NOTEBOOK_DIR / "00_welcome.ipynb", as_version=4)
    shown = [out["data"]["text/markdown"] for cell in nb.cells if "Markdown(lesson_table())" in cell.source
             for out in cell.outputs if "text/markdown" in out.get("data", {})]
    assert shown == [course.lesson_table()], "lesson 00's table is not the last refresh's: run `make notebooks`"


def test_the_table_shows_a_learners_times_beside_the_refresh_once_measured(monkeypatch):
    """`make times` adds a column at the learner's thread count; totals are per column; until then one column."""
    names = [name for name, _ in course.available_lessons()]
    refresh = {"machine": "2-core x86_64 CPU (no GPU)", "threads": 1, "seconds": {n: 60.0 for n in names}}
    monkeypatch.setattr(course, "read_timings", lambda: refresh)
    assert "a learner's default" not in course.lesson_table()
    learner = {**refresh, "learner": {"threads": 2, "seconds": {n: 30.0 for n in names[:-1]}}}
    monkeypatch.setattr(course, "read_timings", lambda: learner)
    table = course.lesson_table()
    assert "| 1 thread (refresh) | 2 threads (a learner's default) |" in table
    assert f"| `{names[0]}` |" in table and "| 60 s | 30 s |" in table
    assert f"| 60 s | not measured yet |" in table  # the last lesson has no learner's time yet: no total either
    assert f"| the whole course | | {len(names):.1f} min |  |" in table
