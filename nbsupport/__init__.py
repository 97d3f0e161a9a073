"""Infrastructure shared by the notebooks: Hub files with offline stand-ins, offline tokenizer
files, and importing the definitions of an earlier notebook."""

from .hub import fetch
from .notebooks import import_notebook
from .tokenizer_files import llama3_tokenizer_file, seed_tiktoken_gpt2

__all__ = ["fetch", "import_notebook", "llama3_tokenizer_file", "seed_tiktoken_gpt2"]
