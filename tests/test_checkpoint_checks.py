"""Checkpoints checked on load (issue 16): a folder that is not the model asked for, or is damaged, is refused
with a CheckpointError that says what the folder holds and what was expected, never loaded as random weights."""

import json
import re

import pytest
import torch
from transformers import (BertConfig, BertModel, GPT2ForSequenceClassification, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM)

from rlhf_lessons import cli, models, reward
from rlhf_lessons.errors import CheckpointError, CheckpointMissing
from rlhf_lessons.models import tiny_config


@pytest.fixture
def policy_dir(tmp_path, base_tokenizer, tiny_model):
    """A good tiny policy checkpoint, to break in each test."""
    return models.save_checkpoint(tiny_model, base_tokenizer, tmp_path / "policy", {"stage": "sft"})


@pytest.fixture
def reward_dir(tmp_path, base_tokenizer):
    """A good tiny reward model checkpoint."""
    torch.manual_seed(0)
    config = tiny_config(base_tokenizer, n_layer=1, n_embd=32, n_head=2)
    config.num_labels = 1
    rm = GPT2ForSequenceClassification(config).eval()
    return models.save_checkpoint(rm, base_tokenizer, tmp_path / "rm", {"stage": "rm"})


def _with_course_tokenizer(folder, tokenizer):
    """Give a foreign model folder the course tokenizer, so only its architecture is wrong."""
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def llama_dir(tmp_path, base_tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(base_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=base_tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    return _with_course_tokenizer(tmp_path / "llama", base_tokenizer)


@pytest.fixture
def bert_dir(tmp_path, base_tokenizer):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(base_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, pad_token_id=base_tokenizer.pad_token_id)
    BertModel(config).save_pretrained(tmp_path / "bert")
    return _with_course_tokenizer(tmp_path / "bert", base_tokenizer)


def _edit_json(file, edit):
    data = json.loads(file.read_text())
    edit(data)
    file.write_text(json.dumps(data))


# ----- another architecture, or the other kind of course model -----

@pytest.mark.parametrize("folder, found", [("llama_dir", "llama model (LlamaForCausalLM)"),
                                           ("bert_dir", "bert model (BertModel)")])
def test_another_architecture_is_refused_by_every_loader(request, folder, found):
    path, found = request.getfixturevalue(folder), re.escape(found)
    with pytest.raises(CheckpointError, match=rf"holds a {found}, but a policy \(GPT2LMHeadModel\) was expected"):
        models.load_policy(path)
    with pytest.raises(CheckpointError, match=rf"holds a {found}, but a reward model .* was expected"):
        reward.load_reward_model(path)
    with pytest.raises(CheckpointError, match=rf"holds a {found}, but a policy"):
        reward.reward_model_from(path)  # the model `reward --init` starts from


def test_cli_evaluate_and_reward_init_refuse_a_llama_folder(llama_dir, capsys):
    assert cli.main(["evaluate", "--model", str(llama_dir), "--n", "2"]) == 2
    assert "holds a llama model" in capsys.readouterr().err
    assert cli.main(["reward", "--init", str(llama_dir), "--n", "2"]) == 2
    assert "holds a llama model" in capsys.readouterr().err


def test_a_reward_model_is_not_loaded_as_a_policy_nor_the_reverse(policy_dir, reward_dir):
    with pytest.raises(CheckpointError, match=r"is not a policy .* it holds a reward model .*stage 'rm'"):
        models.load_policy(reward_dir)
    with pytest.raises(CheckpointError, match=r"is not a reward model .* it holds a policy .*stage 'sft'"):
        reward.load_reward_model(policy_dir)
    with pytest.raises(CheckpointError, match="is not a policy"):
        reward.reward_model_from(reward_dir)  # a reward model is started from a policy
    models.load_policy(policy_dir)
    reward.load_reward_model(reward_dir)


def test_the_kind_falls_back_on_the_manifest_stage(reward_dir):
    _edit_json(reward_dir / "config.json", lambda config: config.pop("architectures"))
    with pytest.raises(CheckpointError, match="is not a policy .* stage 'rm'"):
        models.load_policy(reward_dir)


def test_weights_that_do_not_fit_the_config_are_refused_not_filled_with_random_numbers(policy_dir):
    _edit_json(policy_dir / "config.json", lambda config: config.update(n_layer=2))  # no weights for layer 2
    with pytest.raises(CheckpointError, match=r"do not fit its config.json \(\d+ missing \(such as transformer.h.1"):
        models.load_policy(policy_dir)


@pytest.mark.parametrize("edit, problem", [
    ({"n_embd": 64}, r"16 of the wrong shape \(such as transformer.h.0.attn.c_attn.bias: \[96\] in the file, "
                     r"\[192\] by the config\)"),
    ({"n_head": 3}, r"cannot build the model .*must be divisible by num_heads"),
    ({"n_layer": "two"}, r"cannot build the model .*Field 'n_layer' expected int")])
def test_a_config_edited_into_nonsense_is_refused(policy_dir, edit, problem):
    _edit_json(policy_dir / "config.json", lambda config: config.update(edit))
    with pytest.raises(CheckpointError, match=problem):
        models.load_policy(policy_dir)


def test_weights_left_unused_are_refused(policy_dir, reward_dir):
    (policy_dir / "model.safetensors").write_bytes((reward_dir / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"1 unexpected \(such as score.weight\)"):
        models.load_policy(policy_dir)


# ----- damaged files -----

def test_a_tokenizer_that_is_not_the_models_is_refused(policy_dir, base_tokenizer):
    tokenizer_file = policy_dir / "tokenizer.json"

    def swap_two_tokens(data):
        vocab = data["model"]["vocab"]
        a, b = "Ġegg", "Ġboil"
        vocab[a], vocab[b] = vocab[b], vocab[a]
    _edit_json(tokenizer_file, swap_two_tokens)
    with pytest.raises(CheckpointError, match=r"tokenizer files in .* are not the ones its model was saved with"):
        models.load_policy(policy_dir)
    with pytest.raises(CheckpointError, match="not the ones its model was saved with"):
        models.load_tokenizer(policy_dir)


@pytest.mark.parametrize("damage", [lambda blob: b"", lambda blob: blob[: len(blob) // 2], lambda blob: blob[:-1]],
                         ids=["empty", "half", "one byte short"])
def test_an_empty_or_cut_off_safetensors_file_is_refused(policy_dir, damage):
    weights = policy_dir / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(CheckpointError, match="model.safetensors is empty or cut off"):
        models.load_policy(policy_dir)


def test_a_pickle_checkpoint_is_never_opened_and_the_message_says_how_to_convert(policy_dir, monkeypatch):
    (policy_dir / "model.safetensors").unlink()
    (policy_dir / "pytorch_model.bin").write_bytes(b"not even a pickle")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a checkpoint")
    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(CheckpointError, match=r"only pytorch_model.bin.*GPT2LMHeadModel.from_pretrained\(folder, "
                                              r"use_safetensors=False\).save_pretrained\(folder\)"):
        models.load_policy(policy_dir)


def test_missing_weights_say_so(policy_dir):
    (policy_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        models.load_policy(policy_dir)


@pytest.mark.parametrize("text, problem", [("{\"model_type\": \"gpt2\",", "is not valid JSON"),
                                           ("[1, 2]", "holds a JSON list, not an object"),
                                           ("\xff\xfe", "cannot be read")])
def test_a_broken_config_json_names_the_file(policy_dir, text, problem):
    (policy_dir / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(CheckpointError, match=rf"config.json {problem}"):
        models.load_policy(policy_dir)


def test_a_missing_config_json_is_a_checkpoint_error_and_still_a_file_not_found(policy_dir):
    (policy_dir / "config.json").unlink()
    with pytest.raises(CheckpointMissing, match="no checkpoint at .*save_pretrained") as caught:
        models.load_policy(policy_dir)
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, CheckpointError)


def test_a_broken_manifest_names_the_file(policy_dir):
    (policy_dir / "manifest.json").write_text("{\"stage\": ")
    with pytest.raises(CheckpointError, match="manifest.json is not valid JSON"):
        models.load_policy(policy_dir)


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_a_cut_off_tokenizer_file_names_the_file(policy_dir, name):
    file = policy_dir / name
    file.write_text(file.read_text()[:50])
    with pytest.raises(CheckpointError, match=rf"{name} is not valid JSON"):
        models.load_tokenizer(policy_dir)


def test_a_checkpoint_without_tokenizer_files_says_they_are_missing(policy_dir):
    (policy_dir / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no tokenizer files \(tokenizer.json is missing\)"):
        models.load_policy(policy_dir)


def test_non_finite_weights_are_refused_on_load(policy_dir, reward_dir):
    for folder, model_class, load in [(policy_dir, GPT2LMHeadModel, models.load_policy),
                                      (reward_dir, GPT2ForSequenceClassification, reward.load_reward_model)]:
        model = model_class.from_pretrained(folder)
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
        model.save_pretrained(folder)  # as a run saved before save_checkpoint refused NaN would have
        with pytest.raises(CheckpointError, match=r"not finite numbers \(NaN or infinity in transformer.h.0.mlp"):
            load(folder)


def test_good_checkpoints_load_as_before(policy_dir, reward_dir, tiny_model, base_tokenizer):
    model, tokenizer = models.load_policy(policy_dir)
    ids = torch.tensor([base_tokenizer.encode("User: Hello!")])
    assert torch.equal(model(ids).logits, tiny_model(ids).logits) and not model.training
    rm, _ = reward.load_reward_model(reward_dir)
    assert rm.config.num_labels == 1 and not rm.training
    fresh, _ = reward.reward_model_from(policy_dir)
    assert torch.equal(fresh.transformer.wte.weight, model.transformer.wte.weight)
    assert fresh.config.pad_token_id == base_tokenizer.pad_token_id
    models.load_policy("base")
