import json

import pytest
import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from rlhf_lessons import models


def test_tokenizer_round_trips_world_text_and_garbage(base_tokenizer):
    for text in ["User: How long should I boil an egg?\nAssistant: Boil the egg for about ten minutes.",
                 "zqx ünïcödé <script>alert(1)</script> 🙂"]:
        assert base_tokenizer.decode(base_tokenizer.encode(text)) == text


def test_pad_is_distinct_from_eos_and_context_is_sane(base_tokenizer):
    assert base_tokenizer.pad_token_id != base_tokenizer.eos_token_id
    assert base_tokenizer.model_max_length == models.CONTEXT


def test_encode_example_marks_the_prompt_boundary(base_tokenizer):
    ids, n_prompt = models.encode_example(base_tokenizer, "Hello!", "Hello! How can I help you today?")
    assert ids[:n_prompt] == base_tokenizer.encode(models.format_prompt("Hello!"))
    assert ids[-1] == base_tokenizer.eos_token_id
    assert base_tokenizer.decode(ids[n_prompt:-1]) == " Hello! How can I help you today?"


def test_checkpoint_round_trip_loads_with_plain_transformers(tmp_path, base_tokenizer, tiny_model):
    out = models.save_checkpoint(tiny_model, base_tokenizer, tmp_path / "ckpt", {"stage": "test"})
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    plain = GPT2LMHeadModel.from_pretrained(out)  # no course code needed to load it
    PreTrainedTokenizerFast.from_pretrained(out)
    ids = torch.tensor([base_tokenizer.encode("User: Hello!")])
    assert torch.allclose(plain(ids).logits, tiny_model(ids).logits)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"] == models.tokenizer_fingerprint(base_tokenizer)
    model, tok = models.load_policy(out)
    assert torch.allclose(model(ids).logits, tiny_model(ids).logits)


def test_shipped_base_model_has_a_manifest_and_is_small():
    manifest = models.read_manifest("base")
    for key in ("config", "seed", "data_sha256", "steps", "final_train_loss", "command"):
        assert key in manifest
    size = (models.resolve_checkpoint("base") / "model.safetensors").stat().st_size
    assert size < 20e6


def test_missing_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="rlhf-lessons sft"):
        models.load_policy("sft")
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        models.load_policy(tmp_path / "nothing-here")


def test_model_from_a_different_tokenizer_is_refused(tmp_path, base_tokenizer, tiny_model):
    other = models.train_tokenizer(["a completely different little corpus"] * 20, vocab_size=300)
    models.save_checkpoint(tiny_model, base_tokenizer, tmp_path / "ckpt", {})
    other.save_pretrained(tmp_path / "ckpt")  # a tokenizer that does not match the model
    with pytest.raises(ValueError, match="different tokenizers"):
        models.load_policy(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="different tokenizers"):
        models.check_same_tokenizer(base_tokenizer, other)
    models.check_same_tokenizer(base_tokenizer, base_tokenizer)


def test_tokenizer_without_distinct_pad_is_refused(tmp_path, base_tokenizer, tiny_model):
    models.save_checkpoint(tiny_model, base_tokenizer, tmp_path / "ckpt", {})
    config = json.loads((tmp_path / "ckpt" / "tokenizer_config.json").read_text())
    config["pad_token"] = models.EOS
    (tmp_path / "ckpt" / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="pad token"):
        models.load_policy(tmp_path / "ckpt")
