"""Batch-1 greedy decoding speed of the Llama 3.2 1B architecture, ours against other implementations.

    python benchmarks/generation.py [--device cpu|cuda] [--prompt-tokens 16] [--new-tokens 32] [--rounds 5]
                                    [--json PATH] [--skip-load-check] [--reduced]

Everything is measured in this one process, on the same random bfloat16 weights and the same prompt:

- notebook 05's model: no cache, KV cache, KV cache + torch.compile of the decode step;
- the `llms-from-scratch` package's KV-cache Llama 3 (`pip install --no-deps llms-from-scratch`);
- Hugging Face `transformers.LlamaForCausalLM.generate`;
- an extra row: notebook 05's model with int8 weights (`quantize_int8`), compiled;
- the memory-bandwidth roofline: measured read bandwidth / bytes of weights read per token.

Decode speed excludes the prompt: for every implementation, t(n) is the time to generate n tokens,
and decode tokens/s = (n - 1) / (t(n) - t(1)). After one warm-up run each, the implementations are
timed in turns for several rounds, so that the machine's drifts hit all of them alike, and each reports
its best round (and the median). Before timing, a reduced float32 config with the same weights copied
into every implementation must give identical greedy tokens, so the comparison is between models that
compute the same thing; the int8 row reports instead how often it predicts the same next token as
bfloat16. Finally a full-size checkpoint is written to disk and loaded the way notebook 05 does, in a
child process, whose peak RSS is compared with the file size.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import transformers  # noqa: E402
from llms_from_scratch.kv_cache import llama3 as lfs_llama3  # noqa: E402
from llms_from_scratch.kv_cache.generate import generate_text_simple as lfs_generate  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from nbsupport import import_notebook  # noqa: E402

transformers.logging.set_verbosity_error()
nb05 = import_notebook("05-standalone-llama32.ipynb")


# --- the same weights in every implementation -------------------------------------------------------

def hf_model(cfg):
    """A randomly initialised transformers model of `cfg` (our config keys) and its config."""
    rope = cfg["rope_freq"]
    config = transformers.LlamaConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["emb_dim"], intermediate_size=cfg["hidden_dim"],
        num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_kv_groups"], max_position_embeddings=cfg["context_length"],
        rms_norm_eps=cfg["norm_eps"], tie_word_embeddings=True, rope_theta=cfg["rope_base"],
        rope_scaling={"rope_type": "llama3", "factor": rope["factor"], "low_freq_factor": rope["low_freq_factor"],
                      "high_freq_factor": rope["high_freq_factor"],
                      "original_max_position_embeddings": rope["original_context_length"]})
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = transformers.LlamaForCausalLM(config).to(cfg["dtype"]).eval()
    with torch.no_grad():  # make the norms matter too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def hub_params(hf):
    """The weights under the names of the Hub's model.safetensors (tied: no lm_head)."""
    return {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}


def ours_from(params, cfg):
    with torch.device("meta"):
        model = nb05.Llama3Model(cfg)
    nb05.load_weights_into_llama(model, cfg, params)
    return model.eval()


def lfs_from(ours, cfg):
    """llms-from-scratch's model on the very same tensors (its parameter names are ours)."""
    with torch.device("meta"):
        model = lfs_llama3.Llama3Model(cfg)
    model.load_state_dict(ours.state_dict(), strict=True, assign=True)
    # its RoPE tables were built on the meta device too: compute them for real
    model.cos, model.sin = lfs_llama3.compute_rope_params(cfg["emb_dim"] // cfg["n_heads"], cfg["rope_base"],
                                                          cfg["context_length"], cfg["rope_freq"])
    return model.eval()


# --- the implementations, each as run(prompt, n) -> token ids -------------------------------------------

COMPILED, LFS, HF = "ours, KV cache + compile", "llms-from-scratch KV cache", "transformers generate"
INT8 = "ours, int8 weights + compile"


