"""Notebook 03's Llama 2 against Meta's own reference implementation (llama_models.llama3.model).

With rope_theta=10000, no rope scaling and n_kv_heads == n_heads, Meta's Llama 3 reference is the
Llama 2 architecture. nbsupport.references imports it with single-process stand-ins for fairscale's layers.
"""

import sys

import pytest
import torch
from torch import nn

from nbsupport import fetch, import_notebook
from nbsupport.references import meta_llama2, meta_llama_module
from nbsupport.standins import LLAMA2_SENTENCEPIECE_OPTIONS, llama2_checkpoint


@pytest.fixture(scope="module")
def meta_reference():
    return meta_llama_module()


@pytest.fixture(scope="module")
def nb03():
    return import_notebook("03-gpt-to-llama2.ipynb")


PARAM_CONFIG = {"dim": 96, "multiple_of": 32, "n_heads": 6, "n_layers": 3, "norm_eps": 1e-5, "vocab_size": -1}


def meta_model_and_params(meta_reference, vocab_size=113, seed=0, rope_theta=10000.0):
    from llama_models.llama3.args import ModelArgs
    torch.manual_seed(seed)
    args = ModelArgs(**{**PARAM_CONFIG, "vocab_size": vocab_size}, rope_theta=rope_theta, use_scaled_rope=False,
                     max_seq_len=64, max_batch_size=2)
    ref = meta_reference.Transformer(args).eval()
    with torch.no_grad():  # norms start at 1: perturb them so that every tensor is checked
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    params = {k: v.clone() for k, v in ref.state_dict().items()}
    head_dim = PARAM_CONFIG["dim"] // PARAM_CONFIG["n_heads"]
    params["rope.freqs"] = 1.0 / rope_theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    return ref, params


def our_config(nb03, vocab_size=113, dtype=torch.float32):
    """Our config dict (the loader's param_config) for Meta's PARAM_CONFIG."""
    return nb03.llama2_config(PARAM_CONFIG, vocab_size, context_length=64, dtype=dtype)


def our_llama(nb03, vocab_size=113, dtype=torch.float32):
    cfg = nb03.llama2_config(PARAM_CONFIG, vocab_size, context_length=64, dtype=dtype)
    with torch.device("meta"):
        return nb03.Llama2Model(cfg)


