"""Exercise checks: each takes the learner's function, runs it on cases with known answers, and raises an
AssertionError that says what went wrong. Every check rejects the classic mistakes of its exercise (the tests in
tests/test_exercises_*.py prove it), and each exercise's reference answer is the package function it names.
"""

from __future__ import annotations

import torch


def _fail(message: str) -> None:
    raise AssertionError(message)


def _passed(name: str) -> None:
    """Say so when every case matched (printed, not returned, so a notebook cell shows it once)."""
    print(f"correct: your {name} matches the reference on every case")


# ---- lesson 00: welcome ----

def check_single_pair_ceiling(answer) -> None:
    """Lesson 00: the noise ceiling of one pair with gold scores 1.0 and 0.0 at noise 0.5 is sigmoid(2)."""
    import math

    if answer is None:
        _fail("replace None with your expression")
    expected = 1 / (1 + math.exp(-2.0))
    value = float(answer)
    if abs(value - 1 / (1 + math.exp(-1.0))) < 1e-6:
        _fail("you used the score gap 1.0 directly: divide the gap by the noise (0.5) first")
    if abs(value - (1 - expected)) < 1e-6:
        _fail("that is the chance of agreeing with the *worse* reply: the best guess picks the likelier one")
    if abs(value - expected) > 1e-6:
        _fail(f"{value:.4f} is not the probability that the likelier choice is made; use the Bradley-Terry formula")
    return _passed("noise ceiling")


# ---- lesson 01: base model ----

def check_temperature_probs(fn) -> None:
    """Lesson 01: fn(logits, temperature) must equal softmax(logits / temperature) over the last dimension."""
    from .sampling import temperature_probs

    gen = torch.Generator().manual_seed(0)
    cases = [(torch.randn(7, generator=gen) * 3, t) for t in (0.5, 1.0, 2.0)]
    cases.append((torch.randn(2, 3, 11, generator=gen), 0.7))
    for logits, t in cases:
        got = fn(logits.clone(), t)
        if not isinstance(got, torch.Tensor) or got.shape != logits.shape:
            _fail(f"return a tensor of the logits' shape {tuple(logits.shape)}")
        if not torch.allclose(got.sum(-1), torch.ones(logits.shape[:-1]), atol=1e-5):
            _fail("probabilities must sum to 1 over the last dimension (the vocabulary)")
        if torch.allclose(got, torch.softmax(logits * t, -1), atol=1e-6) and t != 1.0:
            _fail("you multiplied by the temperature: divide the logits by it")
        want = temperature_probs(logits, t)
        if not torch.allclose(got, want, atol=1e-5):
            hint = " (temperature seems to be ignored)" if torch.allclose(got, torch.softmax(logits, -1)) else ""
            _fail(f"at temperature {t} your probabilities differ from softmax(logits / temperature){hint}")
    return _passed("temperature_probs")


# ---- lesson 02: SFT ----

def check_reply_loss(fn) -> None:
    """Lesson 02: fn(logits (B,T,V), input_ids (B,T), reply_mask (B,T)) -> the mean next-token loss on reply tokens.

    reply_mask is 1 on the reply's tokens (EOS included), 0 on prompt and padding. Reference: sft.masked_lm_loss
    with labels = input_ids where reply_mask is 1, IGNORE elsewhere.
    """
    from .sft import IGNORE, masked_lm_loss

    gen = torch.Generator().manual_seed(0)
    B, T, V = 3, 9, 13
    logits = torch.randn(B, T, V, generator=gen) * 2
    input_ids = torch.randint(0, V, (B, T), generator=gen)
    reply_mask = torch.zeros(B, T, dtype=torch.long)
    reply_mask[0, 4:9] = 1  # prompt of 4, reply of 5
    reply_mask[1, 3:6] = 1  # prompt of 3, reply of 3, then padding
    reply_mask[2, 6:8] = 1  # prompt of 6, reply of 2, then padding
    want = masked_lm_loss(logits, input_ids.masked_fill(reply_mask == 0, IGNORE))
    got = fn(logits.clone(), input_ids.clone(), reply_mask.clone())
    if not isinstance(got, torch.Tensor) or got.dim() != 0:
        _fail("return a scalar tensor (the mean loss)")
    if torch.allclose(got, want, atol=1e-5):
        return _passed("reply-masked loss")
    ce = torch.nn.functional.cross_entropy
    everything = ce(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1))
    unshifted = ce(logits.reshape(-1, V), input_ids.masked_fill(reply_mask == 0, IGNORE).reshape(-1), ignore_index=IGNORE)
    if torch.allclose(got, everything, atol=1e-5):
        _fail("your loss counts every token, the prompt (and padding) too: only reply tokens should be learned")
    if torch.allclose(got, unshifted, atol=1e-5):
        _fail("the labels are not shifted: logits at position t predict the token at t + 1")
    _fail(f"your loss is {got.item():.4f} but the mean cross-entropy over reply tokens is {want.item():.4f}; "
          "check which positions you mask and what you divide by")


