"""Notebook 04's Llama 3 / 3.2 against transformers.LlamaForCausalLM, and its tokenizer against Meta's."""

import json
import math

import pytest
import torch
import transformers
from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

from nbsupport import fetch, import_notebook, llama3_tokenizer_file
from nbsupport.standins import llama3_checkpoint

transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module")
def nb04():
    return import_notebook("04-llama2-to-llama3.ipynb")


def hf_config(tied, rope_scaling, vocab_size=151, layers=3, heads=8, kv_heads=2, emb=64, hidden=96, ctx=256):
    """A config.json (as a dict) in the Hub's format."""
    return {"vocab_size": vocab_size, "hidden_size": emb, "intermediate_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": ctx,
            "rope_theta": 500000.0, "rope_scaling": rope_scaling, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": tied}


LLAMA3_STYLE = hf_config(tied=False, rope_scaling=None)
LLAMA32_STYLE = hf_config(tied=True, rope_scaling={"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 64, "rope_type": "llama3"})


def reference_and_params(config, seed=0):
    torch.manual_seed(seed)
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    params = {k: v.clone() for k, v in ref.state_dict().items()}
    if config["tie_word_embeddings"]:
        del params["lm_head.weight"]  # the Hub files of tied models have no lm_head
    return ref, params


def our_model(nb04, config, dtype=torch.float32):
    with torch.device("meta"):
        return nb04.Llama3Model(nb04.llama3_config(config, dtype=dtype))


@pytest.mark.parametrize("config", [LLAMA3_STYLE, LLAMA32_STYLE, {**LLAMA32_STYLE, "rms_norm_eps": 0.5}],
                         ids=["llama3-untied", "llama32-scaled-tied", "rms_norm_eps-from-config"])
def test_logits_and_greedy_tokens_equal_transformers(nb04, config):
    ref, params = reference_and_params(config)
    model = our_model(nb04, config)
    nb04.load_weights_into_llama(model, nb04.llama3_config(config), params)
    model.eval()
    # longer than original_max_position_embeddings, so the scaled frequencies matter
    tokens = torch.randint(0, config["vocab_size"], (2, 150), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(tokens) - ref(tokens).logits).abs().max().item() <= 1e-5
    prompt = tokens[:1, :10]
    ours = nb04.generate(model, prompt, max_new_tokens=20, context_size=256)
    theirs = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False,
                          pad_token_id=0)
    assert torch.equal(ours, theirs)


def test_rope_scaling_changes_the_model(nb04):
    cfg = nb04.llama3_config(LLAMA32_STYLE, dtype=torch.float32)
    cos_scaled, _ = nb04.precompute_rope_params(8, cfg["rope_base"], 256, cfg["rope_freq"])
    cos_plain, _ = nb04.precompute_rope_params(8, cfg["rope_base"], 256, None)
    assert not torch.allclose(cos_scaled, cos_plain)


@pytest.mark.parametrize("rope_scaling, name", [
    ({"rope_type": "linear", "factor": 2.0}, "linear"), ({"rope_type": "dynamic", "factor": 2.0}, "dynamic"),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}, "yarn"),
    ({"type": "linear", "factor": 2.0}, "linear"),  # the key of older config files
])
def test_llama3_config_refuses_other_rope_scaling(nb04, rope_scaling, name):
    with pytest.raises(ValueError, match=f"^config.json asks for RoPE scaling '{name}'; this loader reads models "
                                         "without RoPE scaling \\('default'\\) and with Llama 3.1's \\('llama3'\\): load "
                                         "this one with transformers.AutoModelForCausalLM.from_pretrained\\(folder\\) "
                                         "instead$"):
        nb04.llama3_config({**LLAMA3_STYLE, "rope_scaling": rope_scaling})


def test_llama3_config_reads_rope_settings_in_both_layouts(nb04):
    """transformers 5 writes rope_theta and the scaling into rope_parameters, with rope_type "default" for none."""
    assert nb04.llama3_config(LLAMA3_STYLE)["rope_freq"] is None
    old_style = nb04.llama3_config(LLAMA32_STYLE)
    scaling = {k: v for k, v in LLAMA32_STYLE["rope_scaling"].items()}
    new_style = {k: v for k, v in LLAMA32_STYLE.items() if k not in ("rope_theta", "rope_scaling")}
    assert nb04.llama3_config({**new_style, "rope_parameters": {**scaling, "rope_theta": 500000.0}}) == old_style
    plain = nb04.llama3_config({**new_style, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}})
    assert (plain["rope_freq"], plain["rope_base"]) == (None, 10000.0)
    with pytest.raises(ValueError, match="^config.json gives no rope_theta \\(RoPE's base\\), neither at the top level "
                                         "nor in rope_parameters: add it \\(Llama 3's is 500000.0\\)$"):
        nb04.llama3_config(new_style)


