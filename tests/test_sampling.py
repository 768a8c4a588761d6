import pytest
import torch

from rlhf_lessons.sampling import left_pad, positions, sample_replies

PROMPTS = ["Hello!", "How long should I boil an egg?", "Quick question: What is the best way to terminate a loop?"]


def full_forward_logprob(model, ids, mask):
    """Log-prob of each next token, recomputed without any cache: (B, T-1)."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def test_left_padding_aligns_prompt_ends(base_tokenizer):
    ids, mask = left_pad(base_tokenizer, PROMPTS)
    assert (mask[:, -1] == 1).all()
    assert (ids[mask == 0] == base_tokenizer.pad_token_id).all()
    assert positions(mask)[0, -1] == mask[0].sum() - 1


def test_padding_does_not_change_the_model_output(base_tokenizer, tiny_model):
    ids, mask = left_pad(base_tokenizer, PROMPTS)
    alone_ids, alone_mask = left_pad(base_tokenizer, PROMPTS[:1])
    batched = tiny_model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits[0, -1]
    alone = tiny_model(input_ids=alone_ids, attention_mask=alone_mask, position_ids=positions(alone_mask)).logits[0, -1]
    assert torch.allclose(batched, alone, atol=1e-5)


def test_cached_sampling_matches_a_full_forward_pass(base_tokenizer, tiny_model):
    gen = torch.Generator().manual_seed(0)
    s = sample_replies(tiny_model, base_tokenizer, PROMPTS, max_new_tokens=12, generator=gen)
    assert s.reply_ids.shape[0] == 3 and s.input_ids.shape == s.attention_mask.shape
    # every sampled token is one the model gives non-negligible probability without a cache
    lp = full_forward_logprob(tiny_model, s.input_ids, s.attention_mask)[:, s.prompt_ids.shape[1] - 1:]
    assert torch.isfinite(lp[s.reply_mask.bool()]).all()


def test_sampling_is_deterministic_given_the_generator(base_tokenizer, tiny_model):
    a = sample_replies(tiny_model, base_tokenizer, PROMPTS, 10, generator=torch.Generator().manual_seed(1))
    b = sample_replies(tiny_model, base_tokenizer, PROMPTS, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.reply_ids, b.reply_ids) and a.texts == b.texts


def test_rows_stop_at_eos_and_are_padded_after(base_tokenizer, tiny_model):
    eos, pad = base_tokenizer.eos_token_id, base_tokenizer.pad_token_id
    with torch.no_grad():  # make EOS overwhelmingly likely so every row ends at once
        tiny_model.lm_head.weight[eos] += 50 * tiny_model.transformer.wte.weight.std()
        tiny_model.transformer.ln_f.bias.zero_()
    bias = torch.zeros(tiny_model.config.vocab_size)
    bias[eos] = 1e4
    tiny_model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    s = sample_replies(tiny_model, base_tokenizer, PROMPTS, 10, generator=torch.Generator().manual_seed(0))
    assert s.ended.all() and s.reply_ids.shape[1] == 1 and (s.reply_ids[:, 0] == eos).all()
    assert s.texts == ["", "", ""]
    assert pad not in s.reply_ids[s.reply_mask.bool()].tolist()


def test_unended_replies_are_flagged(base_tokenizer, tiny_model):
    bias = torch.zeros(tiny_model.config.vocab_size)
    bias[base_tokenizer.eos_token_id] = -1e4
    tiny_model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    s = sample_replies(tiny_model, base_tokenizer, PROMPTS, 6, generator=torch.Generator().manual_seed(0))
    assert not s.ended.any() and s.reply_mask.sum() == 18


def test_too_long_prompt_gets_a_clear_error(base_tokenizer, tiny_model):
    with pytest.raises(ValueError, match="context"):
        sample_replies(tiny_model, base_tokenizer, ["egg " * 200], max_new_tokens=10)
    with pytest.raises(ValueError, match="temperature"):
        sample_replies(tiny_model, base_tokenizer, PROMPTS, temperature=0)