# ---- lesson 03: feedback ----

def _as_pairs(value, order) -> list[tuple[int, int]]:
    """The learner's return value as a list of (winner, loser) tuples, or a message saying what to return."""
    try:
        items = list(value)
    except TypeError:
        _fail(f"for the ranking {order} your function returned {value!r:.80}; return a list of (winner, loser) pairs")
    pairs = []
    for pair in items:
        pair = tuple(pair) if isinstance(pair, (tuple, list)) else (pair,)
        pairs.append(pair)
        if len(pair) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in pair):
            _fail(f"for the ranking {order} your function returned the element {pair!r:.60}; every element must be "
                  "a pair of two reply indices, (winner, loser)")
    return pairs


def check_ranking_pairs(fn) -> None:
    """Lesson 03: fn(order) -> every (winner, loser) pair of a ranking given best first, each pair once.

    A ranking of K replies says the reply in place i beats the reply in every later place j > i: C(K, 2) pairs.
    Reference: rlhf_lessons.store.ranking_pairs. The pairs may come in any order.
    """
    import itertools

    from .store import ranking_pairs

    for order in ([0, 1], [2, 0, 1], [1, 3, 0, 2], [4, 2, 0, 1, 3], [0]):
        got = _as_pairs(fn(list(order)), order)
        want = ranking_pairs(order)
        if sorted(got) == sorted(want):
            continue
        k, n_want = len(order), len(want)
        self_pairs = [pair for pair in got if pair[0] == pair[1]]
        if self_pairs:
            _fail(f"for the ranking {order} you paired a reply with itself, {self_pairs[0]}: a reply cannot beat "
                  "itself; pair each place i only with the later places j > i")
        if sorted(got) == sorted((loser, winner) for winner, loser in want):
            _fail(f"for the ranking {order} your pairs are (loser, winner): the order is best first, so "
                  f"order[0] = {order[0]} is the winner of all its pairs; put the winner first")
        if len(set(got)) < len(got):
            twice = next(pair for pair in got if got.count(pair) > 1)
            _fail(f"for the ranking {order} the pair {twice} appears {got.count(twice)} times: each pair counts once")
        both = [(a, b) for a, b in got if (b, a) in got]
        if both:
            _fail(f"for the ranking {order} you list both {both[0]} and {both[0][::-1]}: the ranking says only one "
                  "of them; keep each unordered pair once, winner first (place i before place j > i)")
        if sorted(got) == sorted(zip(order, order[1:])):
            _fail(f"for the ranking {order} you gave only neighbours ({len(got)} pairs); a ranking of {k} also says "
                  f"the first beats the third and so on: all C({k},2) = {n_want} pairs of places i < j")
        if order != sorted(order) and sorted(got) == sorted(itertools.combinations(range(k), 2)):
            _fail(f"for the ranking {order} you paired places (0, 1), (0, 2), ... instead of the replies in them: "
                  "the winner of places (i, j) is reply order[i], the loser order[j]")
        if len(got) != n_want:
            _fail(f"a ranking of {k} replies gives C({k},2) = {n_want} pairs; for {order} you returned {len(got)}")
        missing = sorted(set(want) - set(got))
        _fail(f"for the ranking {order} your pairs {sorted(got)} are not all (winner, loser) pairs: for example "
              f"{missing[0] if missing else want[0]} is missing")
    return _passed("ranking_pairs")


