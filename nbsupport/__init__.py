"""Infrastructure shared by the notebooks: Hub files with offline stand-ins, offline tokenizer
files, and importing the definitions of an earlier notebook.

`fetch` is imported on first use: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, when it is
imported, and the test setup (nbsupport.offline) must set them before that happens.
"""

from .notebooks import import_notebook
from .tokenizer_files import llama3_tokenizer_file, seed_tiktoken_gpt2

__all__ = ["fetch", "import_notebook", "llama3_tokenizer_file", "seed_tiktoken_gpt2"]


def __getattr__(name):
    if name == "fetch":
        from .hub import fetch
        return fetch
    raise AttributeError(f"module 'nbsupport' has no attribute {name!r}")
