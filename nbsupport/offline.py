"""The environment the tests run the notebooks in: offline, with an empty Hub cache.

`HF_HUB_OFFLINE=1` and a fresh `HF_HOME` make every notebook take the stand-in path, whatever a
reader has downloaded, so outputs are the same on every machine. tiktoken's cache is seeded with
GPT-2's files. `python -m nbsupport.offline NOTEBOOK...` executes notebooks in place in this
environment (how the committed outputs are made).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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


def main(notebooks):
    root = Path(tempfile.mkdtemp(prefix="nb-offline-"))
    try:
        enter_offline_env(root)
        for nb in notebooks:
            print(f"executing {nb}", flush=True)
            subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                            "--inplace", "--ExecutePreprocessor.timeout=1200", nb], check=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