# ---- lesson 04: reward model ----

def _as_loss(value, name: str) -> torch.Tensor:
    """The learner's return value, checked to be a scalar tensor (a number autograd can differentiate)."""
    if not isinstance(value, torch.Tensor):
        _fail(f"your {name} returned {type(value).__name__}; return a torch tensor (a 0-dim one, the mean loss) so "
              "that loss.backward() can train the reward model")
    if value.dim() != 0:
        _fail(f"your {name} returned a tensor of shape {tuple(value.shape)}; return one number, the mean over the "
              "batch (e.g. finish with .mean())")
    return value


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    return bool(torch.isfinite(got)) and torch.allclose(got.double(), want.double(), rtol=rtol, atol=atol)


def _check_large_gaps(fn, make_inputs, grad_of, name: str) -> None:
    """A reward model can be very sure: at gaps of +-1e4 the loss must stay finite with the right gradient."""
    for gap in (1e4, -1e4):
        inputs = make_inputs(gap)  # tensors with requires_grad
        loss = _as_loss(fn(*inputs), name)
        if not torch.isfinite(loss):
            _fail(f"your {name} gives {loss.item()} at a reward gap of {gap:g}. torch.log(torch.sigmoid(x)) "
                  "rounds sigmoid(-1e4) to 0 and log(0) = -inf: use F.logsigmoid(x) (or -F.softplus(-x)), which "
                  "never forms the tiny probability")
        want_loss, want_grad = grad_of(gap)
        if not abs(loss.item() - want_loss) <= 1e-4 * max(1.0, abs(want_loss)):
            _fail(f"at a reward gap of {gap:g} your {name} is {loss.item():.6g}, expected {want_loss:.6g}: "
                  "-log sigmoid(-1e4) is 1e4 and -log sigmoid(1e4) is 0")
        loss.backward()
        grad = inputs[0].grad
        if grad is None or not torch.isfinite(grad).all():
            _fail(f"at a reward gap of {gap:g} the gradient of your {name} is {grad}: not finite. Use F.logsigmoid, "
                  "whose gradient is sigmoid(-x), finite everywhere")
        if not torch.allclose(grad.double(), want_grad.double(), atol=1e-6):
            _fail(f"at a reward gap of {gap:g} the gradient of your {name} with respect to the first rewards is "
                  f"{grad.tolist()}, expected {want_grad.tolist()}")