def test_gqa_with_one_group_per_head_equals_mha(nb04):
    torch.manual_seed(0)
    mha = nb04.nb03.MultiHeadAttention(48, 48, num_heads=6)
    gqa = nb04.GroupedQueryAttention(48, 48, num_heads=6, num_kv_groups=6)
    gqa.load_state_dict(mha.state_dict())
    cos, sin = nb04.precompute_rope_params(8, context_length=16)
    x = torch.randn(2, 9, 48)
    torch.testing.assert_close(gqa(x, cos, sin), mha(x, cos, sin))


def test_tied_head_shares_storage(nb04):
    _, params = reference_and_params(LLAMA32_STYLE)
    model = our_model(nb04, LLAMA32_STYLE)
    nb04.load_weights_into_llama(model, nb04.llama3_config(LLAMA32_STYLE), params)
    assert model.out_head.weight is model.tok_emb.weight
    assert model.out_head.weight.data_ptr() == params["model.embed_tokens.weight"].data_ptr()
    with torch.device("meta"):
        full = nb04.Llama3Model(nb04.LLAMA32_CONFIG_1B)
    assert sum(p.numel() for p in full.parameters()) == 1_235_814_400


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("corrupt, expected", [
    (lambda p: p.pop("model.layers.1.mlp.up_proj.weight"), "missing keys \\['model.layers.1.mlp.up_proj.weight'\\]"),
    (lambda p: p.__setitem__("lm_head.weight", torch.zeros(151, 64)), "unexpected keys \\['lm_head.weight'\\]"),
    (lambda p: p.__setitem__("model.layers.0.self_attn.k_proj.weight", torch.zeros(64, 64)),
     "trf_blocks.0.att.W_key.weight: checkpoint \\(64, 64\\) vs model \\(16, 64\\)"),
])
def test_loader_is_strict_and_leaves_model_untouched(nb04, corrupt, expected):
    _, params = reference_and_params(LLAMA32_STYLE)
    torch.manual_seed(0)
    model = nb04.Llama3Model(nb04.llama3_config(LLAMA32_STYLE, dtype=torch.float32))
    before = snapshot(model)
    corrupt(params)
    with pytest.raises(ValueError, match=expected):
        nb04.load_weights_into_llama(model, nb04.llama3_config(LLAMA32_STYLE), params)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.out_head.weight is model.tok_emb.weight


def test_loader_rejects_a_config_of_another_model(nb04):
    _, params = reference_and_params(LLAMA32_STYLE)
    model = our_model(nb04, {**LLAMA32_STYLE, "num_key_value_heads": 4})
    with pytest.raises(ValueError, match="param_config describes"):
        nb04.load_weights_into_llama(model, nb04.llama3_config(LLAMA32_STYLE), params)


def test_sharded_checkpoint_loads_through_the_index(nb04):
    build = llama3_checkpoint(emb_dim=64, n_layers=3, n_heads=4, n_kv_groups=2, hidden_dim=96, vocab_size=300,
                              context_length=128, tie_word_embeddings=False, n_shards=3)
    folder = fetch("someone/sharded-llama", ["*"], build)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    params = nb04.load_hf_checkpoint(folder)
    assert set(params) == set(index["weight_map"])
    config = json.loads((folder / "config.json").read_text())
    model = our_model(nb04, config)
    nb04.load_weights_into_llama(model, nb04.llama3_config(config), params)
    assert model.out_head.weight is not model.tok_emb.weight
    # the reference reads the same sharded folder and agrees
    ref = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model32 = our_model(nb04, config, dtype=torch.float32)
    nb04.load_weights_into_llama(model32, nb04.llama3_config(config), params)
    tokens = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (model32(tokens) - ref(tokens).logits).abs().max().item() <= 1e-5


TEXTS = [
    "Hello, world!",
    "naïve café, Ünïcödé and Ελληνικά, 日本語のテキスト, עברית",
    "emoji 🦙🦙 and 👩‍👩‍👧 families",
    "digits 1234567890 3.14159 -42 1e-5 and 2024-11-22",
    "long   whitespace" + " " * 300 + "runs\n\n\n\t\t\tand tabs\r\n",
    "def f(x):\n    return {'a': [1, 2, 3]}  # code\n",
    "special strings as text: <|begin_of_text|> <|eot_id|> <|start_header_id|>user<|end_header_id|>",
    "I'm sure they'll say you've done it, DON'T YOU'D?",
    "",
]