def runners(ours, lfs, hf, cfg, device):
    compiled_step = nb05.compile_decode_step(device)
    ctx = cfg["context_length"]

    def hf_generate(p, n):
        with torch.inference_mode():
            return hf.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, pad_token_id=0)

    def lfs_run(p, n):
        return lfs_generate(lfs, p, n, context_size=ctx, use_cache=True)

    return {
        "ours, no cache": lambda p, n: nb05.generate_without_cache(ours, p, n),
        "ours, KV cache": lambda p, n: nb05.generate(ours, p, n, ctx),
        COMPILED: lambda p, n: nb05.generate(ours, p, n, ctx, decode_step=compiled_step),
        LFS: lfs_run,
        HF: hf_generate,
    }


def check_same_tokens(device, new_tokens=16):
    cfg = {**nb05.LLAMA32_CONFIG_1B, "vocab_size": 512, "context_length": 512, "emb_dim": 128, "n_heads": 8,
           "n_kv_groups": 2, "n_layers": 3, "hidden_dim": 256, "dtype": torch.float32,
           "rope_freq": {**nb05.LLAMA32_CONFIG_1B["rope_freq"], "original_context_length": 32}}
    hf = hf_model(cfg)
    ours = ours_from(hub_params(hf), cfg)
    lfs = lfs_from(ours, cfg)
    ours, lfs, hf = ours.to(device), lfs.to(device), hf.to(device)
    prompt = torch.randint(0, cfg["vocab_size"], (1, 40), generator=torch.Generator().manual_seed(0)).to(device)
    outputs = {name: run(prompt, new_tokens).cpu() for name, run in runners(ours, lfs, hf, cfg, device).items()}
    first = next(iter(outputs.values()))
    differing = [name for name, out in outputs.items() if not torch.equal(out, first)]
    if differing:
        raise SystemExit(f"greedy tokens differ between implementations: {differing}")
    return len(outputs)


# --- measurements --------------------------------------------------------------------------------------

def timed(run, prompt, n, device):
    nb05.sync(device)
    start = time.perf_counter()
    out = run(prompt, n)
    nb05.sync(device)
    return out, time.perf_counter() - start


def warm_up(run, prompt, new_tokens, device):
    """One untimed run, and the memory it takes: compilation and packed weights happen here."""
    with nb05.PeakMemory(device) as memory:  # CUDA: allocator peak; CPU: rise of the RSS
        run(prompt, new_tokens)
    return memory.peak


def decode_rate(run, prompt, new_tokens, device):
    """Decode tokens/s of one run of `new_tokens` tokens, less the best of two runs of one token (the
    prompt and the first token), and the tokens of that run."""
    t1 = min(timed(run, prompt, 1, device)[1] for _ in range(2))
    out, tn = timed(run, prompt, new_tokens, device)
    return (new_tokens - 1) / (tn - t1), t1, out[0, prompt.shape[1]:].tolist()