def check_bradley_terry_loss(fn) -> None:
    """Check fn(r_chosen, r_rejected) -> mean of -log sigmoid(r_chosen - r_rejected) (reference:
    rlhf_lessons.reward.bradley_terry_loss). If fn takes a `margin` argument, that is checked too."""
    import inspect

    from .reward import bradley_terry_loss as reference

    name = "Bradley-Terry loss"
    # One pair the rater got "right" (chosen scores higher): the loss must be small, not large.
    got = _as_loss(fn(torch.tensor([3.0]), torch.tensor([0.0])), name)
    want = reference(torch.tensor([3.0]), torch.tensor([0.0]))
    if _close(got, reference(torch.tensor([0.0]), torch.tensor([3.0]))):
        _fail(f"for r_chosen = 3, r_rejected = 0 your loss is {got.item():.4f}, the loss of the *opposite* choice. "
              "The model should be rewarded for scoring the chosen reply higher: -log sigmoid(r_chosen - r_rejected)")
    if not _close(got, want):
        _fail(f"for r_chosen = 3, r_rejected = 0 your loss is {got.item():.4f}, expected -log sigmoid(3) = "
              f"{want.item():.4f}")
    # A batch: the mean, not the sum, over pairs.
    r_c, r_r = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    got, want = _as_loss(fn(r_c, r_r), name), reference(r_c, r_r)
    if _close(got, want * 3):
        _fail(f"on a batch of 3 pairs your loss is {got.item():.4f} = 3 x {want.item():.4f}: average over the "
              "pairs (.mean()), so the step size does not depend on the batch size")
    if not _close(got, want):
        _fail(f"on r_chosen = {r_c.tolist()}, r_rejected = {r_r.tolist()} your loss is {got.item():.4f}, "
              f"expected {want.item():.4f} (the mean of -log sigmoid(r_chosen - r_rejected))")
    # Only differences matter: adding 100 to both rewards changes nothing.
    shifted = _as_loss(fn(r_c + 100.0, r_r + 100.0), name)
    if not _close(shifted, want):
        _fail(f"adding 100 to both rewards changed your loss from {got.item():.4f} to {shifted.item():.4f}; the "
              "Bradley-Terry loss depends only on the difference r_chosen - r_rejected")
    _check_large_gaps(fn, lambda gap: (torch.tensor([gap, gap], requires_grad=True), torch.zeros(2)),
                      lambda gap: (max(-gap, 0.0), torch.full((2,), -0.5 if gap < 0 else 0.0)), name)
    if "margin" in inspect.signature(fn).parameters:
        got, want = _as_loss(fn(r_c, r_r, margin=1.0), name), reference(r_c, r_r, margin=1.0)
        if not _close(got, want):
            _fail(f"with margin = 1 your loss is {got.item():.4f}, expected {want.item():.4f}: the chosen reply "
                  "must win by the margin, -log sigmoid(r_chosen - r_rejected - margin)")
    _passed(name)


def check_kwise_loss(fn) -> None:
    """Check fn(rewards (B, K), each row best first) -> InstructGPT's ranking loss
    -1/C(K,2) sum_{i<j} log sigmoid(r_i - r_j), averaged over the batch (reference: reward.kwise_ranking_loss)."""
    from .reward import kwise_ranking_loss as reference

    name = "K-wise ranking loss"
    # K = 2 (plain Bradley-Terry), K = 4 and 5 (C(K, 2) = 6 and 10 pairs), and a batch of two rankings.
    for rewards in (torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 1.0, 0.0, -2.0]]),
                    torch.tensor([[0.5, 2.0, -1.0, 0.0, 1.0]]),
                    torch.tensor([[3.0, 1.0, 0.0, -2.0], [-1.0, 0.5, 2.0, 0.0]])):
        B, K = rewards.shape
        n_pairs = K * (K - 1) // 2
        got, want = _as_loss(fn(rewards), name), reference(rewards)
        if _close(got, reference(rewards.flip(1))):
            _fail(f"your loss on {rewards.tolist()} equals the loss of the reversed rankings: rows are ordered "
                  "best first, so a reply ranked above another should score higher: -log sigmoid(r_i - r_j), i < j")
        if n_pairs > 1 and _close(got, want * n_pairs):
            _fail(f"for K = {K} your loss is {got.item():.4f} = {n_pairs} x the expected {want.item():.4f}: you "
                  f"summed over the C({K},2) = {n_pairs} pairs; divide by C(K,2) (take the mean over pairs)")
        if _close(got, want * n_pairs / K):
            _fail(f"for K = {K} your loss is {got.item():.4f}, the expected {want.item():.4f} x C(K,2)/K: you divided "
                  f"by K = {K}, but a ranking of K has C(K,2) = {n_pairs} pairs; divide by C(K,2)")
        if B > 1 and _close(got, want * B):
            _fail(f"on a batch of {B} rankings your loss is {got.item():.4f} = {B} x {want.item():.4f}: average over "
                  "the batch as well")
        if not _close(got, want):
            _fail(f"for rewards {rewards.tolist()} (best first) your loss is {got.item():.4f}, expected "
                  f"{want.item():.4f} = -1/C(K,2) sum over i<j of log sigmoid(r_i - r_j), averaged over the batch"
                  + (" (K = 2 is the Bradley-Terry loss)" if K == 2 else ""))
    _check_large_gaps(fn, lambda gap: (torch.tensor([[gap, 0.0]], requires_grad=True),),
                      lambda gap: (max(-gap, 0.0), torch.tensor([[-1.0, 1.0]]) if gap < 0 else torch.zeros(1, 2)),
                      name)
    _passed(name)