def test_logits_equal_metas_reference(nb03, meta_reference):
    ref, params = meta_model_and_params(meta_reference)
    model = our_llama(nb03)
    nb03.load_weights_into_llama(model, our_config(nb03), params)
    model.eval()
    tokens = torch.randint(0, 113, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(tokens)
    theirs = ref(tokens, start_pos=0)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_without_the_permutation_the_logits_are_wrong(nb03, meta_reference, monkeypatch):
    """Meta's weights loaded unchanged give other logits than Meta's code."""
    ref, params = meta_model_and_params(meta_reference)
    model = our_llama(nb03)
    monkeypatch.setattr(nb03, "permute_for_halves_rope", lambda w, n_heads: w)
    nb03.load_weights_into_llama(model, our_config(nb03), params)
    model.eval()
    tokens = torch.randint(0, 113, (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (model(tokens) - ref(tokens, start_pos=0)).abs().max().item() > 1e-2


def test_meta_llama2_is_metas_model_on_the_checkpoints_tensors(meta_reference):
    """The notebook's reference (built on the meta device, weights assigned) = Meta's Transformer as Meta builds
    it, and it shares the checkpoint's tensors instead of copying them."""
    ref, params = meta_model_and_params(meta_reference)
    built = meta_llama2(PARAM_CONFIG, 113, params, max_seq_len=64)
    assert built.tok_embeddings.weight.data_ptr() == params["tok_embeddings.weight"].data_ptr()
    tokens = torch.randint(0, 113, (1, 40), generator=torch.Generator().manual_seed(3))
    assert torch.equal(built(tokens, start_pos=0), ref(tokens[:1], start_pos=0))


def test_metas_reference_import_leaves_no_fake_fairscale():
    meta_llama_module()
    assert not any(name.startswith("fairscale") and not hasattr(sys.modules[name], "__file__")
                   for name in list(sys.modules))


def test_notebook_check_against_meta_fails_for_wrong_rope_frequencies(nb03, meta_reference, monkeypatch):
    """The notebook compares the loaded model with Meta's code: a RoPE base other than Llama 2's is caught."""
    _, params = meta_model_and_params(meta_reference)
    ref = meta_llama2(PARAM_CONFIG, 113, params, max_seq_len=64)
    wrong = nb03.precompute_rope_params
    monkeypatch.setattr(nb03, "precompute_rope_params", lambda head_dim, theta_base=10_000, context_length=4096:
                        wrong(head_dim, 500_000, context_length))
    model = our_llama(nb03)
    nb03.load_weights_into_llama(model, our_config(nb03), params)
    tokens = torch.randint(0, 113, (1, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (model.eval()(tokens) - ref(tokens, start_pos=0)).abs().max().item() > 1e-3


def test_greedy_generation_equals_reference(nb03, meta_reference):
    ref, params = meta_model_and_params(meta_reference)
    model = our_llama(nb03)
    nb03.load_weights_into_llama(model, our_config(nb03), params)
    idx = torch.tensor([[1, 17, 42, 5]])
    ours = nb03.generate(model, idx, max_new_tokens=20, context_size=64)
    expected = idx
    for _ in range(20):
        expected = torch.cat([expected, ref(expected, start_pos=0)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(ours, expected)


def test_rmsnorm_and_silu_equal_builtins(nb03):
    x = torch.randn(3, 5, 48)
    torch.testing.assert_close(nb03.RMSNorm(48)(x), nn.RMSNorm(48, eps=1e-5)(x))
    torch.testing.assert_close(nb03.SiLU()(x), nn.functional.silu(x))


def test_rope_scores_depend_only_on_relative_position(nb03):
    cos, sin = nb03.precompute_rope_params(head_dim=64, context_length=512)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 64), torch.randn(1, 1, 1, 64)

    def score(m, n):
        qs, ks = torch.zeros(1, 1, 512, 64), torch.zeros(1, 1, 512, 64)
        qs[:, :, m], ks[:, :, n] = q[:, :, 0], k[:, :, 0]
        return (nb03.compute_rope(qs, cos, sin)[0, 0, m] @ nb03.compute_rope(ks, cos, sin)[0, 0, n]).item()

    for offset in (0, 3, 50):
        base = score(10 + offset, 10)
        for shift in (1, 100, 400):
            assert score(10 + offset + shift, 10 + shift) == pytest.approx(base, abs=1e-4)
    assert score(13, 10) != pytest.approx(score(60, 10), abs=1e-2)


def test_llama2_7b_parameter_count(nb03):
    with torch.device("meta"):
        model = nb03.Llama2Model(nb03.LLAMA2_CONFIG_7B)
    assert sum(p.numel() for p in model.parameters()) == 6_738_415_616
    params_json = {"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-05, "vocab_size": -1}
    assert nb03.llama2_config(params_json, 32000) == nb03.LLAMA2_CONFIG_7B


def test_rope_theta_comes_from_params_json(nb03, meta_reference):
    """Code Llama's params.json gives rope_theta 1e6: the model then equals Meta's code at that base."""
    ref, params = meta_model_and_params(meta_reference, rope_theta=1e6)
    cfg = nb03.llama2_config({**PARAM_CONFIG, "rope_theta": 1000000}, 113, context_length=64, dtype=torch.float32)
    assert cfg["rope_base"] == 1e6 and our_config(nb03)["rope_base"] == 10_000.0
    with torch.device("meta"):
        model = nb03.Llama2Model(cfg)
    nb03.load_weights_into_llama(model, cfg, params)
    tokens = torch.randint(0, 113, (1, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (model.eval()(tokens) - ref(tokens, start_pos=0)).abs().max().item() <= 1e-5


def test_llama2_config_refuses_rope_scaling(nb03):
    with pytest.raises(ValueError, match=r"^params.json sets use_scaled_rope \(Llama 3.1's RoPE scaling\), which "
                                         r"Llama2Model does not apply; "
                                         r"load the model's Hugging Face files \(config.json, \*.safetensors\) with notebook 04's load_hf_checkpoint and Llama3Model$"):
        nb03.llama2_config({**PARAM_CONFIG, "use_scaled_rope": True}, 113)
    assert nb03.llama2_config({**PARAM_CONFIG, "use_scaled_rope": False}, 113) == nb03.llama2_config(PARAM_CONFIG, 113)


def test_llama2_config_refuses_grouped_query_attention(nb03):
    """Llama 2 70B's params.json has n_kv_heads 8 for 64 heads; Llama2Model has one key/value head per head."""
    with pytest.raises(ValueError, match=r"^params.json sets n_kv_heads = 2 key/value heads for 4 query heads "
                                         r"\(grouped-query attention, as in Llama 2 70B\), which Llama2Model does not "
                                         r"have; load the model's Hugging Face files \(config.json, \*.safetensors\) with notebook 04's load_hf_checkpoint and Llama3Model$"):
        nb03.llama2_config({**PARAM_CONFIG, "n_heads": 4, "n_kv_heads": 2}, 113)
    assert nb03.llama2_config({**PARAM_CONFIG, "n_kv_heads": PARAM_CONFIG["n_heads"]}, 113) == nb03.llama2_config(PARAM_CONFIG, 113)


def test_meta_reference_reads_rope_theta_from_params_json(meta_reference):
    """The reference takes Code Llama's rope_theta from params.json, as llama2_config does."""
    ref, params = meta_model_and_params(meta_reference, rope_theta=1e6)
    built = meta_llama2({**PARAM_CONFIG, "rope_theta": 1000000}, 113, params, max_seq_len=64)
    tokens = torch.randint(0, 113, (1, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(built(tokens, start_pos=0), ref(tokens, start_pos=0))


def metas_chat_text(dialog):
    """The text Meta's Llama 2 chat_completion (llama/generation.py) tokenizes for a dialog that ends with a user
    message: the system prompt folded into the first user message, each exchange in [INST] ... [/INST]."""
    B_INST, E_INST = "[INST]", "[/INST]"
    B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
    if dialog[0]["role"] == "system":
        dialog = [{"role": dialog[1]["role"], "content": B_SYS + dialog[0]["content"] + E_SYS + dialog[1]["content"]}
                  ] + dialog[2:]
    return f"{B_INST} {(dialog[-1]['content']).strip()} {E_INST}"


@pytest.mark.parametrize("system, user", [(None, "What do llamas eat?"), ("You are a helpful assistant.", "Hi!"),
                                          ("Answer briefly.", "  Why?\n"), (None, " x ")])
def test_chat_prompt_equals_metas_format(nb03, system, user):
    dialog = [{"role": "system", "content": system}] * (system is not None) + [{"role": "user", "content": user}]
    assert nb03.llama2_chat_prompt(user, system_prompt=system) == metas_chat_text(dialog)


def test_norm_eps_comes_from_params_json(nb03):
    cfg = nb03.llama2_config({**PARAM_CONFIG, "norm_eps": 1e-6}, 113, context_length=64, dtype=torch.float32)
    with torch.device("meta"):
        model = nb03.Llama2Model(cfg)
    norms = [m for m in model.modules() if isinstance(m, nb03.RMSNorm)]
    assert len(norms) == 2 * PARAM_CONFIG["n_layers"] + 1 and {m.eps for m in norms} == {1e-6}


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("corrupt, expected", [
    (lambda p: p.pop("layers.2.feed_forward.w3.weight"), "missing keys \\['layers.2.feed_forward.w3.weight'\\]"),
    (lambda p: p.__setitem__("layers.3.ffn_norm.weight", torch.ones(96)),
     "unexpected keys \\['layers.3.ffn_norm.weight'\\]"),
    (lambda p: p.__setitem__("output.weight", torch.zeros(100, 96)),
     "out_head.weight: checkpoint \\(100, 96\\) vs model \\(113, 96\\)"),
])
def test_loader_is_strict_and_leaves_model_untouched(nb03, meta_reference, corrupt, expected):
    _, params = meta_model_and_params(meta_reference)
    torch.manual_seed(0)
    model = nb03.Llama2Model(nb03.llama2_config(PARAM_CONFIG, 113, context_length=64, dtype=torch.float32))
    before = snapshot(model)
    corrupt(params)
    with pytest.raises(ValueError, match=expected):
        nb03.load_weights_into_llama(model, our_config(nb03), params)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_loader_rejects_a_config_of_another_model(nb03, meta_reference):
    _, params = meta_model_and_params(meta_reference)
    with pytest.raises(ValueError, match="param_config describes 3 layers and 6 heads, the model has 2"):
        model = nb03.Llama2Model(nb03.llama2_config({**PARAM_CONFIG, "n_layers": 2}, 113, 64, torch.float32))
        nb03.load_weights_into_llama(model, our_config(nb03), params)


@pytest.fixture(scope="module")
def stand_in_folder():
    return fetch("meta-llama/Llama-2-7b", ["params.json", "consolidated.00.pth", "tokenizer.model"],
                 llama2_checkpoint(dim=128, n_layers=2, n_heads=4, multiple_of=64))


def test_offline_tokenizer_round_trips_and_uses_llama2_options(nb03, stand_in_folder):
    tok = nb03.LlamaTokenizer(stand_in_folder / "tokenizer.model")
    texts = ["The for statement", "naïve café 🦙 — ∑ x_i² 12345", "  two  spaces\tand a tab\n", "日本語のテキスト"]
    for text in texts:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("x", bos=True)[0] == tok.bos_id == 1 and tok.eos_id == 2
    pieces = tok.sp.id_to_piece(tok.encode("🦙 2024"))
    assert "<0xF0>" in pieces  # byte fallback, not <unk>
    assert [p for p in pieces if p.strip("▁").isdigit()] == ["2", "0", "2", "4"]  # digits split
    assert LLAMA2_SENTENCEPIECE_OPTIONS["character_coverage"] == 0.99995


def test_stand_in_checkpoint_has_metas_format(nb03, stand_in_folder):
    params = torch.load(stand_in_folder / "consolidated.00.pth", mmap=True, weights_only=True)
    assert set(params) == set(nb03.llama2_names(2)) | {"rope.freqs"}
    assert {v.dtype for v in params.values()} == {torch.bfloat16}


def test_device_for_puts_the_model_on_the_gpu_only_where_its_weights_fit(nb03, capsys):
    """Notebooks 03 and 04's GPU placement, decided on the CPU: 7B in bfloat16 (13.5 GB) at the free memory of
    a 16 GB card (a T4: 14.5 GiB free) and of a 12 GB card."""
    with torch.device("meta"):
        model = nb03.Llama2Model(nb03.LLAMA2_CONFIG_7B)
    cuda = torch.device("cuda")
    assert nb03.device_for(model, cuda, free_bytes=14.5 * 2**30) == cuda
    assert capsys.readouterr().out == ""
    assert nb03.device_for(model, cuda, free_bytes=12 * 2**30) == torch.device("cpu")
    assert capsys.readouterr().out == ("the weights (12.6 GiB) do not fit in the GPU's 12.0 GiB of free memory: "
                                       "the model runs on the CPU\n")
    assert nb03.device_for(model, torch.device("cpu")) == torch.device("cpu")


def test_a_llama2c_checkpoint_loads_to_metas_logits(nb03, meta_reference, tmp_path):
    """A checkpoint as llama2.c's train.py writes it (karpathy/tinyllamas' format: the state dict of a compiled
    model, '_orig_mod.' names, the head tied to the embedding, no rope.freqs, model_args) of a random model built
    by Meta's reference code: llama2c_checkpoint + load_weights_into_llama give Meta's logits within 1e-5."""
    import replicas

    ref, params = meta_model_and_params(meta_reference)
    del params["rope.freqs"]
    tied = params["tok_embeddings.weight"] * 0.1  # llama2.c ties them (scaled: logits of a trained model's size)
    params["tok_embeddings.weight"] = params["output.weight"] = tied
    with torch.no_grad():
        ref.tok_embeddings.weight.copy_(tied)
        ref.output.weight.copy_(tied)
    args = {"dim": 96, "n_layers": 3, "n_heads": 6, "n_kv_heads": 6, "vocab_size": 113, "multiple_of": 32,
            "max_seq_len": 64, "dropout": 0.0}
    torch.save(replicas.llama2c_checkpoint_dict(params, args), tmp_path / "stories.pt")
    cfg, loaded = nb03.llama2c_checkpoint(tmp_path / "stories.pt")
    assert cfg == {**our_config(nb03), "context_length": 64} and set(loaded) == set(params)
    with torch.device("meta"):
        model = nb03.Llama2Model(cfg)
    nb03.load_weights_into_llama(model, cfg, loaded)
    tokens = torch.randint(0, 113, (2, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (model.eval()(tokens) - ref(tokens, start_pos=0)).abs().max().item() <= 1e-5


def test_a_llama2c_checkpoint_with_grouped_query_attention_is_refused(nb03, tmp_path):
    """stories260K has 4 key/value heads for 8 query heads: Llama2Model has no grouped-query attention."""
    import replicas

    args = {"dim": 64, "n_layers": 5, "n_heads": 8, "n_kv_heads": 4, "vocab_size": 512, "multiple_of": 4,
            "max_seq_len": 512, "dropout": 0.0}
    torch.save(replicas.llama2c_checkpoint_dict({}, args), tmp_path / "stories260K.pt")
    with pytest.raises(ValueError, match="n_kv_heads = 4 key/value heads for 8 query heads"):
        nb03.llama2c_checkpoint(tmp_path / "stories260K.pt")


def test_gated_llama2_online_gives_stories110m_and_says_why(gated_hub, tmp_path):
    """Online, against a Hub that refuses meta-llama/Llama-2-7b as gated, with karpathy/tinyllamas and Llama 2's
    public tokenizer in the cache: fetch_llama2 says why in one line and gives stories110M, not the stand-in."""
    import subprocess

    import replicas
    from nbsupport.notebooks import REPO_ROOT
    from nbsupport.standins import train_llama2_style_tokenizer

    endpoint, seen = gated_hub
    tokenizer = tmp_path / "llama2.model"
    train_llama2_style_tokenizer(tokenizer)
    for repo_id in (replicas.TINYLLAMAS, replicas.LLAMA_TOKENIZER):
        replicas.write_replica(tmp_path / "hf-home" / "hub", repo_id, llama2_tokenizer=tokenizer)
    code = ("from nbsupport import fetch_llama2\n"
            "name, checkpoint, tokenizer = fetch_llama2('Llama-2-7b', ['params.json'], None)\n"
            "print('RESULT', name, checkpoint.name, tokenizer.name)\n")
    env = {**replicas.online_env(tmp_path / "hf-home", endpoint), "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "Using stories110M from karpathy/tinyllamas (llama2.c's checkpoint) and Llama 2's tokenizer, instead of Meta's "
        "weights: meta-llama/Llama-2-7b is gated: accept its license at https://huggingface.co/meta-llama/Llama-2-7b "
        "and set HF_TOKEN to an access token of that account.",
        "RESULT stories110M stories110M.pt tokenizer.model"]
    assert any("/meta-llama/Llama-2-7b" in path for _, path in seen), seen  # the Hub was asked
