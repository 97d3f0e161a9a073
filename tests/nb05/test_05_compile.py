"""Notebook 05, section 4: the compiled decode step gives the eager step's tokens, runs packed linear kernels on
a CPU, falls back to eager decoding with one line where it cannot compile (or has compiled too often), reuses the
model's caches, and says after a run what it did (from torch.compile's counters)."""

import platform
import re

import pytest
import torch

NOTEBOOK = "05-standalone-llama32.ipynb"


def test_compiled_greedy_decoding_equals_eager_and_uncached(nb05, small):
    model, _, cfg = small
    prompt = torch.tensor([[5, 77, 123, 9, 200]])
    without = nb05.generate_without_cache(model, prompt, 64)
    compiled = nb05.compile_decode_step(torch.device("cpu"))
    assert torch.equal(nb05.generate(model, prompt, 64, cfg["context_length"], decode_step=compiled), without)
    assert torch.equal(nb05.generate(model, prompt, 64, cfg["context_length"], decode_step=compiled), without)  # again
    assert not nb05.COMPILE["failed"]


def test_compiled_step_reuses_the_caches_without_compiling_again(nb05, small):
    """Section 5's modes take turns (no cache, cache, cache + compile): the eager runs and the cacheless run
    leave the caches the compiled step was specialised to where they are, a shorter run keeps them too, so the
    compiled step does not compile again; a longer run gets new ones."""
    from torch._dynamo.utils import counters

    model, _, _ = small
    prompt = torch.tensor([[5, 77, 123]])
    step = nb05.compile_decode_step(torch.device("cpu"))
    expected = nb05.generate(model, prompt, 8)
    caches = [b.att.kv_cache for b in model.trf_blocks]
    assert torch.equal(nb05.generate(model, prompt, 8, decode_step=step), expected)
    compiled_graphs = counters["stats"]["unique_graphs"]
    assert torch.equal(nb05.generate_without_cache(model, prompt, 8), expected)
    assert torch.equal(nb05.generate(model, prompt, 8), expected)
    assert torch.equal(nb05.generate(model, prompt, 4, decode_step=step), expected[:, :7])
    assert torch.equal(nb05.generate(model, prompt, 8, decode_step=step), expected)
    assert all(b.att.kv_cache is c for b, c in zip(model.trf_blocks, caches))
    assert counters["stats"]["unique_graphs"] == compiled_graphs
    longer = caches[0].k.shape[2] + 1  # positions that do not fit
    nb05.generate(model, prompt, longer - prompt.shape[1])
    assert model.trf_blocks[0].att.kv_cache is not caches[0] and model.trf_blocks[0].att.kv_cache.k.shape[2] == longer


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