def read_bandwidth(device, n_bytes=2**31):
    """The fastest rate at which we can stream 2 GiB from memory, in bytes/s: a float32 sum, an int8
    max, and (CPU) oneDNN's packed bfloat16 matrix-vector product, the kernel compiled decoding uses."""
    def best_of(fn, repeats=6):
        return min(timed(lambda *_: fn(), None, None, device)[1] for _ in range(repeats))

    fp32 = torch.ones(n_bytes // 4, dtype=torch.float32, device=device)
    rates = [n_bytes / best_of(fp32.sum)]
    del fp32
    int8 = torch.ones(n_bytes, dtype=torch.int8, device=device)
    rates.append(n_bytes / best_of(int8.amax))
    del int8
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():  # AVX-512 or AVX-NE-CONVERT CPUs
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(n_bytes // 2 // 2048, 2048, dtype=torch.bfloat16), 1)
        x = torch.ones(1, 2048, dtype=torch.bfloat16)
        rates.append(n_bytes / best_of(lambda: torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")))
    return max(rates)


def load_peak_rss(params):
    """Write `params` as model.safetensors, load it in a fresh child process as notebook 05 does, run one
    forward pass (which reads every weight), and return (file size, the child's peak RSS, sampled with
    psutil every 2 ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(params, path, metadata={"format": "pt"})
        code = (f"import sys, torch; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
                "from safetensors.torch import load_file\n"
                "from nbsupport import import_notebook\n"
                "from nbsupport.memory import PeakRSS\n"
                "nb05 = import_notebook('05-standalone-llama32.ipynb')\n"
                "cfg = nb05.LLAMA32_CONFIG_1B\n"
                "with PeakRSS() as memory:\n"
                "    with torch.device('meta'):\n        model = nb05.Llama3Model(cfg)\n"
                f"    nb05.load_weights_into_llama(model, cfg, load_file({str(path)!r}))\n"
                "    with torch.inference_mode():\n        model(torch.tensor([[128000, 791]]))\n"
                "print(memory.peak_rss)\n")
        child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        return path.stat().st_size, int(child.stdout.split()[-1])


def time_in_turns(runs, prompt, new_tokens, device, n_rounds):
    """Warm up every implementation, then time them in turns, so that a slow phase of the machine (its
    speed drifts by tens of percent) hits all of them alike. Each reports its best round and its median;
    also returns every round's (tokens/s, first token s, tokens), and the best read bandwidth measured."""
    memory = {name: warm_up(run, prompt, new_tokens, device) for name, run in runs.items()}
    bandwidths, rounds = [], []
    for i in range(n_rounds):
        bandwidths.append(read_bandwidth(device))
        rounds.append({name: decode_rate(run, prompt, new_tokens, device) for name, run in runs.items()})
        print(f"  round {i + 1}/{n_rounds}: read bandwidth {bandwidths[-1] / 1e9:.1f} GB/s; tokens/s "
              + ", ".join(f"{name} {r[0]:.2f}" for name, r in rounds[-1].items()), flush=True)
    results = {name: {"tokens_per_s": max(r[name][0] for r in rounds),
                      "median_tokens_per_s": statistics.median(r[name][0] for r in rounds),
                      "time_to_first_token_s": min(r[name][1] for r in rounds),
                      "peak_memory_bytes": memory[name],
                      "tokens": rounds[-1][name][2]} for name in runs}
    return results, rounds, max(bandwidths)


def table(results, bandwidth, device):
    memory = "peak memory MiB" if device.type == "cuda" else "RSS rise MiB (warm-up)"
    lines = [f"| implementation | decode tokens/s | median | vs {LFS} | vs {HF} | % of roofline | first token ms | "
             f"{memory} |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        tps = r["tokens_per_s"]
        lines.append(f"| {name} | {tps:.2f} | {r['median_tokens_per_s']:.2f} | {tps / results[LFS]['tokens_per_s']:.2f}× | "
                     f"{tps / results[HF]['tokens_per_s']:.2f}× | {100 * tps * r['weight_bytes'] / bandwidth:.0f}% | "
                     f"{r['time_to_first_token_s'] * 1000:.0f} | {r['peak_memory_bytes'] / 2**20:,.0f} |")
    return "\n".join(lines)


REDUCED = {"emb_dim": 256, "n_heads": 8, "n_kv_groups": 2, "n_layers": 2, "hidden_dim": 512}


# --- main ----------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds; each implementation reports its best")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--skip-load-check", action="store_true", help="skip writing and loading a 2.5 GB file")
    parser.add_argument("--reduced", action="store_true",
                        help="a narrow 2-layer model instead of the full 1B one: checks that the script runs, measures nothing")
    args = parser.parse_args()
    device = torch.device(args.device)

    n = check_same_tokens(device)
    print(f"correctness: {n} implementations produce the same greedy tokens (reduced fp32 config)", flush=True)

    cfg = {**nb05.LLAMA32_CONFIG_1B, **(REDUCED if args.reduced else {})}
    hf = hf_model(cfg)
    params = hub_params(hf)
    ours = ours_from(params, cfg)
    lfs = lfs_from(ours, cfg)
    ours, lfs, hf = ours.to(device), lfs.to(device), hf.to(device)
    weight_bytes = nb05.weight_bytes(ours)  # the tied head counted once
    prompt = torch.randint(0, 128_000, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1)).to(device)

    runs = runners(ours, lfs, hf, cfg, device)
    ours_int8 = nb05.quantize_int8(ours_from(params, cfg)).to(device)
    int8_step = nb05.compile_decode_step(device)
    runs[INT8] = lambda p, n: nb05.generate(ours_int8, p, n, cfg["context_length"], decode_step=int8_step)
    int8_bytes = nb05.weight_bytes(ours_int8)

    results, rounds, bandwidth = time_in_turns(runs, prompt, args.new_tokens, device, args.rounds)
    for name, r in results.items():
        r["weight_bytes"] = int8_bytes if name == INT8 else weight_bytes
    reference_tokens = results["ours, no cache"]["tokens"]
    same = {name: r["tokens"] == reference_tokens for name, r in results.items()}
    sequence = torch.tensor([prompt[0].tolist() + reference_tokens], device=device)
    agree, rel_err = nb05.compare_predictions(ours, ours_int8, sequence)

    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nLlama 3.2 1B architecture{' (reduced)' if args.reduced else ''}, batch 1, greedy, {args.prompt_tokens}-token prompt, "
          f"{args.new_tokens} new tokens, {where}; best of {args.rounds} rounds")
    print(f"weights read per token: {weight_bytes / 1e9:.2f} GB in bf16, {int8_bytes / 1e9:.2f} GB with int8 weights; "
          f"measured read bandwidth {bandwidth / 1e9:.1f} GB/s; roofline {bandwidth / weight_bytes:.1f} tokens/s "
          f"(int8: {bandwidth / int8_bytes:.1f})\n")
    print(table(results, bandwidth, device))
    print(f"\nsame greedy tokens as 'ours, no cache': {same}")
    print(f"int8 weights: same next token as bf16 at {agree:.0%} of {sequence.shape[1]} "
          f"positions; logits relative error {rel_err:.1%}")
    ratios = {peer: [r[COMPILED][0] / r[peer][0] for r in rounds] for peer in (LFS, HF)}
    for peer, target in ((LFS, 2.0), (HF, 1.6)):
        best = results[COMPILED]["tokens_per_s"] / results[peer]["tokens_per_s"]
        print(f"target: compiled ≥ {target}× {peer}: {best:.2f}× (best of each); within a round "
              f"{min(ratios[peer]):.2f}×–{max(ratios[peer]):.2f}×, median {statistics.median(ratios[peer]):.2f}×")

    load = None
    if not (args.skip_load_check or args.reduced):
        del hf, lfs, ours, ours_int8, runs
        file_bytes, peak = load_peak_rss(params)
        load = {"file_bytes": file_bytes, "peak_rss_bytes": peak, "ratio": peak / file_bytes}
        print(f"loading a full-size checkpoint of {file_bytes / 1e9:.2f} GB: peak RSS {peak / 1e9:.2f} GB "
              f"= {peak / file_bytes:.2f}× the file (target ≤ 1.2×)")

    if args.json:
        args.json.write_text(json.dumps({
            "device": device.type, "device_name": where, "reduced": args.reduced, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "weight_bytes": weight_bytes,
            "rounds": args.rounds, "read_bandwidth_bytes_per_s": bandwidth,
            "roofline_tokens_per_s": bandwidth / weight_bytes,
            "results": {k: {m: v for m, v in r.items() if m != "tokens"} for k, r in results.items()},
            "same_tokens": same, "int8_same_next_token": agree, "int8_logits_relative_error": rel_err,
            "compiled_vs_peer_per_round": ratios, "load": load}, indent=2))


if __name__ == "__main__":
    main()
