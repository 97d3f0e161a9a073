"""Notebook 02's loader against Hugging Face's GPT2LMHeadModel on the same random weights."""

import pytest
import torch
import transformers
from safetensors import safe_open

from nbsupport import fetch, import_notebook
from nbsupport.standins import gpt2_checkpoint

transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module")
def nb02():
    return import_notebook("02-load-gpt2-weights.ipynb")


def hf_gpt2(emb_dim, n_layers, n_heads, vocab_size=50257, context_length=1024, seed=0):
    """A randomly initialised reference model and its weights in the Hub file's naming."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_embd=emb_dim, n_layer=n_layers, n_head=n_heads, vocab_size=vocab_size,
                                     n_positions=context_length, attn_implementation="eager")
    ref = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # the default init sets biases and norms to 0/1; make every tensor matter
        for name, p in ref.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    params = {k.removeprefix("transformer."): v.clone() for k, v in ref.state_dict().items()
              if k != "lm_head.weight"}
    return ref, params


def our_gpt(nb02, emb_dim, n_layers, n_heads, vocab_size=50257, context_length=1024):
    cfg = {**nb02.GPT_CONFIG_124M, "emb_dim": emb_dim, "n_layers": n_layers, "n_heads": n_heads,
           "vocab_size": vocab_size, "context_length": context_length, "qkv_bias": True, "drop_rate": 0.0}
    with torch.device("meta"):
        return nb02.GPTModel(cfg)


@pytest.mark.parametrize("size", [(64, 3, 4, 321, 64), (768, 12, 12, 50257, 1024)], ids=["small", "124M"])
def test_logits_and_greedy_tokens_equal_transformers(nb02, size):
    emb_dim, n_layers, n_heads, vocab, ctx = size
    ref, params = hf_gpt2(emb_dim, n_layers, n_heads, vocab, ctx)
    gpt = our_gpt(nb02, emb_dim, n_layers, n_heads, vocab, ctx)
    nb02.load_weights_into_gpt(gpt, params)
    gpt.eval()
    idx = torch.randint(0, vocab, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(gpt(idx), ref(idx).logits, rtol=1e-5, atol=1e-5)  # the notebook's tolerance
    prompt = idx[:1, :8]
    ours = nb02.generate(gpt, prompt, max_new_tokens=30, context_size=ctx)
    theirs = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30, do_sample=False,
                          pad_token_id=0)
    assert torch.equal(ours, theirs)


def test_output_head_is_the_token_embedding(nb02):
    _, params = hf_gpt2(32, 1, 2, 50, 16)
    gpt = our_gpt(nb02, 32, 1, 2, 50, 16)
    nb02.load_weights_into_gpt(gpt, params)
    assert gpt.out_head.weight is gpt.tok_emb.weight
    assert gpt.out_head.weight.data_ptr() == params["wte.weight"].data_ptr()  # no copy


def small_model_and_params(nb02):
    ref, params = hf_gpt2(32, 2, 2, 50, 16)
    torch.manual_seed(0)
    cfg = {**nb02.GPT_CONFIG_124M, "emb_dim": 32, "n_layers": 2, "n_heads": 2, "vocab_size": 50,
           "context_length": 16, "qkv_bias": True}
    return nb02.GPTModel(cfg), params


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("corrupt, expected", [
    (lambda p: p.pop("h.1.mlp.c_fc.bias"), "missing keys \\['h.1.mlp.c_fc.bias'\\]"),
    (lambda p: p.__setitem__("h.2.ln_1.weight", torch.ones(32)), "unexpected keys \\['h.2.ln_1.weight'\\]"),
    (lambda p: p.__setitem__("wpe.weight", torch.zeros(17, 32)),
     "pos_emb.weight: checkpoint \\(17, 32\\) vs model \\(16, 32\\)"),
])
def test_loader_is_strict_and_leaves_model_untouched(nb02, corrupt, expected):
    gpt, params = small_model_and_params(nb02)
    before = snapshot(gpt)
    corrupt(params)
    with pytest.raises(ValueError, match=expected):
        nb02.load_weights_into_gpt(gpt, params)
    after = gpt.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_books_params_dict_gets_a_hint(nb02):
    """The book's ch. 5.5 loads OpenAI's TensorFlow files into a nested dict; that dict is refused with
    what to pass instead, not with hundreds of missing keys."""
    gpt, _ = small_model_and_params(nb02)
    books = {"blocks": [{"attn": {}}], "wte": torch.zeros(50, 32), "wpe": torch.zeros(16, 32), "g": 0, "b": 0}
    with pytest.raises(ValueError, match="book's params from OpenAI's TensorFlow files.*model.safetensors"):
        nb02.load_weights_into_gpt(gpt, books)


def test_a_bigger_checkpoint_lists_ten_keys_and_a_count(nb02):
    gpt, params = small_model_and_params(nb02)  # 2 blocks; the checkpoint gets 2 more (24 extra tensors)
    for name in [k for k in params if k.startswith("h.1.")]:
        params[name.replace("h.1.", "h.2.")] = params[name].clone()
        params[name.replace("h.1.", "h.3.")] = params[name].clone()
    with pytest.raises(ValueError, match=r"the checkpoint's size\?\): missing keys \[\], unexpected keys "
                                         r"\['h.2.attn.c_attn.bias', .*, '... 14 more'\]$"):
        nb02.load_weights_into_gpt(gpt, params)


def test_mask_buffers_are_skipped(nb02):
    gpt, params = small_model_and_params(nb02)
    params["h.0.attn.bias"] = torch.ones(1, 1, 16, 16)
    params["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    nb02.load_weights_into_gpt(gpt, params)


HUB_GPT2_KEYS = (  # tensor names of openai-community/gpt2's model.safetensors, per layer and global
    ["attn.bias", "attn.c_attn.bias", "attn.c_attn.weight", "attn.c_proj.bias", "attn.c_proj.weight",
     "ln_1.bias", "ln_1.weight", "ln_2.bias", "ln_2.weight", "mlp.c_fc.bias", "mlp.c_fc.weight",
     "mlp.c_proj.bias", "mlp.c_proj.weight"],
    ["ln_f.bias", "ln_f.weight", "wpe.weight", "wte.weight"],
)


def test_stand_in_has_the_hub_files_keys_shapes_and_dtypes():
    folder = fetch("openai-community/gpt2", ["config.json", "model.safetensors"], gpt2_checkpoint(768, 12, 12))
    per_layer, global_keys = HUB_GPT2_KEYS
    expected = set(global_keys) | {f"h.{i}.{k}" for i in range(12) for k in per_layer}
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert set(f.keys()) == expected
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
        assert f.get_slice("h.3.attn.c_attn.weight").get_shape() == [768, 2304]
        assert f.get_slice("h.3.attn.bias").get_shape() == [1, 1, 1024, 1024]
        assert f.get_slice("wte.weight").get_shape() == [50257, 768]
    # the reference implementation accepts the stand-in folder as a real checkpoint
    ref = transformers.GPT2LMHeadModel.from_pretrained(folder)
    assert ref.config.n_layer == 12
