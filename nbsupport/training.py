"""Notebook 01's training plan: which GPT, text, batch size and learning rate fit this machine, how many passes
over the text, and a clear error for a text too short to train on.

On a CPU: the small configuration on the first 300,000 characters. On a CUDA GPU: the real 124M configuration
with 256-token windows on the whole text, at the largest batch of up to 16 windows whose estimated memory
(`training_bytes`) fits in 80% of the GPU's free memory, else the small one.
"""

import math

import torch


def training_bytes(cfg, batch_size, model_class):
    """Estimated memory of a float32 training step of `model_class(cfg)`: the weights, their gradients and AdamW's
    two moments (4 numbers per parameter); per window, 90 numbers per token, layer and width for the activations,
    and the logits, their softmax and its gradient. Of the 90, autograd keeps about 46 for the backward pass with
    256-token windows (measured for notebook 01's code on a CPU: its LayerNorm, GELU and attention keep their
    intermediate results), and more for longer windows, whose attention weights grow with the square of the
    length; the rest is a margin for what the backward pass adds on a GPU."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in model_class(cfg).parameters())
    b, t, d = batch_size, cfg["context_length"], cfg["emb_dim"]
    return 4 * (4 * n_params + b * t * (90 * cfg["n_layers"] * d + 3 * cfg["vocab_size"]))


def training_plan(device, text, model_class, cfg_124m, cfg_small, free_bytes=None):
    """{"cfg", "corpus", "batch_size", "lr"} to train here (free_bytes: the GPU's free memory, default measured)."""
    if device.type == "cuda":
        free_bytes = torch.cuda.mem_get_info(device)[0] if free_bytes is None else free_bytes
        cfg = {**cfg_124m, "context_length": 256}
        fits = [b for b in (16, 8, 4, 2, 1) if training_bytes(cfg, b, model_class) <= 0.8 * free_bytes]
        if fits:
            return {"cfg": cfg, "corpus": text, "batch_size": fits[0], "lr": 4e-4}
        print(f"the 124M model does not fit in {free_bytes / 2**30:.1f} GiB of free GPU memory: the small one")
    return {"cfg": cfg_small, "corpus": text[:300_000], "batch_size": 8, "lr": 3e-3}


def check_loaders(train_loader, val_loader, cfg, batch_size):
    """Refuse a text too short for one training batch and one validation window, saying how long it must be."""
    if len(train_loader) == 0 or len(val_loader) == 0:
        window = cfg["context_length"]
        n_tokens = max(math.ceil((batch_size * window + 1) / 0.9), 10 * (window + 1))
        raise ValueError(f"the text is too short to train on: 90% of it must hold {batch_size} windows of {window} "
                         f"tokens and the last 10% one window; give at least about {n_tokens} tokens")


def training_schedule(steps_per_epoch, min_steps=100, n_evals=6):
    """(passes over the text for at least `min_steps` steps, steps between two evaluations)."""
    num_epochs = max(1, math.ceil(min_steps / steps_per_epoch))
    return num_epochs, max(1, num_epochs * steps_per_epoch // n_evals)
