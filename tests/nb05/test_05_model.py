"""Notebook 05, section 1: the model against transformers, its KV cache, the positions and mask it computes
from the cache slots, and that the notebook imports nothing from this repository."""

import ast
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from nbsupport.notebooks import REPO_ROOT, without_magics

NOTEBOOK = "05-standalone-llama32.ipynb"


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
    assert full.shape == (1, 12, 257) and first.shape == (1, 1, 257)  # with the cache: the last position only
    torch.testing.assert_close(first[:, -1], full[:, 7], atol=1e-5, rtol=1e-5)
    for i, logits in zip(range(8, 12), rest):
        torch.testing.assert_close(logits[:, -1], full[:, i], atol=1e-5, rtol=1e-5)


def test_the_prompt_token_by_token_gives_the_logits_of_the_prompt_at_once(small):
    """Prefilling the cache one token per call (each at its slot) and in one call give the same last logits."""
    model, _, _ = small
    tokens = torch.randint(0, 257, (2, 9), generator=torch.Generator().manual_seed(5))
    model.setup_kv_cache(2, 9)
    with torch.no_grad():
        at_once = model(tokens, torch.arange(9))
        by_token = [model(tokens[:, i:i + 1], torch.tensor([i])) for i in range(9)][-1]
    torch.testing.assert_close(by_token, at_once, atol=1e-5, rtol=1e-5)


def test_kv_cache_writes_in_place_at_the_slots_and_returns_every_slot(nb05):
    cache = nb05.KVCache(2, 3, 10, 4, torch.float32, torch.device("cpu"))
    k_buffer, v_buffer = cache.k, cache.v
    assert cache.k.shape == cache.v.shape == (2, 3, 10, 4) and not cache.k.any()
    k, v = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)
    k_all, v_all = cache.update(torch.tensor([4, 5]), k, v)
    assert k_all.data_ptr() == k_buffer.data_ptr() and k_all.shape == k_buffer.shape  # the same memory every step
    assert v_all.data_ptr() == v_buffer.data_ptr() and v_all.shape == v_buffer.shape
    assert torch.equal(k_all[:, :, 4:6], k) and torch.equal(v_all[:, :, 4:6], v)
    assert not k_all[:, :, :4].any() and not k_all[:, :, 6:].any()
    k1, v1 = torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4)  # a batch of one: the first row, the other untouched
    k_one, _ = cache.update(torch.tensor([6]), k1, v1)
    assert k_one.shape == (1, 3, 10, 4) and k_one.data_ptr() == k_buffer.data_ptr()
    assert torch.equal(k_buffer[:1, :, 6:7], k1) and not k_buffer[1:, :, 6].any()


def test_positions_and_mask_of_one_sequence_are_causal_over_the_slots(nb05):
    pos, mask = nb05.positions_and_mask(torch.arange(3, 6), 8)
    assert pos.tolist() == [[3, 4, 5]]  # the slots are the positions
    slot = torch.arange(8)
    assert torch.equal(mask, torch.stack([slot <= p for p in (3, 4, 5)]))  # (t, s); the empty tail hidden
    pos, mask = nb05.positions_and_mask(torch.tensor([7]), 8)  # a decode step
    assert pos.tolist() == [[7]] and mask.tolist() == [[True] * 8]


@pytest.mark.parametrize("input_pos", [torch.arange(0, 6), torch.arange(2, 6), torch.tensor([6]), torch.tensor([9])],
                         ids=["prefill", "prefill-from-slot-2", "decode", "decode-later"])
def test_positions_and_mask_of_a_left_padded_batch_equal_an_explicit_reference(nb05, input_pos):
    """Sequence b starts at slot start[b]: its RoPE positions count from there (0 on its padding), a real query
    sees the slots start[b] ... p, a padding query sees itself only (no empty row: no NaN in the softmax)."""
    start, n_slots = torch.tensor([3, 0, 5, 6]), 12
    pos, mask = nb05.positions_and_mask(input_pos, n_slots, start)
    b, t = len(start), len(input_pos)
    assert pos.shape == (b, t) and mask.shape == (b, 1, t, n_slots) and mask.dtype == torch.bool
    for i in range(b):
        for j, p in enumerate(input_pos.tolist()):
            s0 = start[i].item()
            assert pos[i, j].item() == max(p - s0, 0), (i, p)
            visible = [s for s in range(n_slots) if s <= p and (s >= s0 or s == p)]
            assert mask[i, 0, j].nonzero().flatten().tolist() == visible, (i, p)
    assert mask.any(dim=-1).all()


