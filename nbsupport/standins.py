"""Stand-in checkpoints in the real file formats, for when the Hub cannot be reached.

Each function returns a builder for `nbsupport.fetch`: it writes files with the same names, tensor
names, shapes (or a reduced size, where said) and dtypes as the real repository, filled with seeded
random weights, so the notebooks' loading code runs unchanged on them.
"""

import json

import torch
from safetensors.torch import save_file


def _normal(generator, *shape, std=0.02, dtype=torch.float32):
    return (torch.randn(*shape, generator=generator) * std).to(dtype)


def gpt2_checkpoint(emb_dim, n_layers, n_heads, vocab_size=50257, context_length=1024, seed=0):
    """`config.json` + `model.safetensors` as in `openai-community/gpt2*`.

    Hugging Face's GPT-2 file keeps OpenAI's layout: `Conv1D` weights stored as (in, out), the
    query/key/value projections packed in `c_attn`, no `lm_head` (tied to `wte`), and each layer's
    causal-mask buffer `h.{i}.attn.bias` of shape (1, 1, 1024, 1024) in float32.
    """
    def build(folder):
        g = torch.Generator().manual_seed(seed)
        d = emb_dim
        params = {"wte.weight": _normal(g, vocab_size, d), "wpe.weight": _normal(g, context_length, d, std=0.01)}
        mask = torch.tril(torch.ones(context_length, context_length)).view(1, 1, context_length, context_length)
        for i in range(n_layers):
            p = f"h.{i}."
            params |= {
                p + "ln_1.weight": torch.ones(d), p + "ln_1.bias": torch.zeros(d),
                p + "attn.bias": mask.clone(),
                p + "attn.c_attn.weight": _normal(g, d, 3 * d), p + "attn.c_attn.bias": torch.zeros(3 * d),
                p + "attn.c_proj.weight": _normal(g, d, d), p + "attn.c_proj.bias": torch.zeros(d),
                p + "ln_2.weight": torch.ones(d), p + "ln_2.bias": torch.zeros(d),
                p + "mlp.c_fc.weight": _normal(g, d, 4 * d), p + "mlp.c_fc.bias": torch.zeros(4 * d),
                p + "mlp.c_proj.weight": _normal(g, 4 * d, d), p + "mlp.c_proj.bias": torch.zeros(d),
            }
        params |= {"ln_f.weight": torch.ones(d), "ln_f.bias": torch.zeros(d)}
        save_file(params, folder / "model.safetensors", metadata={"format": "pt"})
        config = {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
            "vocab_size": vocab_size, "n_positions": context_length, "n_ctx": context_length,
            "n_embd": emb_dim, "n_layer": n_layers, "n_head": n_heads, "layer_norm_epsilon": 1e-5,
            "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1, "initializer_range": 0.02,
            "bos_token_id": 50256, "eos_token_id": 50256,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    return build