@pytest.fixture(scope="module")
def tokenizers(nb04):
    return nb04.Tokenizer(llama3_tokenizer_file()), MetaTokenizer.get_instance()  # Meta's code, its own file


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_equals_metas(tokenizers, text):
    ours, meta = tokenizers
    for bos, eos in [(False, False), (True, True)]:
        assert ours.encode(text, bos=bos, eos=eos) == meta.encode(text, bos=bos, eos=eos)
    assert ours.decode(ours.encode(text)) == text


def test_special_token_ids_equal_metas(tokenizers):
    ours, meta = tokenizers
    assert (ours.bos_id, ours.eos_id, ours.eot_id) == (meta.bos_id, meta.eos_id, meta.eot_id) == (128000, 128001, 128009)
    for name in ["<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|python_tag|>",
                 "<|finetune_right_pad_id|>", "<|reserved_special_token_0|>"]:
        assert ours.special_tokens[name] == meta.special_tokens[name]
    assert ours.model.n_vocab == 128256


def test_chat_format_equals_metas(nb04, tokenizers):
    from llama_models.datatypes import RawMessage
    from llama_models.llama3.chat_format import ChatFormat as MetaChatFormat
    ours, meta = tokenizers
    dialog = [RawMessage(role="system", content="You are a helpful assistant."),
              RawMessage(role="user", content="What do llamas eat?")]
    expected = MetaChatFormat(meta).encode_dialog_prompt(dialog).tokens
    assert nb04.ChatFormat(ours).encode("What do llamas eat?", system_message="You are a helpful assistant.") == expected


def test_the_numbers_in_the_text(nb04):
    """The introduction's table and section 2 state these numbers; they follow from the configurations."""
    def n_params(cfg):
        with torch.device("meta"):
            return sum(p.numel() for p in nb04.Llama3Model(cfg).parameters())
    for cfg, saved in [(nb04.LLAMA32_CONFIG_1B, 263e6), (nb04.LLAMA32_CONFIG_3B, 394e6)]:
        assert n_params({**cfg, "tie_word_embeddings": False}) - n_params(cfg) == pytest.approx(saved, abs=0.5e6)
    assert [c["n_heads"] // c["n_kv_groups"] for c in (nb04.LLAMA3_CONFIG_8B, nb04.LLAMA32_CONFIG_1B,
                                                        nb04.LLAMA32_CONFIG_3B)] == [4, 4, 3]
    slowest = lambda base, d=128: 2 * math.pi * base ** ((d - 2) / d)
    assert slowest(10_000) == pytest.approx(54_000, rel=0.01)  # "about 54,000 positions"


# --- GGUF: small files written with gguf.GGUFWriter (notebook 04 itself checks SmolLM2-135M-Instruct's file
# against transformers: tokenizer, chat prompts, logits)