def test_without_a_cpp_compiler_the_step_says_why_and_stays_eager(run_python, tmp_path):
    """A machine without a C++ compiler (CXX names a missing program; an empty inductor cache, so that no
    kernel built earlier is reused): the compiled step prints one line and gives the eager step's tokens."""
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
assert nb05.COMPILE["failed"]
print("same tokens")
"""
    run = run_python(script, {"CXX": str(tmp_path / "no-such-compiler"),
                              "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "same tokens"
    (line,) = [s for s in lines if s.startswith("torch.compile failed")]  # once, not per call
    assert "InvalidCxxCompiler" in line and "install a C++ compiler" in line and line.count("decoding stays eager") == 1


def test_a_gpu_without_triton_gets_the_one_line_and_the_eager_step(nb05, small, monkeypatch, capsys):
    """The CUDA branch's fallback, on the CPU: inductor raises TritonMissing itself (not wrapped in
    BackendCompilerFailed) when it compiles the step for a GPU without Triton; here torch.compile is
    replaced by one whose compiled function raises exactly that."""
    model, _, cfg = small
    modes = []

    def compile_without_triton(fn, **kwargs):
        modes.append(kwargs.get("mode"))

        def compiled(*args, **kw):
            raise torch._inductor.exc.TritonMissing(None)
        return compiled

    monkeypatch.setattr(torch, "compile", compile_without_triton)
    monkeypatch.setitem(nb05.COMPILE, "failed", False)
    step = nb05.compile_decode_step(torch.device("cuda"))  # the CUDA branch; the model stays on the CPU
    assert modes == ["reduce-overhead"]  # CUDA graphs
    prompt = torch.tensor([[5, 77, 123]])
    for _ in range(2):
        assert torch.equal(nb05.generate(model, prompt, 8, decode_step=step), nb05.generate(model, prompt, 8))
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("torch.compile failed (TritonMissing: Cannot find a working triton")
    assert "pip install triton" in line
    assert nb05.COMPILE["failed"]


def test_the_recompile_limit_gives_one_line_and_the_eager_step(nb05, small, monkeypatch, capsys):
    """dynamo raises FailOnRecompileLimitHit with fullgraph=True when it has compiled a function recompile_limit
    times (guard=True caches, or a frozen step over many models): one line that says so, then eager steps."""
    model, _, _ = small

    def compile_at_its_limit(fn, **kwargs):
        def compiled(*args, **kw):
            raise torch._dynamo.exc.FailOnRecompileLimitHit("recompile_limit reached with fullgraph=True")
        return compiled

    monkeypatch.setattr(torch, "compile", compile_at_its_limit)
    monkeypatch.setitem(nb05.COMPILE, "failed", False)
    step = nb05.compile_decode_step(torch.device("cpu"))
    prompt = torch.tensor([[5, 77, 123]])
    for _ in range(2):
        assert torch.equal(nb05.generate(model, prompt, 8, decode_step=step), nb05.generate(model, prompt, 8))
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("torch.compile failed (FailOnRecompileLimitHit: recompile_limit reached")
    assert "decoding stays eager" in line and "torch._dynamo.reset()" in line
    assert nb05.compile_report(torch.device("cpu"), (0, 0, 0)).startswith("the step ran eagerly")


def test_the_report_counts_the_graphs_a_compiled_run_made(nb05, varied):
    """compile_counts/compile_report read dynamo's counters: a new model's first compiled run makes one graph,
    the next run none; the CUDA columns appear only for a CUDA device."""
    model, cfg = varied
    cpu = torch.device("cpu")
    torch._dynamo.reset()
    step = nb05.compile_decode_step(cpu)
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    before = nb05.compile_counts(cpu)
    nb05.generate(model, prompt, 6, decode_step=step)
    assert nb05.compile_report(cpu, before) == "the step ran compiled: 1 new graph(s)"
    before = nb05.compile_counts(cpu)
    nb05.generate(model, prompt, 6, decode_step=step)
    assert nb05.compile_report(cpu, before) == "the step ran compiled: 0 new graph(s)"
    assert not nb05.COMPILE["failed"]
    torch._dynamo.reset()


def test_the_cuda_report_counts_every_recorded_cuda_graph(nb05, monkeypatch):
    """On CUDA, the recorded graphs are the nodes of inductor's CUDA graph trees (each root and its descendants;
    a tree manager is asked for, not created); skips come from inductor's counter. Here with a tree manager made up
    of two roots, one with three descendants."""
    from torch._dynamo.utils import counters

    class Node:
        def __init__(self, descendants):
            self.descendants = descendants

        def num_descendants(self):
            return self.descendants

    class Manager:
        def get_roots(self):
            yield from [Node(0), Node(3)]

    asked = []
    monkeypatch.setattr(nb05.cudagraph_trees, "get_manager",
                        lambda index, create_if_none_exists=True: asked.append((index, create_if_none_exists)) or Manager())
    cuda = torch.device("cuda", 0)
    before = nb05.compile_counts(cuda)
    assert before[1] == 5 and asked == [(0, False)]
    counters["inductor"]["cudagraph_skips"] += 1
    monkeypatch.setitem(nb05.COMPILE, "failed", False)
    assert nb05.compile_report(cuda, (before[0], 3, before[2])) == (
        "the step ran compiled: 0 new graph(s), 2 CUDA graph(s) recorded, 1 skipped")
    counters["inductor"]["cudagraph_skips"] -= 1
    monkeypatch.setattr(nb05.cudagraph_trees, "get_manager", lambda index, create_if_none_exists=True: None)
    assert nb05.compile_counts(cuda)[1] == 0  # no CUDA graph yet
