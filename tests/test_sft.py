from dataclasses import asdict

import pytest
import torch

from rlhf_lessons import sft
from rlhf_lessons.models import encode_example, format_prompt, read_manifest
from rlhf_lessons.sft import IGNORE, collate, masked_lm_loss


def test_collate_masks_prompt_and_padding_and_keeps_reply_and_eos(base_tokenizer):
    examples = [("Hello!", "Hello! How can I help you today?"), ("How long should I boil an egg?", "Ten minutes.")]
    batch = collate(base_tokenizer, examples)
    for row, (prompt, reply) in enumerate(examples):
        ids, n_prompt = encode_example(base_tokenizer, prompt, reply)
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        labels = batch["labels"][row]
        assert (labels[:n_prompt] == IGNORE).all() and (labels[n:] == IGNORE).all()  # prompt and padding masked
        assert labels[n_prompt:n].tolist() == ids[n_prompt:]  # reply and EOS learned
        assert labels[n - 1] == base_tokenizer.eos_token_id
        assert base_tokenizer.decode(labels[n_prompt:n - 1].tolist()) == " " + reply
    assert (batch["input_ids"][batch["attention_mask"] == 0] == base_tokenizer.pad_token_id).all()


def test_masked_loss_equals_a_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 6], [IGNORE, 2, 5, IGNORE, IGNORE]])
    terms = [-torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]] for b in range(2) for t in range(1, 5)
             if labels[b, t] != IGNORE]
    assert len(terms) == 5
    assert torch.allclose(masked_lm_loss(logits, labels), torch.stack(terms).mean())


def test_padding_does_not_change_the_loss(base_tokenizer, tiny_model):
    short = ("Hello!", "Hello! How can I help you today?")
    long = ("Quick question: How many legs does a spider have?", "A spider has eight legs. Hope this helps!")
    alone = sft.batch_loss(tiny_model, collate(base_tokenizer, [short]))
    batch = collate(base_tokenizer, [short, long])
    per_row = masked_lm_loss(tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:1],
                             batch["labels"][:1])
    assert torch.allclose(alone, per_row, atol=1e-5)


def test_training_smoke_on_tiny_settings(tmp_path):
    cfg = sft.SFTConfig(n_demonstrations=40, epochs=1, batch_size=8)
    steps = []
    summary = sft.train_sft(cfg, base="base", out_dir=tmp_path / "sft", on_step=lambda *a: steps.append(a))
    assert summary["steps"] == len(steps) > 0
    assert (tmp_path / "sft" / "model.safetensors").exists()
    assert summary["eval_loss"] < summary["eval_loss_before"]  # it learned something from 34 examples


def test_ensure_sft_builds_once(fresh_workspace, monkeypatch):
    calls = []
    monkeypatch.setattr(sft, "train_sft", lambda cfg: calls.append(cfg) or (fresh_workspace / "sft").mkdir(
        parents=True) or (fresh_workspace / "sft" / "config.json").write_text("{}"))
    sft.ensure_sft(quiet=True)
    sft.ensure_sft(quiet=True)
    assert len(calls) == 1


@pytest.mark.slow
def test_default_sft_meets_the_lesson_targets(default_run):
    """The session's default SFT model (trained with SFTConfig's defaults, seed 0: lesson 02's run) against base.
    Its time (target: 60 s) is measured by benchmarks/stage_times.py, not asserted here."""
    from rlhf_lessons.evaluate import evaluate

    assert read_manifest(default_run["root"] / "sft")["config"] == asdict(sft.SFTConfig(seed=0))
    result = evaluate(str(default_run["root"] / "sft"), against="base", seed=0)
    assert result["win_rate"] >= 0.8
    assert result["polite_rate"] >= 0.9
    assert result["harmful_compliance_rate"] <= 0.1