# ---- lesson 05: PPO ----

def _ppo_tensor(value, name: str, shape=None) -> torch.Tensor:
    """The learner's tensor, checked for type, shape and finiteness."""
    if not isinstance(value, torch.Tensor):
        _fail(f"your {name} is a {type(value).__name__}; return a torch tensor")
    if shape is not None and tuple(value.shape) != tuple(shape):
        _fail(f"your {name} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if not torch.isfinite(value).all():
        _fail(f"your {name} holds inf or nan: {value.tolist()}")
    return value


def _rounded(x: torch.Tensor) -> list:
    return [[round(v, 4) for v in row] for row in x.tolist()]


def _gae_cases():
    """(rewards, values, mask, gamma, lam) cases: one by hand, then a batch with replies of different lengths.

    Rewards and values after EOS are large garbage: a correct GAE never looks at them.
    """
    yield (torch.tensor([[0.0, 0.0, 1.0, 9.0]]), torch.tensor([[0.5, 0.2, 0.4, 7.0]]),
           torch.tensor([[1, 1, 1, 0]]), 1.0, 0.5)
    gen = torch.Generator().manual_seed(5)
    lengths = torch.tensor([6, 2, 4, 1, 5])
    mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
    rewards = torch.where(mask.bool(), torch.randn(5, 6, generator=gen), torch.full((5, 6), 50.0))
    values = torch.where(mask.bool(), torch.randn(5, 6, generator=gen), torch.full((5, 6), -30.0))
    yield rewards, values, mask, 0.9, 0.8


def _gae_forward(rewards, values, mask, gamma, lam):
    """A wrong GAE: the recursion run forwards, A_t = delta_t + gamma lam A_{t-1}."""
    m = mask.to(values.dtype)
    next_values = torch.cat([values[:, 1:] * m[:, 1:], torch.zeros_like(values[:, :1])], 1)
    deltas = rewards + gamma * next_values - values
    advantages, running = torch.zeros_like(rewards), torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1]):
        running = deltas[:, t] + gamma * lam * running
        advantages[:, t] = running
    return advantages * m


