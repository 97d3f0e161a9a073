"""The offline asset layer, the tokenizer files and notebook imports."""

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub.errors import GatedRepoError
from safetensors.torch import load_file, save_file

import nbsupport.hub as hub
from nbsupport import fetch, import_notebook, llama3_tokenizer_file
from nbsupport.notebooks import REPO_ROOT


def write_tiny_checkpoint(folder):
    save_file({"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"n": 2}))


def test_fetch_offline_builds_stand_in_once(capsys):
    calls = []

    def build(folder):
        calls.append(folder)
        write_tiny_checkpoint(folder)

    folder = fetch("someone/tiny-model", ["config.json", "model.safetensors"], build)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "offline stand-in for someone/tiny-model" in out and "HF_HUB_OFFLINE=1" in out
    params = load_file(folder / "model.safetensors")  # the real loader accepts it
    assert params["w"].dtype == torch.bfloat16 and params["w"].shape == (2, 3)
    assert fetch("someone/tiny-model", ["config.json", "model.safetensors"], build) == folder
    assert len(calls) == 1


def test_fetch_gated_repo_names_license_page_and_token(monkeypatch, capsys):
    def gated(*args, **kwargs):
        response = SimpleNamespace(headers={}, request=None)  # what the error reads of an HTTP response
        raise GatedRepoError("401 Client Error: access to model meta-llama/X is restricted", response=response)

    monkeypatch.setattr(hub, "snapshot_download", gated)
    fetch("meta-llama/Gated-Model", ["model.safetensors"], write_tiny_checkpoint)
    out = capsys.readouterr().out
    assert "https://huggingface.co/meta-llama/Gated-Model" in out and "HF_TOKEN" in out


def test_fetch_raises_other_errors(monkeypatch):
    def broken(*args, **kwargs):
        raise PermissionError("cache not writable")

    monkeypatch.setattr(hub, "snapshot_download", broken)
    with pytest.raises(PermissionError):
        fetch("someone/other", ["x"], write_tiny_checkpoint)


def test_fetch_failed_stand_in_is_rebuilt(monkeypatch):
    def failing(folder):
        (folder / "half-written").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fetch("someone/flaky", ["model.safetensors"], failing)
    folder = fetch("someone/flaky", ["model.safetensors"], write_tiny_checkpoint)
    assert not (folder / "half-written").exists()
    assert (folder / "model.safetensors").exists()


def test_tiktoken_gpt2_works_without_network(tmp_path):
    code = textwrap.dedent("""
        import socket
        def no_network(*args, **kwargs):
            raise OSError("network disabled in this test")
        socket.socket.connect = no_network
        socket.create_connection = no_network
        from nbsupport import seed_tiktoken_gpt2
        seed_tiktoken_gpt2()
        import tiktoken
        enc = tiktoken.get_encoding("gpt2")
        print(enc.encode("Hello, world <|endoftext|>", allowed_special="all"))
    """)
    env = {"PATH": "/usr/bin:/bin", "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[15496, 11, 995, 220, 50256]"


def test_llama3_tokenizer_file_is_shipped():
    path = llama3_tokenizer_file()
    assert path.name == "tokenizer.model" and path.stat().st_size > 2_000_000


def test_import_notebook_keeps_definitions_only(nb01):
    assert nb01 is import_notebook("01-gpt-from-scratch.ipynb")
    for name in ("GPTModel", "generate", "GPT_CONFIG_124M", "GPT_CONFIG_SMALL", "train_model_simple"):
        assert hasattr(nb01, name)
    for name in ("model", "train_losses", "tokenizer", "text"):  # made by experiment cells, not kept
        assert not hasattr(nb01, name)


def test_import_notebook_unknown_name():
    with pytest.raises(FileNotFoundError, match="no notebook"):
        import_notebook("99-missing.ipynb")


def test_tests_never_touch_the_readers_hub_cache():
    import os

    from huggingface_hub import constants
    assert constants.HF_HUB_OFFLINE
    assert constants.HF_HOME == os.environ["HF_HOME"] and "pytest-offline-" in constants.HF_HOME


def test_stand_ins_of_different_sizes_do_not_share_a_folder():
    from nbsupport.standins import gpt2_checkpoint
    small, smaller = gpt2_checkpoint(32, 1, 2, vocab_size=60, context_length=16), gpt2_checkpoint(16, 1, 2, 60, 16)
    a = fetch("someone/sized", ["model.safetensors"], small)
    b = fetch("someone/sized", ["model.safetensors"], smaller)
    assert a != b
    assert load_file(a / "model.safetensors")["wte.weight"].shape == (60, 32)
    assert load_file(b / "model.safetensors")["wte.weight"].shape == (60, 16)


@pytest.mark.parametrize("notebook", sorted(p.name for p in REPO_ROOT.glob("[0-9][0-9]-*.ipynb")))
def test_every_notebooks_definitions_import(notebook):
    module = import_notebook(notebook)
    assert any(isinstance(v, type) for v in vars(module).values())  # it defines classes


def test_notebook_kernels_see_no_gpu_but_the_test_process_keeps_it():
    """Strict nbval compares the CPU path's outputs, so the kernels that run the notebooks must take the CPU
    path on a GPU machine too (conftest.py entered nbsupport.offline's environment)."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")  # the name every notebook's metadata asks for
    try:
        out = []
        kc.execute_interactive("import os, torch; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')), "
                               "torch.cuda.is_available())",
                               output_hook=lambda msg: out.append(msg["content"].get("text", "")), timeout=120)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert "".join(out).split() == ["''", "False"]
    assert os.environ.get("CUDA_VISIBLE_DEVICES") != ""  # the pytest process is not hidden from its GPU


@pytest.fixture
def refusing_proxy():
    """An HTTP proxy on 127.0.0.1 that answers every request, CONNECT included, with 403 Forbidden."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed at the end of the test
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("code", [
    "from nbsupport import fetch\n"
    "from nbsupport.standins import gpt2_checkpoint\n"
    "folder = fetch('openai-community/gpt2', ['config.json', 'model.safetensors'], gpt2_checkpoint(16, 1, 2, 60, 16))\n"
    "print(sorted(p.name for p in folder.iterdir()))",
], ids=["nbsupport.fetch"])
def test_a_broken_proxy_gives_the_one_line_and_the_stand_in(refusing_proxy, tmp_path, code):
    """Online (no HF_HUB_OFFLINE) behind a proxy that refuses: huggingface_hub raises the HTTP client's
    proxy error instead of falling back to the cache; the reader gets the stand-in and one line that says
    why and what to check, not a traceback."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "NO_PROXY", "no_proxy")}
    env |= {"HTTPS_PROXY": refusing_proxy, "HTTP_PROXY": refusing_proxy, "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_ETAG_TIMEOUT": "20", "HF_HUB_DOWNLOAD_TIMEOUT": "20"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and "stand-in" in lines[0] and "HTTPS_PROXY" in lines[0], result.stdout
    assert "config.json" in lines[1]
