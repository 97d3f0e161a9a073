"""Stand-in checkpoints in the real file formats, for when the Hub cannot be reached.

Each function returns a builder for `nbsupport.fetch`: it writes files with the same names, tensor
names, shapes (or a reduced size, where said) and dtypes as the real repository, filled with seeded
random weights, so the notebooks' loading code runs unchanged on them. Its `variant` names the
size, so stand-ins of different sizes for one repository never share a folder.
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
    build.variant = f"gpt2-d{emb_dim}-l{n_layers}-h{n_heads}-v{vocab_size}-c{context_length}-s{seed}"
    return build


# The SentencePiece trainer options of Llama 2's tokenizer.model (as stored in its trainer_spec).
LLAMA2_SENTENCEPIECE_OPTIONS = {
    "model_type": "bpe", "character_coverage": 0.99995, "byte_fallback": True, "split_digits": True,
    "allow_whitespace_only_pieces": True, "remove_extra_whitespaces": False,
    "normalization_rule_name": "identity", "max_sentencepiece_length": 16,
    "unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1,
}


def train_llama2_style_tokenizer(path, vocab_size=8000):
    """Train a SentencePiece BPE model with Llama 2's options on Python's help topics.

    Llama 2's vocabulary has 32,000 pieces; 460 KB of text supports about 15,000, so we default
    to 8,000.
    """
    import sentencepiece as spm
    from pydoc_data.topics import topics

    lines = [line for name in sorted(topics) for line in topics[name].splitlines() if line.strip()]
    with open(path, "wb") as f:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=f, vocab_size=vocab_size,
                                       num_threads=1, minloglevel=2, **LLAMA2_SENTENCEPIECE_OPTIONS)


def llama2_checkpoint(dim, n_layers, n_heads, multiple_of, vocab_size=8000, norm_eps=1e-5, seed=0):
    """`params.json` + `consolidated.00.pth` + `tokenizer.model` as in Meta's `meta-llama/Llama-2-7b`.

    Meta's format: a pickled dict of bfloat16 tensors (`tok_embeddings.weight`,
    `layers.{i}.attention.wq.weight`, …, `output.weight`, `rope.freqs`) and a params.json with
    `vocab_size: -1` (the tokenizer decides). Query/key rows are in Meta's interleaved-pair RoPE order.
    """
    def build(folder):
        train_llama2_style_tokenizer(folder / "tokenizer.model", vocab_size)
        g = torch.Generator().manual_seed(seed)
        hidden = multiple_of * ((int(2 * 4 * dim / 3) + multiple_of - 1) // multiple_of)
        head_dim = dim // n_heads
        bf16 = torch.bfloat16
        params = {"tok_embeddings.weight": _normal(g, vocab_size, dim, dtype=bf16)}
        for i in range(n_layers):
            p = f"layers.{i}."
            params |= {p + f"attention.{w}.weight": _normal(g, dim, dim, dtype=bf16) for w in ("wq", "wk", "wv", "wo")}
            params |= {
                p + "feed_forward.w1.weight": _normal(g, hidden, dim, dtype=bf16),
                p + "feed_forward.w2.weight": _normal(g, dim, hidden, dtype=bf16),
                p + "feed_forward.w3.weight": _normal(g, hidden, dim, dtype=bf16),
                p + "attention_norm.weight": torch.ones(dim, dtype=bf16),
                p + "ffn_norm.weight": torch.ones(dim, dtype=bf16),
            }
        params |= {
            "norm.weight": torch.ones(dim, dtype=bf16),
            "output.weight": _normal(g, vocab_size, dim, dtype=bf16),
            "rope.freqs": (1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)).to(bf16),
        }
        torch.save(params, folder / "consolidated.00.pth")
        config = {"dim": dim, "multiple_of": multiple_of, "n_heads": n_heads, "n_layers": n_layers,
                  "norm_eps": norm_eps, "vocab_size": -1}
        (folder / "params.json").write_text(json.dumps(config))
    build.variant = f"llama2-d{dim}-l{n_layers}-h{n_heads}-m{multiple_of}-v{vocab_size}-e{norm_eps}-s{seed}"
    return build
