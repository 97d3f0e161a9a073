"""The environment the tests run the notebooks in: offline, with an empty Hub cache, on the CPU.

`HF_HUB_OFFLINE=1` and a fresh `HF_HOME` make every notebook take the stand-in path, whatever a
reader has downloaded, so outputs are the same on every machine. tiktoken's cache is seeded with
GPT-2's files. The notebooks' kernels see no GPU: a Jupyter kernel spec named `python3` (the name the
notebooks ask for), put first on `JUPYTER_PATH`, starts this Python with `CUDA_VISIBLE_DEVICES=""`.
The process that runs the tests keeps its GPU, for the tests in `tests/gpu/`.
`python -m nbsupport.offline NOTEBOOK...` executes notebooks in place in this environment (how the
committed outputs are made).
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from .tokenizer_files import seed_tiktoken_gpt2


def enter_offline_env(root):
    """Point the Hub, tiktoken and our stand-ins at folders under `root`; set HF_HUB_OFFLINE=1."""
    root = Path(root)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(root / "hf-home")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(root / "tiktoken")
    os.environ.pop("HF_HUB_CACHE", None)
    os.environ.pop("HF_TOKEN", None)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seed_tiktoken_gpt2()
    write_cpu_kernel_spec(root / "jupyter")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(root / "jupyter"), os.environ.get("JUPYTER_PATH")]))


def write_cpu_kernel_spec(jupyter_dir):
    """A kernel spec `python3` for this Python whose kernels see no CUDA (or ROCm) device."""
    folder = Path(jupyter_dir) / "kernels" / "python3"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3", "language": "python",
            "env": {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": ""}}
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))


def main(notebooks):
    root = Path(tempfile.mkdtemp(prefix="nb-offline-"))
    try:
        enter_offline_env(root)
        for nb in notebooks:  # (nbclient itself: nbconvert 7.17 numbers a Colab set-up cell's successor 1 again)
            print(f"executing {nb}", flush=True)
            notebook = nbformat.read(nb, as_version=4)
            NotebookClient(notebook, timeout=1200, kernel_name="python3",
                           resources={"metadata": {"path": str(Path(nb).resolve().parent)}}).execute()
            nbformat.write(notebook, nb)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
