"""Packing computes what padding computes: the same hidden states, log-probs, values and gradients, fewer positions."""

import copy
import random

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_lessons import ppo
from rlhf_lessons.packing import best_capacity, first_fit_decreasing, hidden_states, pack

PAD = 1


def tiny_model(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=4, pad_token_id=PAD,
                        eos_token_id=0, bos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def prompt_reply_batch(seed=0, batch=12, prompt_max=9, reply_max=11):
    """A PPO-shaped batch: left-padded prompts (B, P) beside right-padded replies (B, R), uneven lengths."""
    rng = random.Random(seed)
    prompts = [[rng.randrange(2, 50) for _ in range(rng.randint(2, prompt_max))] for _ in range(batch)]
    replies = [[rng.randrange(2, 50) for _ in range(rng.randint(1, reply_max))] for _ in range(batch)]
    P, R = max(map(len, prompts)), max(map(len, replies))
    ids = torch.full((batch, P + R), PAD)
    attn = torch.zeros((batch, P + R), dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompts, replies)):
        ids[b, P - len(p):P] = torch.tensor(p)
        ids[b, P:P + len(r)] = torch.tensor(r)
        attn[b, P - len(p):P + len(r)] = 1
    return ids, attn, P


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_fit_decreasing_places_every_sequence_without_overlap(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 40) for _ in range(50)]
    capacity = best_capacity(lengths)
    assert max(lengths) <= capacity <= 3 * max(lengths)
    used = {}
    for i, (row, offset) in enumerate(first_fit_decreasing(lengths, capacity)):
        assert offset + lengths[i] <= capacity  # inside its row, never split
        for col in range(offset, offset + lengths[i]):
            assert (row, col) not in used, f"sequences {used.get((row, col))} and {i} overlap"
            used[(row, col)] = i
    rows = 1 + max(r for r, _ in used)
    assert rows * capacity < 2 * sum(lengths)  # far denser than padding all 50 to the longest


def test_first_fit_decreasing_refuses_a_sequence_longer_than_a_row():
    with pytest.raises(ValueError, match="does not fit"):
        first_fit_decreasing([3, 9], 8)


def test_pack_lays_real_tokens_end_to_end_with_their_own_positions():
    ids, attn, _ = prompt_reply_batch()
    packing = pack(ids, attn, PAD)
    assert packing.slots.numel() == int(attn.sum())
    flat_ids, flat_pos = packing.input_ids.reshape(-1), packing.position_ids.reshape(-1)
    assert torch.equal(flat_ids[packing.slots], ids[attn.bool()])
    assert torch.equal(flat_pos[packing.slots], (attn.cumsum(1) - 1)[attn.bool()])
    assert packing.real_share > attn.float().mean().item()  # fewer positions than the padded batch
    # attention: a token sees itself and earlier tokens of its own sequence, nothing else
    allowed = packing.attention_mask[:, 0] == 0
    assert bool(allowed.diagonal(dim1=1, dim2=2).all())  # no empty attention row, padding included
    assert not bool(allowed.triu(1).any())  # causal
    first = packing.slots[0]  # first token of padded row 0 sees only itself
    row, col = divmod(int(first), packing.input_ids.shape[1])
    assert int(allowed[row, col].sum()) == 1


def test_pack_refuses_rows_with_holes():
    ids = torch.tensor([[5, 6, 7, 8]])
    with pytest.raises(ValueError, match="side by side"):
        pack(ids, torch.tensor([[1, 0, 1, 1]]), PAD)


@pytest.mark.parametrize("seed", [0, 1])
def test_packed_hidden_states_equal_padded_ones(seed):
    model = tiny_model(seed)
    ids, attn, _ = prompt_reply_batch(seed)
    padded = hidden_states(model.transformer, ids, attn, packed=False)
    packed = hidden_states(model.transformer, ids, attn, packed=True)
    real = attn.bool()
    assert torch.allclose(packed[real], padded[real], atol=1e-5)
    assert bool((packed[~real] == 0).all())


