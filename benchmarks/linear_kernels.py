"""How fast each CPU kernel streams bfloat16 weights for one row of activations (batch-1 decoding).

The Llama 3.2 1B MLP's two shapes (2048 -> 8192 -> 2048), eight pairs (0.54 GB of weights, more than any
cache), timed three ways: eager `F.linear`; compiled with inductor's freezing (oneDNN's packed product,
what notebook 05's compiled CPU step runs for bfloat16 weights); and compiled with freezing and max-autotune restricted to inductor's
own C++ GEMM template and ATen (inductor benchmarks both per shape and keeps the faster). Prints GB/s of
weights read. Run it twice to compare oneDNN with and without AMX:

    python benchmarks/linear_kernels.py
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python benchmarks/linear_kernels.py
"""
import os
import time

import torch
import torch._inductor.config as inductor_config


def mlp_pairs(n_pairs=8, emb_dim=2048, hidden_dim=8192):
    torch.manual_seed(0)
    layers = []
    for _ in range(n_pairs):
        layers += [torch.nn.Linear(emb_dim, hidden_dim, bias=False), torch.nn.Linear(hidden_dim, emb_dim, bias=False)]
    return torch.nn.Sequential(*layers).to(torch.bfloat16).eval()


def seconds_per_call(f, x, calls=10):
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(calls):
            f(x)
        return (time.perf_counter() - start) / calls


def main(rounds=5):
    x = torch.randn(1, 1, 2048, dtype=torch.bfloat16)
    ways = {"eager F.linear": None,
            "compiled, freezing (oneDNN packed)": {"freezing": True},
            "compiled, freezing + max-autotune (C++ template, ATen)":
                {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}}
    runs = {}
    for name, options in ways.items():  # one copy of the weights each: a frozen graph owns its model
        model = mlp_pairs()
        if options is None:
            runs[name] = model
            continue
        with inductor_config.patch(options), torch.inference_mode():
            runs[name] = torch.compile(model)
            runs[name](x)  # compiles under these options
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    env = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    print(f"{weight_bytes / 1e9:.2f} GB of bfloat16 weights, one row, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {env or 'no kernel-choosing variables set'}; best of {rounds} rounds in turns")
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):  # in turns, so that the machine's drifts hit every way alike
        for name, f in runs.items():
            best[name] = min(best[name], seconds_per_call(f, x))
    for name, s in best.items():
        print(f"  {name}: {s * 1e3:.1f} ms, {weight_bytes / s / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