def _gae_leaky(rewards, values, mask, gamma, lam, mask_delta: bool, mask_recursion: bool):
    """A wrong GAE that lets padding after EOS in: through V_(t+1) in delta and/or through A_(t+1) in the recursion."""
    m = mask.to(values.dtype)
    advantages, running = torch.zeros_like(rewards), torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_mask = m[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value * (next_mask if mask_delta else 1) - values[:, t]
        running = delta + gamma * lam * running * (next_mask if mask_recursion else 1)
        advantages[:, t] = running
    return advantages * m


def check_gae(fn) -> None:
    """Check fn(rewards, values, mask, gamma, lam) -> advantages (B, R) or (advantages, returns), all (B, R).

    Reference: rlhf_lessons.ppo.gae:
        delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t;   A_t = delta_t + gamma * lam * m_{t+1} * A_{t+1}
    computed from the last reply token back to the first; returns = A + V; everything 0 after EOS.
    """
    from .ppo import gae as reference

    name = "GAE"
    for rewards, values, mask, gamma, lam in _gae_cases():
        out = fn(rewards.clone(), values.clone(), mask.clone(), gamma, lam)
        got_returns = None
        if isinstance(out, tuple):
            if len(out) != 2:
                _fail(f"your {name} returned {len(out)} values; return advantages, or (advantages, returns)")
            out, got_returns = out
        got = _ppo_tensor(out, "advantages", rewards.shape).double()
        want, want_returns = (t.double() for t in reference(rewards, values, mask, gamma, lam))
        valid = mask.bool()
        if rewards.shape[0] == 1:
            case = (f"rewards {_rounded(rewards)}, values {_rounded(values)}, mask {mask.tolist()}, "
                    f"gamma {gamma}, lam {lam}")
        else:
            case = f"a batch of {rewards.shape[0]} replies of different lengths, gamma {gamma}, lam {lam}"
        if torch.allclose(got, _gae_forward(rewards, values, mask, gamma, lam).double(), atol=1e-5):
            _fail(f"your {name} runs the recursion forwards (A_t from A_(t-1)). An advantage looks into the future: "
                  "A_t = delta_t + gamma * lam * A_(t+1), so loop t from the last token back to the first "
                  "(for t in reversed(range(R))).")
        if not torch.allclose(got[~valid], torch.zeros_like(got[~valid]), atol=1e-6):
            _fail(f"on {case} your advantages after EOS are not 0: {_rounded(got)}. Tokens after the end of a reply "
                  "are padding, not actions: multiply by the mask.")
        leaks = [_gae_leaky(rewards, values, mask, gamma, lam, d, r).double() for d, r in
                 ((False, False), (True, False), (False, True))]
        if any(torch.allclose(got, leak, atol=1e-5) for leak in leaks) and not torch.allclose(got, want, atol=1e-5):
            _fail(f"on {case} the values and rewards of padding after EOS leaked into your advantages. After the last "
                  "reply token there is no next state: use V_(t+1) * m_(t+1) in delta and gamma * lam * m_(t+1) * "
                  "A_(t+1) in the recursion.")
        if not torch.allclose(got, want, atol=1e-5):
            _fail(f"on {case} your advantages are {_rounded(got)}, expected "
                  f"{_rounded(want)}. delta_t = r_t + gamma * V_(t+1) - V_t; "
                  "A_t = delta_t + gamma * lam * A_(t+1).")
        if got_returns is not None:
            got_returns = _ppo_tensor(got_returns, "returns", rewards.shape).double()
            if not torch.allclose(got_returns[valid], want_returns[valid], atol=1e-5):
                _fail(f"on {case} your advantages are right but your returns are "
                      f"{_rounded(got_returns)}, expected "
                      f"{_rounded(want_returns)}: the value model's targets are returns = advantages + values.")
    _passed(name)


def _policy_loss_cases():
    """(logp_new, logp_old, advantages, mask, clip): every clipping region, then a batch of uneven replies."""
    # ratios e^0.5 (above 1 + clip) and e^-0.5 (below 1 - clip), advantages of both signs, a token inside the clip
    # range, and one token after EOS with wild numbers
    yield (torch.tensor([[0.5, 0.5, -0.5, -0.5, 0.1, 30.0]]), torch.zeros(1, 6),
           torch.tensor([[1.0, -1.0, 1.0, -1.0, 2.0, 1e6]]), torch.tensor([[1, 1, 1, 1, 1, 0]]), 0.2)
    gen = torch.Generator().manual_seed(7)
    mask = (torch.arange(5)[None, :] < torch.tensor([5, 1, 3, 2])[:, None]).long()
    logp_old = -torch.rand(4, 5, generator=gen) * 3
    logp_new = logp_old + torch.randn(4, 5, generator=gen) * 0.4
    advantages = torch.randn(4, 5, generator=gen)
    logp_new = torch.where(mask.bool(), logp_new, torch.full_like(logp_new, 20.0))
    advantages = torch.where(mask.bool(), advantages, torch.full_like(advantages, -1e5))
    yield logp_new, logp_old, advantages, mask, 0.1


def _masked(x, mask):
    return (x * mask).sum() / mask.sum()


def check_clipped_policy_loss(fn) -> None:
    """Check fn(logp_new, logp_old, advantages, mask, clip) -> loss (a number), or (loss, ...).

    Reference: rlhf_lessons.ppo.clipped_policy_loss:
        ratio = exp(logp_new - logp_old)
        loss = mean over valid tokens of max(-A * ratio, -A * clamp(ratio, 1 - clip, 1 + clip))
    """
    from .ppo import clipped_policy_loss as reference

    name = "clipped policy loss"
    for logp_new, logp_old, adv, mask, clip in _policy_loss_cases():
        out = fn(logp_new.clone(), logp_old.clone(), adv.clone(), mask.clone(), clip)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.dim() != 0:
            _fail(f"your {name} should return one number, a 0-dim tensor (the mean over valid tokens), "
                  f"not {type(out).__name__}{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}")
        got = out.double()
        want = reference(logp_new, logp_old, adv, mask, clip)[0].double()
        if torch.isclose(got, want, atol=1e-5, rtol=1e-5):
            continue
        # the classic mistakes, each computed here so the message can name it
        m, valid = mask.double(), mask.bool()
        log_ratio, a = (logp_new - logp_old).double(), adv.double()
        ratio = log_ratio.exp()
        keep = lambda x: torch.where(valid, x, torch.zeros_like(x))  # noqa: E731
        unclipped = -a * ratio
        clipped = -a * ratio.clamp(1 - clip, 1 + clip)
        mistakes = [
            (_masked(keep(torch.min(unclipped, clipped)), m),
             "your loss takes the optimistic bound (min/max swapped). With the loss written as -A * ratio, take "
             "the max of the unclipped and clipped terms (the min of the objectives): moving the ratio beyond "
             "[1 - clip, 1 + clip] must earn nothing, while a step the wrong way is still fully punished."),
            (-want, "your function returns the objective (to maximise), not the loss: the optimiser minimises, so "
                    "negate it."),
            (_masked(keep(torch.max(unclipped, -a * log_ratio.clamp(-clip, clip).exp())), m),
             "you clipped the log-ratio to [-clip, clip]; PPO clips the ratio itself: "
             "clamp(exp(logp_new - logp_old), 1 - clip, 1 + clip)."),
            (_masked(keep(torch.max(unclipped, -a * ratio.clamp(max=1 + clip))), m),
             "your clip bounds only the top of the ratio: clamp it to [1 - clip, 1 + clip], both sides."),
            (_masked(keep(torch.max(unclipped, -a * ratio.clamp(min=1 - clip))), m),
             "your clip bounds only the bottom of the ratio: clamp it to [1 - clip, 1 + clip], both sides."),
            (_masked(keep(torch.max(unclipped, -a * torch.clamp(ratio, 1 + clip, 1 - clip))), m),
             "your clip bounds are the wrong way round: clamp(ratio, 1 - clip, 1 + clip), lower bound first."),
            (_masked(keep(torch.max(unclipped, -a.clamp(-clip, clip) * ratio)), m),
             "you clipped the advantage; PPO clips the probability ratio: -A * clamp(ratio, 1 - clip, 1 + clip)."),
            ((keep(torch.max(unclipped, clipped)).sum(1) / m.sum(1)).mean(),
             "you averaged per reply, then over replies; average over all valid tokens of the batch at once "
             "(sum of the masked terms / number of valid tokens), so that every token weighs the same."),
            (keep(torch.max(unclipped, clipped)).sum(),
             "you summed over tokens; take the mean over valid tokens, so the step size does not depend on how "
             "many tokens a batch holds."),
            (torch.max(unclipped, clipped).mean(),
             "tokens after EOS count in your loss: they are padding, not actions. Average only over tokens where "
             "mask is 1 (sum of terms * mask / mask.sum())."),
        ]
        for value, message in mistakes:
            if bool(torch.isclose(got, value, atol=1e-5, rtol=1e-5)):
                _fail(message)
        if not torch.isfinite(got) or abs(got.item()) > 1e3:
            _fail(f"your loss is {got.item():.4g}: the tokens after EOS carry huge numbers in this test and they "
                  "reached your loss. Average only over tokens where mask is 1.")
        _fail(f"your loss is {got.item():.6f}, expected {want.item():.6f}: ratio = exp(logp_new - logp_old); "
              "loss = mean over valid tokens of max(-A * ratio, -A * clamp(ratio, 1 - clip, 1 + clip)).")
    _passed(name)


# ---- lesson 06: what goes wrong ----

def check_bestofn_weights(fn) -> None:
    """Lesson 06: fn(m, n) -> m weights, best reply first: P(the i-th best of m replies is the best of a random
    subset of n of them) = C(m - 1 - i, n - 1) / C(m, n)."""
    import math

    from .overoptimization import bestofn_weights

    for m, n in [(4, 2), (5, 1), (6, 6), (8, 3), (64, 16)]:
        got = fn(m, n)
        if got is None:
            _fail("return the list of m weights")
        got = [float(w) for w in got]
        want = bestofn_weights(m, n)
        if len(got) != m:
            _fail(f"for m = {m} return {m} weights, one per sampled reply (got {len(got)})")
        if all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(got, want)):
            continue
        if all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(got, reversed(want))):
            _fail("your weights are in the wrong order: index 0 is the best reply, which wins the most subsets")
        if all(math.isclose(w, 1 / n if i < n else 0.0, abs_tol=1e-9) for i, w in enumerate(got)):
            _fail("that averages the n best replies; best-of-n keeps only the best of a random subset of n, so "
                  "the i-th best wins when the other n - 1 all come from the m - 1 - i worse replies")
        with_replacement = [((m - i) ** n - (m - i - 1) ** n) / m ** n for i in range(m)]
        if all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(got, with_replacement)):
            _fail("that is the formula for n draws with replacement; here a subset of n distinct replies is "
                  "chosen from the m samples: count subsets with math.comb")
        if not math.isclose(sum(got), 1.0, abs_tol=1e-6):
            _fail(f"for m = {m}, n = {n} your weights sum to {sum(got):.4f}, not 1: check the off-by-one in "
                  "C(m - 1 - i, n - 1) (the best reply is i = 0) and divide by C(m, n)")
        _fail(f"for m = {m}, n = {n} your weights differ from C(m - 1 - i, n - 1) / C(m, n): "
              f"expected {[round(w, 4) for w in want[:4]]}..., got {[round(w, 4) for w in got[:4]]}...")
    _passed("bestofn_weights")


