"""Infrastructure shared by the notebooks: Hub files with offline stand-ins, offline tokenizer
files, and importing the definitions of an earlier notebook.

`fetch`, `fetch_llama2` and `fetch_llama3` are imported on first use: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once,
when it is imported, and the test setup (nbsupport.offline) must set them before that happens.
"""

from .notebooks import import_notebook
from .tokenizer_files import llama3_tokenizer_file, seed_tiktoken_gpt2

__all__ = ["fetch", "fetch_llama2", "fetch_llama3", "import_notebook", "llama3_tokenizer_file", "seed_tiktoken_gpt2"]


def __getattr__(name):
    if name in ("fetch", "fetch_llama2", "fetch_llama3"):
        from . import hub
        return getattr(hub, name)
    raise AttributeError(f"module 'nbsupport' has no attribute {name!r}")
