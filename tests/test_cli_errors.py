"""`rlhf-lessons` on bad input: a user's mistake is one line on stderr and exit code 2, before any work; a bug keeps
its traceback. Every test calls `cli.main` in-process and replaces the stage it would run, so none trains anything."""

import json

import pytest
import torch

from rlhf_lessons import cli, runtime
from rlhf_lessons.errors import ConfigError
from rlhf_lessons.workspace import BASE_MODEL_DIR


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def last_json(out: str) -> dict:
    """The summary line, parsed strictly: NaN or Infinity in it fail the test, as they fail most JSON parsers."""
    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(out.strip().splitlines()[-1], parse_constant=refuse)


def stage_returning(summary: dict, calls: list):
    """A stand-in for a cmd_* function: records its args and returns `summary`."""
    def cmd(args):
        calls.append(args)
        return summary
    return cmd


def must_not_run(*args, **kwargs):
    raise AssertionError("the stage ran although its arguments were bad")


# One place turns the course's errors into exit code 2; everything else is a bug.

def test_a_course_error_is_one_escaped_line_a_json_error_and_exit_2(monkeypatch, capsys):
    def cmd(args):
        raise ConfigError("rater \x1b[31mred\x1b[0m \u202eevil\nsecond line")
    monkeypatch.setattr(cli, "cmd_world", cmd)
    assert cli.main(["world"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("rlhf-lessons world: error: rater ")
    assert "\x1b" not in captured.err and "\u202e" not in captured.err
    assert "\\x1b[31m" in captured.err and "\\u202e" in captured.err
    assert last_json(captured.out)["error"].startswith("rater")


@pytest.mark.parametrize("bug", [ValueError("a bug"), KeyError("a bug"), FileNotFoundError("a bug"),
                                 ZeroDivisionError("a bug")])
def test_any_other_exception_is_a_bug_and_keeps_its_traceback(bug, monkeypatch):
    def cmd(args):
        raise bug
    monkeypatch.setattr(cli, "cmd_world", cmd)
    with pytest.raises(type(bug)):
        cli.main(["world"])


def test_a_missing_label_file_is_a_user_error(tmp_path, capsys):
    missing = tmp_path / "nowhere.jsonl"
    assert cli.main(["feedback", "import", str(missing)]) == 2
    captured = capsys.readouterr()
    assert "nowhere.jsonl" in captured.err and "error" in last_json(captured.out)


@pytest.mark.parametrize("argv, says", [(["feedback", "import"], "JSONL files"),
                                        (["feedback", "export"], "--out"),
                                        (["bestofn", "--n-list", "1,x"], "--n-list")])
def test_missing_or_bad_command_arguments_are_config_errors(argv, says, capsys):
    assert cli.main(argv) == 2
    assert says in capsys.readouterr().err


def test_non_finite_numbers_in_the_summary_become_null(monkeypatch, capsys):
    summary = {"loss": float("nan"), "rows": [float("inf"), {"kl": float("-inf"), "ok": 1.5}], "pair": (1, float("nan"))}
    monkeypatch.setattr(cli, "cmd_world", stage_returning(summary, []))
    assert cli.main(["world"]) == 0
    out = last_json(capsys.readouterr().out)
    assert out["loss"] is None and out["rows"] == [None, {"kl": None, "ok": 1.5}] and out["pair"] == [1, None]


# Argument checks: argparse refuses the value, naming the argument, before the stage starts, and main reports it
# like every other user error.

BAD_ARGUMENTS = [
    (["world", "--seed", "-1"], "--seed"),
    (["world", "--seed", str(2**64)], "--seed"),
    (["world", "--seed", "9" * 5000], "--seed"),  # beyond Python's 4300-digit int() limit
    (["world", "--seed", "1.5"], "--seed"),
    (["--threads", "-1", "world"], "--threads"),
    (["--threads", "0", "world"], "--threads"),
    (["--threads", "two", "world"], "--threads"),
    (["--threads", str(2**31), "world"], "--threads"),
    (["sft", "--epochs", "0"], "--epochs"),
    (["sft", "--epochs", "-1"], "--epochs"),
    (["pretrain", "--steps", "0", "--out", "unused"], "--steps"),
    (["pretrain", "--steps", "-1", "--out", "unused"], "--steps"),
    (["bestofn", "--max-new-tokens", "-4"], "--max-new-tokens"),
    (["bestofn", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["bestofn", "--max-new-tokens", "1000"], "--max-new-tokens"),
    (["bestofn", "--requests", "0"], "--requests"),
    (["bestofn", "--population", "everyone"], "population"),
    (["label", "--n", "0"], "--n"),
    (["label", "--n", "-3"], "--n"),
    (["label", "--population", "everyone"], "population"),
    (["evaluate", "--n", "0"], "--n"),
    (["evaluate", "--population", "everyone"], "population"),
    (["experiment", "bias", "--eval-n", "0"], "--eval-n"),
    (["experiment", "mixture", "--eval-n", "-1"], "--eval-n"),
    (["ppo", "--kl-coef", "nan"], "--kl-coef"),
    (["ppo", "--kl-coef", "inf"], "--kl-coef"),
    (["ppo", "--kl-coef", "-0.1"], "--kl-coef"),
    (["ppo", "--target-kl", "0"], "--target-kl"),
    (["ppo", "--target-kl", "nan"], "--target-kl"),
    (["ppo", "--updates", "0"], "--updates"),
    (["ppo", "--reward", "gold:everyone"], "population"),
    (["reward", "--n", "-1"], "--n"),
    (["reward", "--population", "everyone"], "population"),
    (["reward", "--init", "base"], "--init"),
    (["pipeline", "--population", "everyone"], "population"),
]


@pytest.mark.parametrize("argv, names", BAD_ARGUMENTS, ids=[" ".join(a)[:40] for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_stop_before_any_work(argv, names, monkeypatch, capsys):
    for name in ("cmd_world", "cmd_sft", "cmd_pretrain", "cmd_bestofn", "cmd_label", "cmd_evaluate", "cmd_experiment",
                 "cmd_ppo", "cmd_reward", "cmd_pipeline"):
        monkeypatch.setattr(cli, name, must_not_run)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and names in captured.err
    assert names in last_json(captured.out)["error"]


@pytest.mark.parametrize("flags, says", [(["--eval-n", "5"], "--eval-n apply"),
                                         (["--no-reuse"], "--no-reuse apply"),
                                         (["--eval-n", "5", "--no-reuse"], "--eval-n and --no-reuse apply")])
def test_overopt_refuses_the_flags_of_the_other_sweeps_instead_of_ignoring_them(flags, says, monkeypatch, capsys):
    from rlhf_lessons import overoptimization

    monkeypatch.setattr(overoptimization, "run_overopt_experiment", must_not_run)
    assert cli.main(["experiment", "overopt", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "bias and mixture sweeps only" in err


def test_label_out_must_be_a_file_in_a_folder_that_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "cmd_label", must_not_run)
    for out, says in ((tmp_path, "is a folder"), (tmp_path / "no" / "pairs.jsonl", "does not exist")):
        assert cli.main(["label", "--out", str(out)]) == 2
        assert says in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["data", "pretrain", "sft", "reward", "ppo", "pipeline"])
def test_an_output_folder_that_is_a_file_is_refused_before_training(stage, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, f"cmd_{stage}", must_not_run)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    assert cli.main([stage, "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_reward_prefs_files_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    from rlhf_lessons import reward

    monkeypatch.setattr(reward, "run_reward_stage", must_not_run)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Hello!", "chosen": 3}\n')
    for path in (bad, tmp_path / "missing.jsonl"):
        assert cli.main(["reward", "--prefs", str(path)]) == 2
        assert path.name in capsys.readouterr().err


def test_best_of_n_is_bounded(monkeypatch, capsys):
    from rlhf_lessons import overoptimization

    monkeypatch.setattr(overoptimization, "bestofn_sweep", must_not_run)
    assert cli.main(["bestofn", "--n-list", f"1,{cli.MAX_BEST_OF + 1}"]) == 2
    assert f"from 1 to {cli.MAX_BEST_OF}" in capsys.readouterr().err


def test_good_arguments_reach_the_stage(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "cmd_ppo", stage_returning({}, calls))
    assert cli.main(["--threads", "1", "ppo", "--seed", str(cli.SEED_MAX), "--kl-coef", "0", "--updates", "3",
                     "--reward", "gold:cautious"]) == 0
    assert (calls[0].seed, calls[0].kl_coef, calls[0].updates, calls[0].reward) == (cli.SEED_MAX, 0.0, 3,
                                                                                    "gold:cautious")
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("value", ["-1", "0", "abc", "1.5", str(2**40)])
def test_a_bad_threads_variable_is_named_in_one_line(value, monkeypatch, capsys):
    monkeypatch.setenv(runtime.THREADS_ENV, value)
    monkeypatch.setattr(cli, "cmd_world", must_not_run)
    assert cli.main(["world"]) == 2
    assert "$RLHF_LESSONS_THREADS" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="RLHF_LESSONS_THREADS"):
        runtime.default_threads()


@pytest.mark.parametrize("bad", [0, -2, 2**31])
def test_set_threads_refuses_with_a_config_error(bad):
    with pytest.raises(ConfigError, match="threads"):
        runtime.set_threads(bad)


def test_bad_seed_and_device_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="seed"):
        runtime.set_seed(-1)
    monkeypatch.setenv(runtime.DEVICE_ENV, "gpu9")
    with pytest.raises(ConfigError, match=r"\$RLHF_LESSONS_DEVICE"):
        runtime.pick_device()


# Zero is a value: an error here, never the default.

def test_sft_epochs_are_passed_on_and_zero_is_refused(monkeypatch, capsys):
    from rlhf_lessons import sft

    configs = []
    monkeypatch.setattr(sft, "train_sft", lambda cfg, base, out_dir, examples: configs.append(cfg) or {})
    assert cli.main(["sft", "--epochs", "2"]) == 0 and cli.main(["sft"]) == 0
    assert [cfg.epochs for cfg in configs] == [2, sft.SFTConfig().epochs]
    assert cli.main(["sft", "--epochs", "0"]) == 2
    assert len(configs) == 2


def test_pretrain_refuses_to_overwrite_the_shipped_base_model_without_the_flag(tmp_path, monkeypatch, capsys):
    from rlhf_lessons import pretrain

    runs = []
    monkeypatch.setattr(pretrain, "pretrain", lambda cfg, out, command: runs.append((cfg, out, command)) or {})
    for argv in (["pretrain"], ["pretrain", "--out", str(BASE_MODEL_DIR)], ["pretrain", "--out", "data/../data/base"]):
        monkeypatch.chdir(BASE_MODEL_DIR.parent.parent)
        assert cli.main(argv) == 2
        assert "--overwrite-shipped" in capsys.readouterr().err
    assert runs == []  # refused before any data preparation
    assert cli.main(["pretrain", "--steps", "3", "--out", str(tmp_path / "base")]) == 0
    assert cli.main(["pretrain", "--overwrite-shipped"]) == 0
    (cfg, out, _), (_, shipped_out, command) = runs
    assert cfg.steps == 3 and out == tmp_path / "base"
    assert shipped_out == BASE_MODEL_DIR and command.endswith("pretrain --overwrite-shipped")


def test_pretrain_rebuilds_a_missing_shipped_base_model_without_the_flag(tmp_path, monkeypatch):
    from rlhf_lessons import pretrain, workspace

    runs = []
    monkeypatch.setattr(pretrain, "pretrain", lambda cfg, out, command: runs.append((out, command)) or {})
    monkeypatch.setattr(workspace, "BASE_MODEL_DIR", tmp_path / "data" / "base")  # deleted, as BUILD_HINT supposes
    assert cli.main(["pretrain"]) == 0
    assert runs[0][0] == tmp_path / "data" / "base" and not runs[0][1].endswith("--overwrite-shipped")


# Counts bounded by what exists, checked before any model is loaded or trained.

def test_evaluate_n_is_bounded_by_the_split_size(monkeypatch, capsys):
    from rlhf_lessons import evaluate, world

    calls = []
    monkeypatch.setattr(evaluate, "evaluate_splits", lambda *a, **k: calls.append(k) or {})
    assert cli.main(["evaluate", "--n", "1000000000"]) == 2
    assert f"--n {len(world.requests('unseen-subject'))} or fewer" in capsys.readouterr().err
    heldout = len(world.requests("heldout"))
    assert cli.main(["evaluate", "--split", "heldout", "--n", str(heldout + 1)]) == 2
    assert calls == []
    assert cli.main(["evaluate", "--split", "heldout", "--n", str(heldout)]) == 0
    assert calls[0]["n"] == heldout


def test_experiment_eval_n_and_bestofn_requests_are_checked_before_training(monkeypatch, capsys):
    from rlhf_lessons import overoptimization, rater_bias

    monkeypatch.setattr(rater_bias, "run_bias_experiment", must_not_run)
    monkeypatch.setattr(overoptimization, "bestofn_sweep", must_not_run)
    assert cli.main(["experiment", "bias", "--eval-n", "100000"]) == 2
    assert cli.main(["bestofn", "--requests", "100000"]) == 2
    err = capsys.readouterr().err
    assert "--eval-n 100000 is more than" in err and "--requests 100000 is more than" in err


# Consistency: label builds a missing SFT model, as reward, ppo and bestofn do.

def test_label_builds_a_missing_sft_model_first(monkeypatch, capsys):
    from rlhf_lessons import labeling, sft

    events = []
    monkeypatch.setattr(sft, "ensure_sft", lambda quiet=False: events.append("ensure_sft"))
    monkeypatch.setattr(labeling, "label", lambda **kwargs: events.append(("label", kwargs["policy"])) or {})
    assert cli.main(["label", "--n", "3"]) == 0
    assert events == ["ensure_sft", ("label", "sft")]
    events.clear()
    assert cli.main(["label", "--n", "3", "--policy", "base"]) == 0
    assert events == [("label", "base")]


def test_a_reward_stage_with_no_pairs_to_train_on_is_a_user_error_not_a_traceback(monkeypatch, capsys):
    from rlhf_lessons import reward

    def stage_with_nothing_to_train(**kwargs):  # what `reward --n 0` on an empty store comes to, without sampling
        return reward.train_reward(reward.RewardConfig(), pairs=[])
    monkeypatch.setattr(reward, "run_reward_stage", stage_with_nothing_to_train)
    assert cli.main(["reward", "--n", "0"]) == 2
    assert "no preference pairs to train on" in capsys.readouterr().err


def test_reward_start_must_be_a_reward_model_and_is_checked_before_any_labelling(tmp_path, monkeypatch, capsys):
    """--start goes on training a reward model: a missing folder or a policy is refused in one line before the
    minutes of labelling; a reward model reaches the stage."""
    from rlhf_lessons import reward
    from rlhf_lessons.models import BASE_MODEL_DIR

    monkeypatch.setattr(reward, "labelling_policies", must_not_run)
    for start, says in ((tmp_path / "missing", "no checkpoint at"), (BASE_MODEL_DIR, "is not a reward model")):
        assert cli.main(["reward", "--start", str(start), "--init", str(BASE_MODEL_DIR)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err
    calls = []
    monkeypatch.setattr(cli, "cmd_reward", stage_returning({}, calls))
    assert cli.main(["reward", "--start", "rm", "--prefs", "users.jsonl"]) == 0
    assert (calls[0].start, calls[0].prefs) == ("rm", ["users.jsonl"])
