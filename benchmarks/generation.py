"""Batch-1 greedy decoding speed of the Llama 3.2 1B architecture, ours against other implementations.

    python benchmarks/generation.py [--device cpu|cuda] [--prompt-tokens 16] [--new-tokens 32] [--json PATH]

Everything is measured in this one process, on the same random bfloat16 weights and the same prompt:

- notebook 05's model: no cache, KV cache, KV cache + torch.compile of the decode step;
- the `llms-from-scratch` package's KV-cache Llama 3 (`pip install --no-deps llms-from-scratch`);
- Hugging Face `transformers.LlamaForCausalLM.generate`;
- the memory-bandwidth roofline: measured read bandwidth / bytes of weights read per token.

Decode speed excludes the prompt: for every implementation, t(n) is the time to generate n tokens,
and decode tokens/s = (n - 1) / (t(n) - t(1)), after a warm-up run. Before timing, a reduced float32
config with the same weights copied into every implementation must give identical greedy tokens, so
the comparison is between models that compute the same thing. Finally a full-size checkpoint is
written to disk and loaded the way notebook 05 does, in a child process, whose peak RSS is compared
with the file size.
"""

import argparse
import json
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
from nbsupport.memory import PeakRSS  # noqa: E402

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
        rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=cfg["rope_base"],
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
        "ours, KV cache + compile": lambda p, n: nb05.generate(ours, p, n, ctx, decode_step=compiled_step),
        "llms-from-scratch KV cache": lfs_run,
        "transformers generate": hf_generate,
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

class PeakMemory:
    """CUDA: allocator peak (weights included). CPU: rise of the process's RSS (nbsupport.memory)."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            self.rss = PeakRSS().__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.rss.__exit__(*exc)
            self.peak = self.rss.peak


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(run, prompt, n, device):
    sync(device)
    start = time.perf_counter()
    out = run(prompt, n)
    sync(device)
    return out, time.perf_counter() - start


def measure(run, prompt, new_tokens, device, repeats=3):
    """Best of `repeats` runs of 1 and of `new_tokens` tokens, after a warm-up run."""
    with PeakMemory(device) as memory:  # what the mode adds, compilation and packed weights included
        run(prompt, new_tokens)  # warm-up
        t1 = min(timed(run, prompt, 1, device)[1] for _ in range(repeats))
        runs = [timed(run, prompt, new_tokens, device) for _ in range(repeats)]
    out, tn = min(runs, key=lambda r: r[1])
    return {"tokens_per_s": (new_tokens - 1) / (tn - t1), "time_to_first_token_s": t1,
            "peak_memory_bytes": memory.peak, "tokens": out[0, prompt.shape[1]:].tolist()}


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
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(n_bytes // 2 // 2048, 2048, dtype=torch.bfloat16), 1)
        x = torch.ones(1, 2048, dtype=torch.bfloat16)
        rates.append(n_bytes / best_of(lambda: torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")))
    return max(rates)


def load_peak_rss(params):
    """Write `params` as model.safetensors, load it in a fresh child process as notebook 05 does, run one
    forward pass (which reads every weight), and return (file size, the child's peak RSS)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(params, path, metadata={"format": "pt"})
        code = (f"import sys, torch; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
                "from safetensors.torch import load_file\n"
                "from nbsupport import import_notebook\n"
                "nb05 = import_notebook('05-standalone-llama32.ipynb')\n"
                "cfg = nb05.LLAMA32_CONFIG_1B\n"
                "with torch.device('meta'):\n    model = nb05.Llama3Model(cfg)\n"
                f"nb05.load_weights_into_llama(model, cfg, load_file({str(path)!r}))\n"
                "with torch.inference_mode():\n    model(torch.tensor([[128000, 791]]))\n"
                # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still counts the parent's memory
                "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
                "print(int(hwm.split()[1]) * 1024)\n")
        child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        return path.stat().st_size, int(child.stdout.split()[-1])


# --- main ----------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--skip-load-check", action="store_true", help="skip writing and loading a 2.5 GB file")
    args = parser.parse_args()
    device = torch.device(args.device)

    n = check_same_tokens(device)
    print(f"correctness: {n} implementations produce the same greedy tokens (reduced fp32 config)", flush=True)

    cfg = nb05.LLAMA32_CONFIG_1B
    hf = hf_model(cfg)
    params = hub_params(hf)
    ours = ours_from(params, cfg)
    lfs = lfs_from(ours, cfg)
    ours, lfs, hf = ours.to(device), lfs.to(device), hf.to(device)
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())  # tied head counted once
    bandwidth = read_bandwidth(device)
    roofline = bandwidth / weight_bytes
    prompt = torch.randint(0, 128_000, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1)).to(device)

    results = {}
    for name, run in runners(ours, lfs, hf, cfg, device).items():
        results[name] = measure(run, prompt, args.new_tokens, device)
        print(f"  measured {name}: {results[name]['tokens_per_s']:.2f} tokens/s", flush=True)
    reference_tokens = results["ours, no cache"]["tokens"]
    same = {name: r["tokens"] == reference_tokens for name, r in results.items()}

    best = results["ours, KV cache + compile"]["tokens_per_s"]
    lfs_tps = results["llms-from-scratch KV cache"]["tokens_per_s"]
    hf_tps = results["transformers generate"]["tokens_per_s"]
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nLlama 3.2 1B architecture, bf16, batch 1, greedy, {args.prompt_tokens}-token prompt, "
          f"{args.new_tokens} new tokens, {where}")
    print(f"weights read per token: {weight_bytes / 1e9:.2f} GB; measured read bandwidth {bandwidth / 1e9:.1f} GB/s; "
          f"roofline {roofline:.1f} tokens/s\n")
    memory = "peak memory MiB" if device.type == "cuda" else "RSS rise MiB (incl. warm-up)"
    print(f"| implementation | decode tokens/s | vs llms-from-scratch | vs transformers | % of roofline | "
          f"first token ms | {memory} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        tps = r["tokens_per_s"]
        print(f"| {name} | {tps:.2f} | {tps / lfs_tps:.2f}× | {tps / hf_tps:.2f}× | {100 * tps / roofline:.0f}% | "
              f"{r['time_to_first_token_s'] * 1000:.0f} | {r['peak_memory_bytes'] / 2**20:,.0f} |")
    print(f"\nsame greedy tokens as 'ours, no cache': {same}")
    print(f"targets: compiled ≥ 2.0× llms-from-scratch: {best / lfs_tps:.2f}×; ≥ 1.6× transformers: {best / hf_tps:.2f}×")

    load = None
    if not args.skip_load_check:
        del hf, lfs, ours
        file_bytes, peak = load_peak_rss(params)
        load = {"file_bytes": file_bytes, "peak_rss_bytes": peak, "ratio": peak / file_bytes}
        print(f"loading a full-size checkpoint of {file_bytes / 1e9:.2f} GB: peak RSS {peak / 1e9:.2f} GB "
              f"= {peak / file_bytes:.2f}× the file (target ≤ 1.2×)")

    if args.json:
        args.json.write_text(json.dumps({
            "device": device.type, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "weight_bytes": weight_bytes,
            "read_bandwidth_bytes_per_s": bandwidth, "roofline_tokens_per_s": roofline,
            "results": {k: {m: v for m, v in r.items() if m != "tokens"} for k, r in results.items()},
            "same_tokens": same, "load": load}, indent=2))


if __name__ == "__main__":
    main()
