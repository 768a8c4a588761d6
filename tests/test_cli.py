"""The `rlhf-lessons` command: every stage prints its JSON summary last on stdout, progress on stderr."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_lessons.workspace import WORLD_DIR


def run(*args, ok=True):
    result = subprocess.run([sys.executable, "-m", "rlhf_lessons.cli", "--threads", "1", *args], capture_output=True,
                            text=True, timeout=600)
    if ok:
        assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return result, summary


def test_world_prints_requests_and_a_json_summary():
    result, summary = run("world", "--seed", "3")
    assert summary["command"] == "world" and summary["requests"] == sum(summary["by_split"].values())
    assert "train" not in summary and "heldout" not in summary  # said once, in by_split
    assert "User:" in result.stdout


def test_data_regenerates_the_shipped_world_files_byte_for_byte(tmp_path):
    _, summary = run("data", "--out", str(tmp_path))
    for name in summary["files"]:
        assert (tmp_path / name).read_bytes() == (WORLD_DIR / name).read_bytes(), name


def test_evaluate_base_reports_the_yardstick_on_every_split():
    result, summary = run("evaluate", "--model", "base", "--n", "24", "--seed", "1")
    assert set(summary["splits"]) == {"heldout", "unseen-phrasing", "unseen-subject"}
    for figures in summary["splits"].values():
        for key in ("gold_mean", "helpful_rate", "polite_rate", "harmful_compliance_rate", "harmful_evasion_rate",
                    "over_refusal_rate", "mean_reply_tokens"):
            assert key in figures
        assert figures["n"] == 24
    assert "unseen-subject" in result.stderr  # the side-by-side table
    _, again = run("evaluate", "--model", "base", "--n", "24", "--seed", "1", "--split", "heldout")
    assert list(again["splits"]) == ["heldout"]
    assert again["splits"]["heldout"]["gold_mean"] == summary["splits"]["heldout"]["gold_mean"]  # same seed


def test_sft_then_evaluate_against_base(fresh_workspace):
    _, summary = run("sft", "--epochs", "1")
    assert Path(summary["out"]).is_dir() and summary["eval_loss"] > 0
    _, evaluation = run("evaluate", "--model", "sft", "--against", "base", "--n", "16")
    assert all(0.0 <= figures["win_rate"] <= 1.0 for figures in evaluation["splits"].values())


def test_missing_checkpoint_fails_with_advice():
    result, summary = run("evaluate", "--model", "sft", ok=False)
    assert result.returncode == 2
    assert "rlhf-lessons sft" in result.stderr and "error" in summary


def test_unknown_population_is_refused():
    result, _ = run("evaluate", "--population", "everyone", ok=False)
    assert result.returncode == 2 and "population" in result.stderr


def test_feedback_import_rejects_a_bad_file_whole(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "Hello!", "chosen": "Hello! How can I help you today?", "rejected": "Go away."})
                    + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"prompt": "Hello!", "chosen": 3}\n')
    result, _ = run("feedback", "import", str(good), str(bad), ok=False)
    assert result.returncode == 2 and "bad.jsonl" in result.stderr and "line 2" in result.stderr
    _, stats = run("feedback", "stats")
    assert stats["labels"] == 0  # nothing of either file was imported
    _, imported = run("feedback", "import", str(good))
    assert imported["imported"] == 1
    out = tmp_path / "export.jsonl"
    _, exported = run("feedback", "export", "--out", str(out))
    assert exported["pairs"] == 1 and json.loads(out.read_text())["chosen"].startswith("Hello!")
