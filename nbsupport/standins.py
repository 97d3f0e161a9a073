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


def _scale(generator, n, dtype=torch.float32):
    """A norm's weight: near 1 but not 1, as in a trained model, so that a loader that swaps two norms fails."""
    return (1 + torch.randn(n, generator=generator) * 0.1).to(dtype)


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
                p + "ln_1.weight": _scale(g, d), p + "ln_1.bias": _normal(g, d),
                p + "attn.bias": mask.clone(),
                p + "attn.c_attn.weight": _normal(g, d, 3 * d), p + "attn.c_attn.bias": _normal(g, 3 * d),
                p + "attn.c_proj.weight": _normal(g, d, d), p + "attn.c_proj.bias": _normal(g, d),
                p + "ln_2.weight": _scale(g, d), p + "ln_2.bias": _normal(g, d),
                p + "mlp.c_fc.weight": _normal(g, d, 4 * d), p + "mlp.c_fc.bias": _normal(g, 4 * d),
                p + "mlp.c_proj.weight": _normal(g, 4 * d, d), p + "mlp.c_proj.bias": _normal(g, d),
            }
        params |= {"ln_f.weight": _scale(g, d), "ln_f.bias": _normal(g, d)}
        save_file(params, folder / "model.safetensors", metadata={"format": "pt"})
        config = {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
            "vocab_size": vocab_size, "n_positions": context_length, "n_ctx": context_length,
            "n_embd": emb_dim, "n_layer": n_layers, "n_head": n_heads, "layer_norm_epsilon": 1e-5,
            "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1, "initializer_range": 0.02,
            "bos_token_id": 50256, "eos_token_id": 50256,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    build.variant = f"gpt2-d{emb_dim}-l{n_layers}-h{n_heads}-v{vocab_size}-c{context_length}-s{seed}-w2"
    return build


# The SentencePiece trainer options of Llama 2's tokenizer.model (as stored in its trainer_spec).
LLAMA2_SENTENCEPIECE_OPTIONS = {
    "model_type": "bpe", "character_coverage": 0.99995, "byte_fallback": True, "split_digits": True,
    "allow_whitespace_only_pieces": True, "remove_extra_whitespaces": False,
    "normalization_rule_name": "identity", "max_sentencepiece_length": 16,
    "unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1,
}


def train_llama2_style_tokenizer(path, vocab_size=8000, lines=None):
    """Train a SentencePiece BPE model with Llama 2's options on `lines` (default: Python's help topics).

    Llama 2's vocabulary has 32,000 pieces. On the 460 KB of help topics SentencePiece's trainer accepts
    at most 15,521 (it says so for larger sizes); we default to 8,000, which trains in seconds. The
    trainer skips lines longer than 4,192 bytes.
    """
    import sentencepiece as spm
    from pydoc_data.topics import topics

    if lines is None:
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
                p + "attention_norm.weight": _scale(g, dim, dtype=bf16),
                p + "ffn_norm.weight": _scale(g, dim, dtype=bf16),
            }
        params |= {
            "norm.weight": _scale(g, dim, dtype=bf16),
            "output.weight": _normal(g, vocab_size, dim, dtype=bf16),
            "rope.freqs": (1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)).to(bf16),
        }
        torch.save(params, folder / "consolidated.00.pth")
        config = {"dim": dim, "multiple_of": multiple_of, "n_heads": n_heads, "n_layers": n_layers,
                  "norm_eps": norm_eps, "vocab_size": -1}
        (folder / "params.json").write_text(json.dumps(config))
    build.variant = f"llama2-d{dim}-l{n_layers}-h{n_heads}-m{multiple_of}-v{vocab_size}-e{norm_eps}-s{seed}-w2"
    return build


LLAMA32_ROPE_SCALING = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 8192, "rope_type": "llama3"}


