"""The argument checks of notebook 01's `generate` (also used by 02-04): a prompt or a setting the model cannot
use gets a ValueError that says what to do, instead of an obscure error deep inside the model."""

import math

import torch


def check_token_ids(idx, vocab_size):
    """Refuse a prompt the model cannot read, saying what to do instead."""
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2:
        raise ValueError(f"token ids must be a tensor of shape (batch, seq), got {getattr(idx, 'shape', type(idx))}; "
                         "for a single prompt use ids.unsqueeze(0)")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"token ids must be integers, got {idx.dtype}; convert them with .long()")
    if idx.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token")
    low, high = idx.min().item(), idx.max().item()
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size}), got ids from {low} to {high}; "
                         "was the prompt encoded with this model's tokenizer?")


def check_generate_args(idx, vocab_size, max_new_tokens, temperature, top_k):
    """generate's checks: the prompt (check_token_ids), the number of new tokens, temperature and top_k."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise ValueError(f"top_k must be None or between 1 and the vocabulary size ({vocab_size}), got {top_k}")
    check_token_ids(idx, vocab_size)
