"""Infrastructure shared by the notebooks: Hub files with offline stand-ins, offline tokenizer
files, and importing the definitions of an earlier notebook.

`fetch`, `fetch_llama2` and `fetch_llama3` are imported on first use: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once,
when it is imported, and the test setup (nbsupport.offline) must set them before that happens.
"""

import math

from .notebooks import import_notebook
from .tokenizer_files import llama3_tokenizer_file, seed_tiktoken_gpt2

__all__ = ["fetch", "fetch_llama2", "fetch_llama3", "import_notebook", "llama3_tokenizer_file", "power_of_ten_above",
           "seed_tiktoken_gpt2"]


def power_of_ten_above(x):
    """The smallest power of ten above |x| (at least 1e-12), as text like "1e-6": a measured difference printed so
    that it reads the same on every machine (unless it lies close to a power of ten)."""
    return f"1e{math.floor(math.log10(max(abs(x), 1e-12))) + 1}"


def __getattr__(name):
    if name in ("fetch", "fetch_llama2", "fetch_llama3"):
        from . import hub
        return getattr(hub, name)
    raise AttributeError(f"module 'nbsupport' has no attribute {name!r}")