@pytest.mark.parametrize("value_model", ["shared", "reward"])
def test_packed_ppo_pass_equals_padded_in_values_logprobs_and_gradients(value_model):
    ids, attn, P = prompt_reply_batch(3)
    mask = attn[:, P:]
    results = []
    for packed in (False, True):
        policy = tiny_model(0)
        critic = ppo.make_value_model(policy, None, value_model)
        torch.manual_seed(1)
        torch.nn.init.normal_(critic.head.weight, std=0.5)  # a non-zero critic, so its gradients mean something
        logits, values = ppo.policy_and_values(policy, critic, ids, attn, P, temperature=0.7, packed=packed)
        logp = ppo.token_logprobs(logits, ids[:, P:], mask)
        loss = -(logp * mask).sum() + (values ** 2).sum()
        loss.backward()
        grads = torch.cat([p.grad.reshape(-1) for p in list(policy.parameters()) + list(critic.parameters())
                           if p.grad is not None])
        results.append((logp.detach(), values.detach(), grads))
    (logp_a, values_a, grads_a), (logp_b, values_b, grads_b) = results
    assert torch.allclose(logp_a, logp_b, atol=1e-5)
    assert torch.allclose(values_a, values_b, atol=1e-5)
    assert torch.allclose(grads_a, grads_b, atol=1e-4, rtol=1e-4)
    assert bool((logp_b[mask == 0] == 0).all())


def test_packed_logprobs_of_a_reference_equal_padded():
    model = tiny_model(2)
    reference = copy.deepcopy(model)
    ids, attn, P = prompt_reply_batch(4)
    with torch.no_grad():
        a = ppo.logprobs_of(reference, ids, attn, P, 1.0, packed=False)
        b = ppo.logprobs_of(reference, ids, attn, P, 1.0, packed=True)
    assert torch.allclose(a, b, atol=1e-5)


def test_reply_logits_match_the_full_lm_head_on_reply_tokens():
    """Running the head on reply tokens only gives the logits model(...) computes there."""
    model = tiny_model(5)
    ids, attn, P = prompt_reply_batch(5)
    mask = attn[:, P:].bool()
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(1) - 1).clamp(min=0)).logits
        expected = full[:, P - 1:-1] / 0.5
        got = ppo.reply_logits(model, ids, attn, P, 0.5)
    keep = torch.ones(model.config.vocab_size, dtype=torch.bool)
    keep[PAD] = False
    assert torch.allclose(got[mask][:, keep], expected[mask][:, keep], atol=1e-4)
    assert bool(torch.isinf(got[..., PAD]).all())


def test_packed_reward_scores_equal_padded():
    from transformers import GPT2ForSequenceClassification

    from rlhf_lessons.reward import score_ids
    torch.manual_seed(0)
    rm = GPT2ForSequenceClassification(tiny_model(0).config).eval()
    rm.config.num_labels = 1
    rm.score = torch.nn.Linear(rm.config.n_embd, 1)
    ids, attn, _ = prompt_reply_batch(6)
    with torch.no_grad():
        assert torch.allclose(score_ids(rm, ids, attn, packed=True), score_ids(rm, ids, attn, packed=False),
                              atol=1e-5)


def test_packed_sft_loss_and_gradients_equal_padded(base_tokenizer):
    from rlhf_lessons import sft
    examples = [("How do I boil an egg?", "Put it in boiling water for eight minutes."),
                ("Hi", "Hello! How can I help?"), ("What is two plus two?", "Four.")]
    batch = sft.collate(base_tokenizer, examples)
    results = []
    for packed in (False, True):
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=len(base_tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4,
                            pad_token_id=base_tokenizer.pad_token_id, eos_token_id=base_tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config).eval()
        loss = sft.batch_loss(model, batch, packed=packed)
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5, rtol=1e-4)