def write_tiny_gguf(path, architecture="llama", skip=(), vocab=12, emb=8, hidden=16, layers=2, heads=2, kv_heads=1,
                    pre="gpt-2", rope_scaling=None, rope_freqs=False, optional_keys=True, tokenizer_model="gpt2"):
    """A small GGUF file in llama.cpp's layout (F32 tensors), with `skip` tensors left out; `pre=None`: no
    tokenizer.ggml.pre; `rope_scaling`: a llama.rope.scaling.type; `rope_freqs`: a rope_freqs.weight as in
    Llama 3.1/3.2 files; `optional_keys=False`: without head_count_kv and freq_base."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(layers)
    writer.add_context_length(64)
    writer.add_embedding_length(emb)
    writer.add_feed_forward_length(hidden)
    writer.add_head_count(heads)
    if optional_keys:  # llama.cpp's defaults without them: head_count_kv = head_count, freq_base = 10000
        writer.add_head_count_kv(kv_heads)
        writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model(tokenizer_model)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    if rope_scaling is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType(rope_scaling))
    writer.add_token_list([chr(ord("a") + i) for i in range(vocab)])
    writer.add_token_types([1] * vocab)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    rng = np.random.default_rng(0)
    kv = emb // heads * kv_heads
    shapes = {"token_embd.weight": (vocab, emb), "output_norm.weight": (emb,)}
    if rope_freqs:
        shapes["rope_freqs.weight"] = (emb // heads // 2,)
    for i in range(layers):
        shapes |= {f"blk.{i}.attn_q.weight": (emb, emb), f"blk.{i}.attn_k.weight": (kv, emb),
                   f"blk.{i}.attn_v.weight": (kv, emb), f"blk.{i}.attn_output.weight": (emb, emb),
                   f"blk.{i}.ffn_gate.weight": (hidden, emb), f"blk.{i}.ffn_up.weight": (hidden, emb),
                   f"blk.{i}.ffn_down.weight": (emb, hidden), f"blk.{i}.attn_norm.weight": (emb,),
                   f"blk.{i}.ffn_norm.weight": (emb,)}
    for name, shape in shapes.items():
        if name not in skip:
            writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_load_gguf_small_file_in_llama_cpp_layout(nb04, tmp_path):
    model, _, cfg = nb04.load_gguf(write_tiny_gguf(tmp_path / "tiny.gguf"))
    assert (cfg["n_layers"], cfg["emb_dim"], cfg["n_kv_groups"], cfg["vocab_size"]) == (2, 8, 1, 12)
    assert cfg["tie_word_embeddings"] and model.out_head.weight is model.tok_emb.weight
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 12)


def test_gguf_tokenizer_refuses_sentencepiece_with_what_to_use(nb04, tmp_path):
    with pytest.raises(ValueError, match=r"^tokenizer.ggml.model is 'llama' \('llama': SentencePiece, as in Llama 2\); "
                                         r"this tokenizer reads GPT-2-style byte-level BPE \('gpt2'\): read this "
                                         r"file's tokenizer with transformers.AutoTokenizer.from_pretrained\(folder, "
                                         r"gguf_file=name\)$"):
        nb04.load_gguf(write_tiny_gguf(tmp_path / "llama2-style.gguf", tokenizer_model="llama"))


def test_load_gguf_without_the_optional_keys_uses_llama_cpps_defaults(nb04, tmp_path):
    _, _, cfg = nb04.load_gguf(write_tiny_gguf(tmp_path / "old.gguf", kv_heads=2, optional_keys=False))
    assert (cfg["n_kv_groups"], cfg["n_heads"], cfg["rope_base"]) == (2, 2, 10000.0)


def test_smollm2_tokenizer_refuses_bytes_without_a_token_and_chat_default_system(nb04):
    tokenizer = nb04.GGUFTokenizer(nb04.open_gguf(nb04.GGUF_FILE))
    assert sorted(tokenizer.missing_bytes) == [0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2,
                                               *range(0xF5, 0x100)]
    with pytest.raises(ValueError, match=r"^'\\x04' cannot be encoded: the vocabulary has no token for one of its"):
        tokenizer.encode("a\x04b")
    assert tokenizer.decode(tokenizer.encode("a\x05b")) == "a\x05b"  # a control character that has its token
    chat = nb04.ChatMLFormat(tokenizer)
    assert chat.encode("Hi!") == chat.encode("Hi!", None) == chat.encode("Hi!", chat.DEFAULT_SYSTEM)
    assert chat.encode("Hi!", "") != chat.encode("Hi!")  # an empty system message is a message of its own


def test_load_gguf_refuses_bad_files(nb04, tmp_path):
    with pytest.raises(ValueError, match="general.architecture is 'gpt2'"):
        nb04.load_gguf(write_tiny_gguf(tmp_path / "gpt2.gguf", architecture="gpt2"))
    with pytest.raises(ValueError, match=r"missing keys \['blk.1.ffn_up.weight'\]"):
        nb04.load_gguf(write_tiny_gguf(tmp_path / "missing.gguf", skip=("blk.1.ffn_up.weight",)))
    whole = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    (tmp_path / "truncated.gguf").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        nb04.load_gguf(tmp_path / "truncated.gguf")
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        nb04.load_gguf(tmp_path / "text.gguf")


def test_load_gguf_refuses_rope_scaling(nb04, tmp_path):
    with pytest.raises(ValueError, match=r"^this file uses RoPE scaling \(llama.rope.scaling.type = 'linear'\), which "
                                         r"this loader does not apply; read the model with transformers \(from_pretrained with gguf_file=\) instead$"):
        nb04.load_gguf(write_tiny_gguf(tmp_path / "linear.gguf", rope_scaling="linear"))
    with pytest.raises(ValueError, match=r"^this file uses RoPE scaling \(rope_freqs.weight, Llama 3.1/3.2\): use "
                                         r"notebook 05's load_gguf$"):
        nb04.load_gguf(write_tiny_gguf(tmp_path / "freqs.gguf", rope_freqs=True))
    _, _, cfg = nb04.load_gguf(write_tiny_gguf(tmp_path / "none.gguf", rope_scaling="none"))
    assert cfg["rope_freq"] is None


def test_gguf_tokenizer_refuses_an_unknown_split_pattern(nb04, tmp_path):
    known = (r"this tokenizer knows the split patterns of \['gpt-2', 'llama-bpe', 'smollm'\]; a file without the key "
             r"is older than llama.cpp's converter that writes it: convert the model again with a current "
             r"convert_hf_to_gguf.py$")
    with pytest.raises(ValueError, match="^tokenizer.ggml.pre is 'qwen2'; " + known):
        nb04.load_gguf(write_tiny_gguf(tmp_path / "qwen2.gguf", pre="qwen2"))
    with pytest.raises(ValueError, match="^tokenizer.ggml.pre is None; " + known):
        nb04.load_gguf(write_tiny_gguf(tmp_path / "no-pre.gguf", pre=None))


def write_tokenizer_gguf(nb04, path, ranks, special_tokens, pre):
    """A GGUF file holding only a byte-level BPE tokenizer as llama.cpp's converter writes it: tokens in GPT-2's
    byte characters, in rank order, then the special tokens (type 3, control); no tensors."""
    import gguf

    char = nb04.gpt2_byte_chars()
    tokens = [None] * len(ranks)
    for token, rank in ranks.items():
        tokens[rank] = "".join(char[b] for b in token)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens + list(special_tokens))
    writer.add_token_types([1] * len(tokens) + [3] * len(special_tokens))
    writer.add_bos_token_id(special_tokens["<|begin_of_text|>"])
    writer.add_eos_token_id(special_tokens["<|end_of_text|>"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_tokenizer_with_llama_bpe_equals_metas(nb04, tokenizers, tmp_path):
    """A GGUF file with Llama 3's vocabulary and tokenizer.ggml.pre = "llama-bpe" tokenizes like Meta's tokenizer:
    Llama 3's split pattern (numbers in groups of at most three digits), not GPT-2's."""
    from tiktoken.load import load_tiktoken_bpe

    ours, meta = tokenizers
    ranks = load_tiktoken_bpe(str(llama3_tokenizer_file()))
    path = write_tokenizer_gguf(nb04, tmp_path / "llama3-tokenizer.gguf", ranks, ours.special_tokens, "llama-bpe")
    gguf_tokenizer = nb04.GGUFTokenizer(nb04.open_gguf(path))
    for text in TEXTS:
        assert gguf_tokenizer.encode(text) == meta.encode(text, bos=False, eos=False), text
    assert [gguf_tokenizer.decode([i]) for i in gguf_tokenizer.encode("12345")] == ["123", "45"]
    assert gguf_tokenizer.encode("hi", bos=True)[0] == meta.bos_id
    # the same vocabulary read with GPT-2's pattern gives other ids
    gpt2_path = write_tokenizer_gguf(nb04, tmp_path / "as-gpt2.gguf", ranks, ours.special_tokens, "gpt-2")
    as_gpt2 = nb04.GGUFTokenizer(nb04.open_gguf(gpt2_path))
    assert any(as_gpt2.encode(text) != meta.encode(text, bos=False, eos=False) for text in TEXTS)


def test_gated_llama32_without_smollm2_gives_the_stand_in_and_both_reasons(gated_hub, tmp_path):
    """Online, Meta's repository gated and SmolLM2's neither in the cache nor downloadable (the fake Hub answers
    500): fetch_llama3 writes the stand-in and its one line says why for both repositories."""
    import subprocess
    import sys

    import replicas
    from nbsupport.notebooks import REPO_ROOT

    endpoint, seen = gated_hub
    code = ("from nbsupport import fetch_llama3\n"
            "def build(folder):\n    (folder / 'config.json').write_text('{}')\n"
            "folder = fetch_llama3('meta-llama/Llama-3.2-1B', ['config.json'], build)\n"
            "print('RESULT', sorted(p.name for p in folder.iterdir()))\n")
    env = {**replicas.online_env(tmp_path / "hf-home", endpoint), "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    line, result = run.stdout.splitlines()
    assert line == ("Using an offline stand-in for meta-llama/Llama-3.2-1B (same file format): meta-llama/Llama-3.2-1B "
                    "is gated: accept its license at https://huggingface.co/meta-llama/Llama-3.2-1B and set HF_TOKEN to "
                    "an access token of that account; the Hub cannot be reached (no network) and the files are not in "
                    "the local Hub cache; to download them, connect and run this again."), line
    assert result == "RESULT ['.complete', 'config.json']"
    assert any("/HuggingFaceTB/SmolLM2-135M-Instruct" in path for _, path in seen), seen
