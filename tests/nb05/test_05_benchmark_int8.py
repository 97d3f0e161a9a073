"""Notebook 05, sections 5 and 6 (and Appendix D): the benchmark's timing plumbing, its timed runs on the cache
of its warm-up, and int8 weight-only quantization against PyTorch's per-channel quantization."""

import math
import time

import pytest
import torch
import torch.nn.functional as F

CPU = torch.device("cpu")


def test_benchmark_times_its_runs_on_the_cache_of_its_warm_up(nb05, varied):
    """A cache allocated inside a timed run would be timed too (and on a GPU re-record the CUDA graph)."""
    _, cfg = varied
    torch.manual_seed(0)
    model = nb05.Llama3Model(cfg).eval()  # no cache yet
    prompt = torch.tensor([[1, 2, 3]])
    caches = []

    def run(m, p, n):
        out = nb05.generate(m, p, n)
        caches.append(m.trf_blocks[0].att.kv_cache.k)
        return out

    result = nb05.benchmark(model, prompt, 8, CPU, run)
    assert len(caches) == 1 + 2 * 3 and all(c is caches[0] for c in caches)  # warm-up, 3 × (1 token, 8 tokens)
    assert isinstance(result, nb05.Measurement)
    assert torch.equal(result.tokens, nb05.generate(model, prompt, 8))
    assert result.tokens_per_s > 0 and result.first_token_s > 0 and result.peak_memory is None  # no memory off CUDA


def test_timed_and_best_time(nb05):
    calls = []

    def work():
        calls.append(1)
        time.sleep(0.02)
        return "done"

    out, seconds = nb05.timed(work, CPU)
    assert out == "done" and 0.02 <= seconds < 1.0
    calls.clear()
    best = nb05.best_time(work, CPU, repeats=3)
    assert len(calls) == 1 + 3 and 0.02 <= best < 1.0  # one untimed call first
    assert nb05.read_bandwidth(CPU, n_bytes=2**22) > 0


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")  # deprecated, still the reference here
def test_int8_weights_match_pytorchs_per_channel_quantization(nb05):
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        linear = torch.nn.Linear(96, 40, bias=False, dtype=dtype)
        q = nb05.Int8Linear(linear)
        assert q.weight.dtype == torch.int8 and q.scales.dtype == dtype and q.out_features == 40
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
    agree, rel_err = nb05.compare_predictions(model, int8, tokens)  # Appendix D's measures of the same
    assert agree >= 0.9 and rel_err < 0.05
    # generation works on it, and compiling the decode step changes nothing
    prompt = tokens[:, :5]
    eager = nb05.generate(int8, prompt, 24, cfg["context_length"], top_k=257)
    compiled = nb05.compile_decode_step(CPU)
    assert torch.equal(nb05.generate(int8, prompt, 24, cfg["context_length"], decode_step=compiled), eager)
    assert nb05.weight_bytes(int8) < nb05.weight_bytes(model) / 3


def test_weight_bytes_counts_the_linear_layers_and_norms_once(nb05, small):
    model, _, cfg = small
    # the tied head is the embedding: every parameter once
    assert nb05.weight_bytes(model) == sum(p.nbytes for p in model.parameters())
    int8 = nb05.quantize_int8(nb05.with_weights_in(model, torch.bfloat16))
    d, v, h, n = cfg["emb_dim"], cfg["vocab_size"], cfg["hidden_dim"], cfg["n_layers"]
    kv = d // cfg["n_heads"] * cfg["n_kv_groups"]
    rows = n * (d + kv + kv + d + h + h + d) + v  # one int8 byte per weight, a bfloat16 scale per row
    weights = n * (d * d + 2 * kv * d + d * d + 3 * h * d) + v * d
    norms = (2 * n + 1) * d * 2
    assert nb05.weight_bytes(int8) == weights + 2 * rows + norms


def test_with_weights_in_copies_the_model_in_another_dtype(nb05, small):
    model, _, _ = small
    half = nb05.with_weights_in(model, torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16} and {p.dtype for p in model.parameters()} == {torch.float32}
    assert half.cos is model.cos and half.sin is model.sin and half.cos.dtype == torch.float32
    assert half.out_head.weight is half.tok_emb.weight
    tokens = torch.randint(0, 257, (1, 32), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(half(tokens).float(), model(tokens), atol=0.1, rtol=0.05)


def test_perplexity_and_compare_predictions(nb05, small):
    model, _, _ = small
    ids = torch.randint(0, 257, (1, 40), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(ids)[0, :-1]
    expected = math.exp(F.cross_entropy(logits, ids[0, 1:]).item())
    assert nb05.perplexity(model, ids) == pytest.approx(expected, rel=1e-6)
    assert nb05.compare_predictions(model, model, ids) == (1.0, 0.0)


def test_cache_bytes_and_the_read_columns(nb05, small):
    """A decode step reads every slot of the caches: keys and values of every layer, batch x kv heads x slots x
    head_dim; read_rate gives the GB/s and the share of the bandwidth of that many steps per second."""
    model, _, cfg = small
    model.setup_kv_cache(3, 40)
    head_dim = cfg["emb_dim"] // cfg["n_heads"]
    assert nb05.cache_bytes(model) == cfg["n_layers"] * 2 * 3 * cfg["n_kv_groups"] * 40 * head_dim * 4  # float32
    assert nb05.cache_bytes(model, 1) == nb05.cache_bytes(model) // 3  # a batch of one reads its row only
    assert nb05.read_rate(50.0, 2e8, 4e10) == f"{10.0:>7.1f}{'25%':>10}"  # 50 steps of 0.2 GB: 10 GB/s of 40


def test_benchmark_on_cuda_frees_the_previous_caches_and_resets_the_peak(nb05, varied, monkeypatch):
    """The CUDA branch of benchmark, on the CPU (torch.cuda's calls recorded): each mode's peak is measured from a
    reset after the caches of the mode before were dropped, so the warm-up allocates the mode's own cache."""
    model, _ = varied
    prompt = torch.tensor([[1, 2, 3]])
    nb05.generate(model, prompt, 8)
    old = model.trf_blocks[0].att.kv_cache
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(("empty_cache", model.trf_blocks[0].att.kv_cache)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: calls.append(("reset", None)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 12345)
    result = nb05.benchmark(model, prompt, 8, torch.device("cuda"), lambda m, p, n: nb05.generate(m, p, n))
    assert calls == [("empty_cache", None), ("reset", None)]  # the caches were gone when memory was released
    assert model.trf_blocks[0].att.kv_cache is not old and result.peak_memory == 12345
