import pytest
import torch

from rlhf_lessons.sampling import draw_tokens, left_pad, positions, sample_replies, temperature_probs

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
    """The KV-cached sampler draws exactly the tokens that recomputing every step without a cache draws."""
    s = sample_replies(tiny_model, base_tokenizer, PROMPTS, max_new_tokens=12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference_replies(tiny_model, base_tokenizer, PROMPTS, 12, seed=0)
    assert s.reply_ids.shape[0] == 3 and s.input_ids.shape == s.attention_mask.shape
    assert torch.equal(s.reply_ids, expected[:, :s.reply_ids.shape[1]])
    # and the sequence it returns is one a cache-free forward pass can score
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


def test_draw_tokens_follows_the_probabilities_and_never_draws_a_zero():
    probs = torch.tensor([[0.0, 0.2, 0.0, 0.5, 0.3]])
    u = torch.linspace(0, 1, 10_001)[:-1]  # an even grid over [0, 1)
    drawn = draw_tokens(probs.expand(len(u), -1), u)
    freq = torch.bincount(drawn, minlength=5).float() / len(u)
    assert torch.allclose(freq, probs[0], atol=1e-3)
    assert draw_tokens(probs, torch.tensor([0.0])).item() == 1  # u = 0 skips the zero-probability token 0
    assert draw_tokens(probs, torch.tensor([0.9999999])).item() == 4


def reference_replies(model, tokenizer, prompts, max_new_tokens, seed):
    """The same draws, the slow way: every row, every step, the whole sequence again without a cache."""
    gen = torch.Generator().manual_seed(seed)
    ids, mask = left_pad(tokenizer, prompts, max_new_tokens)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    done = torch.zeros(len(prompts), dtype=torch.bool)
    out = []
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits[:, -1].clone()
        logits[:, pad] = float("-inf")
        token = draw_tokens(temperature_probs(logits), torch.rand(len(prompts), generator=gen))
        token = torch.where(done, torch.full_like(token, pad), token)
        out.append(token)
        done |= token == eos
        if done.all():
            break
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, (~done | (token == eos)).long()[:, None]], 1)
    return torch.stack(out, 1)


def test_rows_that_end_leave_the_batch_without_changing_any_reply(base_tokenizer, tiny_model):
    bias = torch.zeros(tiny_model.config.vocab_size)
    bias[base_tokenizer.eos_token_id] = 4.0  # EOS likely enough that rows end at different steps
    tiny_model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    prompts = PROMPTS * 4  # each prompt in four rows: one prefill, its cache copied to the others
    with torch.no_grad():
        expected = reference_replies(tiny_model, base_tokenizer, prompts, 12, seed=5)
    s = sample_replies(tiny_model, base_tokenizer, prompts, 12, generator=torch.Generator().manual_seed(5))
    lengths = s.reply_mask.sum(1)
    assert len(set(lengths.tolist())) > 2 and s.ended.any() and not s.ended.all()  # uneven endings happened
    assert torch.equal(s.reply_ids, expected)