def llama3_checkpoint(emb_dim, n_layers, n_heads, n_kv_groups, hidden_dim, vocab_size=128256,
                      context_length=131072, rope_scaling=LLAMA32_ROPE_SCALING, tie_word_embeddings=True,
                      n_shards=1, seed=0):
    """A Llama 3.x repository in Hugging Face's format, as `meta-llama/Llama-3.2-1B`:

    `config.json`; `model.safetensors`, or with `n_shards > 1` the files
    `model-0000k-of-0000n.safetensors` plus `model.safetensors.index.json`; bfloat16 tensors named
    `model.embed_tokens.weight`, `model.layers.{i}.self_attn.q_proj.weight`, …, `lm_head.weight`
    (absent when tied); and `original/tokenizer.model`, Meta's real tokenizer file as shipped by
    the `llama-models` package. Query/key rows are in the halves RoPE order, as in Hugging Face's files.
    """
    def build(folder):
        import shutil

        from .tokenizer_files import llama3_tokenizer_file

        g = torch.Generator().manual_seed(seed)
        bf16, kv_dim = torch.bfloat16, emb_dim // n_heads * n_kv_groups
        params = {"model.embed_tokens.weight": _normal(g, vocab_size, emb_dim, dtype=bf16)}
        for i in range(n_layers):
            p = f"model.layers.{i}."
            params |= {
                p + "self_attn.q_proj.weight": _normal(g, emb_dim, emb_dim, dtype=bf16),
                p + "self_attn.k_proj.weight": _normal(g, kv_dim, emb_dim, dtype=bf16),
                p + "self_attn.v_proj.weight": _normal(g, kv_dim, emb_dim, dtype=bf16),
                p + "self_attn.o_proj.weight": _normal(g, emb_dim, emb_dim, dtype=bf16),
                p + "mlp.gate_proj.weight": _normal(g, hidden_dim, emb_dim, dtype=bf16),
                p + "mlp.up_proj.weight": _normal(g, hidden_dim, emb_dim, dtype=bf16),
                p + "mlp.down_proj.weight": _normal(g, emb_dim, hidden_dim, dtype=bf16),
                p + "input_layernorm.weight": _scale(g, emb_dim, dtype=bf16),
                p + "post_attention_layernorm.weight": _scale(g, emb_dim, dtype=bf16),
            }
        params["model.norm.weight"] = _scale(g, emb_dim, dtype=bf16)
        if not tie_word_embeddings:
            params["lm_head.weight"] = _normal(g, vocab_size, emb_dim, dtype=bf16)

        if n_shards == 1:
            save_file(params, folder / "model.safetensors", metadata={"format": "pt"})
        else:
            names = list(params)
            weight_map = {}
            for k in range(n_shards):
                shard = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
                part = names[k * len(names) // n_shards:(k + 1) * len(names) // n_shards]
                save_file({n: params[n] for n in part}, folder / shard, metadata={"format": "pt"})
                weight_map |= {n: shard for n in part}
            total = sum(t.numel() * t.element_size() for t in params.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))

        config = {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab_size,
            "hidden_size": emb_dim, "intermediate_size": hidden_dim, "num_hidden_layers": n_layers,
            "num_attention_heads": n_heads, "num_key_value_heads": n_kv_groups,
            "head_dim": emb_dim // n_heads, "max_position_embeddings": context_length,
            "rope_theta": 500000.0, "rope_scaling": rope_scaling, "rms_norm_eps": 1e-5,
            "hidden_act": "silu", "tie_word_embeddings": tie_word_embeddings, "torch_dtype": "bfloat16",
            "bos_token_id": 128000, "eos_token_id": 128001, "attention_bias": False, "mlp_bias": False,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        (folder / "original").mkdir()
        shutil.copyfile(llama3_tokenizer_file(), folder / "original" / "tokenizer.model")
    build.variant = (f"llama3-d{emb_dim}-l{n_layers}-h{n_heads}-g{n_kv_groups}-f{hidden_dim}-v{vocab_size}"
                     f"-c{context_length}-r{bool(rope_scaling)}-t{tie_word_embeddings}-n{n_shards}-s{seed}-w2")
    return build
