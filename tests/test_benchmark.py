"""The benchmark compares implementations that compute the same thing: its correctness check must pass."""

import json
import sys

import pytest
import torch

from nbsupport.notebooks import REPO_ROOT

pytest.importorskip("llms_from_scratch", reason="pip install --no-deps llms-from-scratch (see README)")
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import generation  # noqa: E402


def test_all_implementations_give_the_same_greedy_tokens():
    assert generation.check_same_tokens(torch.device("cpu")) == 5


def test_ragged_batch_gives_each_prompt_its_tokens_alone_and_transformers_batched_tokens():
    assert generation.check_ragged_batch(torch.device("cpu")) == [3, 7, 12, 20]


def test_transformers_batch_helper_pads_on_the_left():
    cfg = {**generation.CHECK_CFG, "n_layers": 1}
    hf = generation.hf_model(cfg)
    prompts = generation.ragged_prompts([2, 5], cfg["vocab_size"], seed=0, device="cpu")
    out = generation.hf_generate_batch(hf, prompts, 3)
    alone = [hf.generate(p[None], attention_mask=torch.ones(1, len(p), dtype=torch.long), max_new_tokens=3,
                         do_sample=False, pad_token_id=0)[0] for p in prompts]
    assert [o.tolist() for o in out] == [a.tolist() for a in alone]


def test_peers_receive_the_same_weights():
    cfg = {**generation.nb05.LLAMA32_CONFIG_1B, "vocab_size": 64, "context_length": 64, "emb_dim": 32,
           "n_heads": 4, "n_kv_groups": 2, "n_layers": 1, "hidden_dim": 48, "dtype": torch.float32}
    hf = generation.hf_model(cfg)
    ours = generation.ours_from(generation.hub_params(hf), cfg)
    lfs = generation.lfs_from(ours, cfg)
    assert ours.trf_blocks[0].ff.fc1.weight.data_ptr() == hf.model.layers[0].mlp.gate_proj.weight.data_ptr()
    assert lfs.trf_blocks[0].ff.fc1.weight.data_ptr() == hf.model.layers[0].mlp.gate_proj.weight.data_ptr()


def test_runs_of_another_batch_size_keep_caches_of_their_own():
    """The sweep's batch sizes run in turns with the batch-1 rows, each on a module of its own over the same
    weights, so no timed run allocates a new cache (which a frozen compiled step would recompile for)."""
    cfg = {**generation.nb05.LLAMA32_CONFIG_1B, "vocab_size": 64, "context_length": 64, "emb_dim": 32,
           "n_heads": 4, "n_kv_groups": 2, "n_layers": 1, "hidden_dim": 48, "dtype": torch.float32}
    ours = generation.ours_from(generation.hub_params(generation.hf_model(cfg)), cfg)
    generation.nb05.generate(ours, torch.tensor([[1, 2, 3]]), 4)
    twin = generation.sharing_weights(ours)
    assert all(a is b for a, b in zip(ours.parameters(), twin.parameters())) and twin.cos is ours.cos
    assert twin.out_head.weight is twin.tok_emb.weight  # the tie kept
    cache = ours.trf_blocks[0].att.kv_cache.k
    out = generation.nb05.generate(twin, torch.tensor([[1, 2, 3]] * 4), 4)
    assert ours.trf_blocks[0].att.kv_cache.k is cache and twin.trf_blocks[0].att.kv_cache.k.shape[0] == 4
    assert torch.equal(out[0], generation.nb05.generate(ours, torch.tensor([[1, 2, 3]]), 4)[0])