def test_setup_kv_cache_keeps_caches_large_enough_and_replaces_the_others(nb05, small):
    _, _, cfg = small
    torch.manual_seed(0)
    model = nb05.Llama3Model(cfg).eval()
    assert all(b.att.kv_cache is None for b in model.trf_blocks)
    caches = lambda: [b.att.kv_cache for b in model.trf_blocks]
    model.setup_kv_cache(2, 10)
    first = caches()
    head_dim = cfg["emb_dim"] // cfg["n_heads"]
    assert len({id(c) for c in first}) == cfg["n_layers"]  # one cache per layer
    assert all(c.k.shape == c.v.shape == (2, cfg["n_kv_groups"], 10, head_dim) for c in first)
    assert all(c.k.dtype == torch.float32 and c.k.device.type == "cpu" for c in first)
    for batch, max_len in [(2, 10), (2, 4)]:  # as long or longer than needed: kept
        model.setup_kv_cache(batch, max_len)
        assert all(a is b for a, b in zip(caches(), first)), (batch, max_len)
    model.setup_kv_cache(2, 11)  # too short: new caches
    longer = caches()
    assert all(c is not f and c.k.shape[2] == 11 for c, f in zip(longer, first))
    model.setup_kv_cache(1, 11)  # a smaller batch: kept (it writes and reads the first rows)
    assert all(c is f for c, f in zip(caches(), longer))
    model.setup_kv_cache(3, 5)  # a larger batch: new caches, as long as asked
    assert all(c is not f and c.k.shape[:3] == (3, cfg["n_kv_groups"], 5) for c, f in zip(caches(), longer))
    half = nb05.with_weights_in(model, torch.bfloat16)  # its copied caches are float32: replaced
    copied = [b.att.kv_cache for b in half.trf_blocks]
    half.setup_kv_cache(3, 5)
    assert all(b.att.kv_cache is not c and b.att.kv_cache.k.dtype == torch.bfloat16
               for b, c in zip(half.trf_blocks, copied))


def test_cacheless_forward_longer_than_the_context_is_refused(small):
    model, _, _ = small
    with pytest.raises(ValueError, match=r"^the prompt has 257 tokens: give 1 to 256 \(the context length\)$"):
        model(torch.zeros(1, 257, dtype=torch.long))


def test_half_dtype_is_float16_on_gpus_without_bfloat16(nb05, monkeypatch):
    """Colab's T4 (compute capability 7.5) has no bfloat16 arithmetic: notebook 05 and the benchmark use float16."""
    # a T4: bfloat16 "supported" through emulation only
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert nb05.half_dtype(torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert nb05.half_dtype(torch.device("cuda")) == torch.bfloat16
    assert nb05.half_dtype(torch.device("cpu")) == torch.bfloat16


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
    assert "files(\"llama_models\")" in source  # Meta's tokenizer file comes from a pip package


def test_a_smaller_batch_on_a_larger_cache_gives_its_tokens_eager_and_compiled(nb05, varied, varied_step):
    """After a batch of 3, a batch of 1 (and of 2) reuses the caches of 3 rows, eager and with the compiled step:
    the tokens each prompt gets on caches of its own size."""
    model, cfg = varied
    prompts = torch.randint(0, cfg["vocab_size"], (3, 7), generator=torch.Generator().manual_seed(6))
    expected = {}
    for b in (1, 2):
        alone = nb05.with_weights_in(model, torch.float32)  # a copy, with caches of this batch's own size
        for block in alone.trf_blocks:
            block.att.kv_cache = None
        expected[b] = nb05.generate(alone, prompts[:b], 10)
    for step in (nb05.decode_one_token, varied_step):
        nb05.generate(model, prompts, 10, decode_step=step)
        big = model.trf_blocks[0].att.kv_cache
        for b in (1, 2):
            assert torch.equal(nb05.generate(model, prompts[:b], 10, decode_step=step), expected[b]), (step, b)
            assert model.trf_blocks[0].att.kv_cache is big
