"""Packing: run a transformer on the real tokens of a padded batch, and none of its padding.

A batch of replies is padded to its longest row: left padding before each prompt, right padding after each reply.
About half the positions of a PPO minibatch are padding, and a transformer computes on every one of them. Packing
lays the real tokens of several rows end to end in one row instead:

    padded (B, T)                               packed (N, L), N < B
    [pad pad p p p r r r EOS pad]               [p p p r r r EOS | p p p p r EOS | q q ...]
    [pad p p p p r EOS pad pad pad]

Each sequence keeps its own position ids (0, 1, 2, ... from its first real token), and attention stays inside it: a
block-diagonal causal mask lets token q see token k only if both belong to the same sequence and k <= q. A packed
row's leftover positions hold padding, each its own one-token sequence, so no row of the attention is empty. The
hidden state of every real token is then the padded computation's, up to the order of floating-point sums
(tests/test_packing.py).

Rows are filled first-fit decreasing (longest sequence first, into the first row with room). No sequence is split, so
a row is at least as long as the longest sequence; between that and three times it, the row length that computes the
fewest positions is chosen (a PPO minibatch of 32 replies: about 0.95 of the positions computed are real tokens,
against 0.64 padded). Longer rows cost attention only, which is small next to the matmuls of a token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import positions


@dataclass
class Packing:
    """Where each real token of a padded (B, T) batch sits in the packed (N, L) batch."""

    input_ids: torch.Tensor  # (N, L) real tokens end to end, padding at the end of each row
    position_ids: torch.Tensor  # (N, L) each sequence counts from 0; padding sits at position 0
    attention_mask: torch.Tensor  # (N, 1, L, L) additive: 0 where query q may see key k, a large negative elsewhere
    real: torch.Tensor  # (B, T) bool: the real tokens of the padded batch
    slots: torch.Tensor  # (number of real tokens,) flat index into (N * L) of each real token, in `real`'s order

    @property
    def real_share(self) -> float:
        """Real tokens / positions computed: 1.0 would be no padding at all."""
        return self.slots.numel() / self.input_ids.numel()


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[tuple[int, int]]:
    """(row, offset) of each sequence when sequences of `lengths` are packed into rows of `capacity` tokens."""
    if lengths and max(lengths) > capacity:
        raise ValueError(f"a sequence of {max(lengths)} tokens does not fit in rows of {capacity}")
    room: list[int] = []  # tokens left in each row
    where = [(0, 0)] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, left in enumerate(room) if left >= lengths[i]), len(room))
        if row == len(room):
            room.append(capacity)
        where[i] = (row, capacity - room[row])
        room[row] -= lengths[i]
    return where


def best_capacity(lengths: list[int], step: int = 4) -> int:
    """The row length, from the longest sequence to three times it, that packs `lengths` into the fewest positions."""
    longest = max(lengths)
    def positions_computed(capacity):
        return (max(r for r, _ in first_fit_decreasing(lengths, capacity)) + 1) * capacity
    return min(range(longest, 3 * longest + 1, step), key=positions_computed)


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int, dtype=torch.float32) -> Packing:
    """Pack the real tokens of a padded batch: input_ids and attention_mask (B, T), each row's real tokens contiguous.

    dtype: of the additive attention mask (the model's dtype).
    """
    real = attention_mask.bool()
    lengths = real.sum(1)
    first = real.int().argmax(1)  # column of each row's first real token
    last = real.shape[1] - 1 - real.flip(1).int().argmax(1)
    if bool(((last - first + 1 != lengths) & (lengths > 0)).any()):
        raise ValueError("packing needs each row's real tokens side by side (left or right padding, not holes)")
    if not bool((lengths > 0).all()):
        raise ValueError("packing needs at least one real token in every row")
    capacity = best_capacity(lengths.tolist())
    where = first_fit_decreasing(lengths.tolist(), capacity)
    row_of = torch.tensor([r for r, _ in where], device=input_ids.device)
    offset_of = torch.tensor([o for _, o in where], device=input_ids.device)
    n_rows = int(row_of.max()) + 1

    position = positions(attention_mask)  # of each real token within its own sequence
    rows, cols = real.nonzero(as_tuple=True)
    slots = row_of[rows] * capacity + offset_of[rows] + position[rows, cols]
    packed_ids = input_ids.new_full((n_rows * capacity,), pad_id)
    packed_ids[slots] = input_ids[rows, cols]
    packed_pos = torch.zeros(n_rows * capacity, dtype=torch.long, device=input_ids.device)
    packed_pos[slots] = position[rows, cols]
    # which sequence each packed position belongs to: real tokens their row b of the padded batch, padding its own
    n_seq = len(where)
    sequence = torch.arange(n_seq, n_seq + n_rows * capacity, device=input_ids.device)
    sequence[slots] = rows
    sequence = sequence.view(n_rows, capacity)
    causal = torch.ones(capacity, capacity, dtype=torch.bool, device=input_ids.device).tril()
    allowed = (sequence[:, :, None] == sequence[:, None, :]) & causal  # (N, L query, L key)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=input_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return Packing(packed_ids.view(n_rows, capacity), packed_pos.view(n_rows, capacity), mask[:, None], real, slots)


def hidden_states(transformer, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  packed: bool = True) -> torch.Tensor:
    """The last hidden states (after the final LayerNorm) of a GPT-2 trunk at every position: (B, T, n_embd).

    packed: compute on the packed real tokens only (padding positions then hold zeros: nothing may read them);
    False: on the padded batch, padding included, as `transformers` would.
    """
    if not packed:
        return transformer(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask),
                           use_cache=False).last_hidden_state
    packing = pack(input_ids, attention_mask, transformer.config.pad_token_id or 0, transformer.dtype)
    hidden = transformer(input_ids=packing.input_ids, position_ids=packing.position_ids,
                         attention_mask=packing.attention_mask, use_cache=False).last_hidden_state  # (N, L, n_embd)
    flat = hidden.reshape(-1, hidden.shape[-1])
    out = flat.new_zeros(*input_ids.shape, flat.shape[-1])
    out[packing.real] = flat[packing.slots]
    return out