def test_batch_sweep_writes_its_table_json_and_plot(tmp_path, monkeypatch, capsys):
    """The script's sweep end to end (its main(), in this process), on the reduced model: it measures nothing
    there, but every part runs. Its correctness check is
    test_ragged_batch_gives_each_prompt_its_tokens_alone_and_transformers_batched_tokens."""
    out, plot = tmp_path / "sweep.json", tmp_path / "sweep.png"
    monkeypatch.setattr(sys, "argv", ["generation.py", "--reduced", "--sweep-only", "--batch-sizes", "1,2", "--rounds", "1",
                                      "--new-tokens", "4", "--skip-checks", "--json", str(out), "--plot", str(plot)])
    generation.main()
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    sweep = result["batch_sweep"]
    assert sweep["prompt_lengths"] == {"1": [16], "2": [16, 13]}
    assert set(sweep["results"]) == {generation.COMPILED, generation.HF}
    assert all(set(runs) == {"1", "2"} for runs in sweep["results"].values())
    flops_per_token = sweep["flops_per_token"]  # a multiply and an add per weight of the linear layers, head included:
    assert flops_per_token == pytest.approx(2 * result["weight_bytes"] / 2, rel=0.01)  # bfloat16: 2 bytes per weight
    for b in (1, 2):
        memory_bound = b * result["read_bandwidth_bytes_per_s"] / result["weight_bytes"]
        assert sweep["estimates_tokens_per_s"]["memory-bound"][str(b)] == pytest.approx(memory_bound)
        matmul_rate = sweep["linear_flops_per_s"][str(b)] / flops_per_token
        assert sweep["estimates_tokens_per_s"]["matmul-rate"][str(b)] == pytest.approx(matmul_rate)
        ours = sweep["results"][generation.COMPILED][str(b)]["tokens_per_s"]
        # a step reads the weights once and the cache of every sequence: longest prompt + new tokens, all layers
        cache = b * 2 * 2 * 2 * (256 // 8) * 2 * (16 + 4)  # layers, keys and values, kv heads, head_dim, bytes
        assert sweep["bytes_per_step"][str(b)] == result["weight_bytes"] + cache
        gbps = ours / b * sweep["bytes_per_step"][str(b)]  # steps per second x bytes per step
        assert (f"| {b} | {ours:.2f} | {ours / b:.2f} | {gbps / 1e9:.1f} | "
                f"{100 * gbps / result['read_bandwidth_bytes_per_s']:.0f}% |") in stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_llama_cpp_peer_computes_our_model_on_the_same_gguf_file(tmp_path):
    """The llama.cpp rows time the model we time: on the same GGUF file (a Llama 3.2 replica in llama.cpp's
    layout, F16), llama.cpp's greedy tokens follow ours, and the runner returns the prompt and n new tokens."""
    if generation.llama_cpp_missing():
        pytest.skip(generation.llama_cpp_missing())
    import replicas

    path, vocab = replicas.write_llama32_gguf(tmp_path / "replica-F16.gguf", "F16")
    ours, _, cfg = generation.nb05.load_gguf(path, torch.float32)
    prompt = torch.randint(0, vocab, (1, 12), generator=torch.Generator().manual_seed(3))
    run = generation.llama_cpp_runner(path, torch.get_num_threads(), 64)
    theirs = run(prompt, 24)
    assert theirs.shape == (1, 36) and torch.equal(theirs[:, :12], prompt)
    assert torch.equal(run(prompt, 24), theirs)  # each run evaluates the prompt afresh
    # next-token predictions of ours along llama.cpp's sequence: the same model up to float16 rounding
    with torch.no_grad():
        predicted = ours(theirs)[0, 11:-1].argmax(-1)
    assert (predicted == theirs[0, 12:]).float().mean().item() >= 0.9, (predicted, theirs)


def test_gguf_of_the_benchmark_weights_loads_as_the_same_model(tmp_path):
    """write_gguf: the benchmark's weights (Hub names) as a BF16 GGUF file hold them exactly: notebook 05's
    GGUF loader reads back the model that its safetensors loader builds from the same tensors."""
    cfg = {**generation.CHECK_CFG, "vocab_size": 128_256, "dtype": torch.bfloat16}
    hf = generation.hf_model(cfg)
    params = generation.hub_params(hf)
    ours = generation.ours_from(params, cfg)
    path = generation.write_gguf(params, cfg, tmp_path / "bench-BF16.gguf", "BF16")
    again, tokenizer, cfg_again = generation.nb05.load_gguf(path, torch.bfloat16)
    assert cfg_again["vocab_size"] == 128_256 and len(tokenizer.special_tokens) == 256
    for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_batch_1_table_json_and_profile_without_a_sweep(tmp_path, monkeypatch, capsys):
    """The script's batch-1 rows end to end on the reduced model, with --profile and --json but no sweep.
    17 new tokens, as many as the profile generates: its runs reuse the compiled steps (the static cache has
    the same length) instead of compiling them again."""
    out = tmp_path / "table.json"
    monkeypatch.setattr(sys, "argv", ["generation.py", "--reduced", "--rounds", "1", "--new-tokens", "17", "--skip-checks",
                                      "--no-llama-cpp", "--profile", "--json", str(out)])
    generation.main()
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["batch_sweep"]["results"] == {} and result["batch_sweep"]["flops_per_token"] is None
    assert set(result["profiles"]) == {generation.COMPILED, generation.INT8}
    for name, p in result["profiles"].items():
        assert p["tokens"] == 17 and sum(op["s"] for op in p["top_self_time"]) <= p["total_s"] * 1.5
        assert f"profile of {name}, 17 tokens" in stdout
    assert "llama.cpp left out: --no-llama-cpp" in stdout
    cache = 2 * 2 * 2 * (256 // 8) * 2 * (16 + 17)  # layers, keys and values, kv heads, head_dim, bytes; positions
    for name, r in result["results"].items():  # beside tokens/s: the GB/s of weights and cache, share of bandwidth
        assert r["bytes_per_step"] == r["weight_bytes"] + (cache if name != "ours, no cache" else 0)
        gbps = r["tokens_per_s"] * r["bytes_per_step"]
        assert (f"× | {gbps / 1e9:.1f} | {100 * gbps / result['read_bandwidth_bytes_per_s']:.0f}% | "
                f"{r['time_to_first_token_s'] * 1000:.0f} |") in stdout