def check_flip_share(fn) -> None:
    """Lesson 06: fn(p_majority, p_minority) -> the minority share s at which s * p_min + (1 - s) * p_maj = 1/2,
    or None when no share in [0, 1] flips the pool."""
    from .rater_bias import flip_share

    cases = [(0.2, 0.8), (0.1, 0.7), (0.8, 0.2), (0.3, 0.4), (0.6, 0.9), (0.05, 0.95), (0.45, 0.55)]
    for p_maj, p_min in cases:
        got, want = fn(p_maj, p_min), flip_share(p_maj, p_min)
        if want is None:
            if got is not None:
                _fail(f"with p_majority = {p_maj} and p_minority = {p_min} both populations are on the same side "
                      f"of 1/2, so no share flips the pool: return None (got {got})")
            continue
        if got is None:
            _fail(f"with p_majority = {p_maj} and p_minority = {p_min} the pool does flip: return the share")
        got = float(got)
        if abs(got - want) < 1e-9:
            continue
        if abs(got - 0.5) < 1e-9:
            _fail("a pool is not a majority vote of people here: each label comes from one rater drawn at random, "
                  "so the pool prefers A with probability s * p_minority + (1 - s) * p_majority; solve for s")
        if abs(got - (1 - want)) < 1e-9:
            _fail("that is the majority's share at the flip, not the minority's: s multiplies p_minority")
        _fail(f"for p_majority = {p_maj}, p_minority = {p_min} the pool crosses 1/2 at s = {want:.4f}, not "
              f"{got:.4f}: solve s * p_minority + (1 - s) * p_majority = 1/2")
    _passed("flip_share")
