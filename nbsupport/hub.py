"""Fetch files from the Hugging Face Hub, or build a stand-in in the same file format.

The notebooks load real checkpoints. Where the Hub cannot be reached (no network, HF_HUB_OFFLINE=1,
a gated repository without access) we write a stand-in with the same file names, tensor names and
dtypes to disk instead, so the notebook runs the very same loading code on it.
"""

import importlib
import shutil
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)


def network_errors():
    """The exception types of a connection that failed (no route, proxy, SSL, time-out), for whichever HTTP
    client this huggingface_hub uses: requests before 1.0, httpx in 1.x, httpx2 in 2.x."""
    errors = [ConnectionError, TimeoutError]
    for module, name in [("requests.exceptions", "ConnectionError"), ("requests.exceptions", "Timeout"),
                         ("httpx", "TransportError"), ("httpx2", "TransportError")]:
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except ImportError:
            pass
    return tuple(errors)


# What makes Hub files unavailable for a reason a reader can fix (offline, gated, no network, a proxy or SSL problem)
HUB_UNAVAILABLE = (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, *network_errors())

NETWORK_HINT = ("if you are behind a proxy, check HTTPS_PROXY/HTTP_PROXY; "
                "for SSL errors, the certificates (SSL_CERT_FILE, REQUESTS_CA_BUNDLE)")


def why_unavailable(err, repo_id):
    """One sentence saying why the Hub files are not available and what the reader can do."""
    page = f"https://huggingface.co/{repo_id}"
    if isinstance(err, GatedRepoError):
        return (f"{repo_id} is gated: accept its license at {page} and set HF_TOKEN "
                "to an access token of that account")
    if isinstance(err, RepositoryNotFoundError):
        return f"{repo_id} was not found or needs access: check {page} and HF_TOKEN"
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        if constants.HF_HUB_OFFLINE:
            return ("HF_HUB_OFFLINE=1 and the files are not in the local Hub cache; to download them, unset "
                    "HF_HUB_OFFLINE and restart the kernel")
        return ("the Hub cannot be reached (no network) and the files are not in the local Hub cache; to download "
                "them, connect and run this again")
    if isinstance(err, network_errors()):
        return f"the Hub cannot be reached ({type(err).__name__}: {str(err)[:80]}); {NETWORK_HINT}"
    return f"the Hub answered with an error ({type(err).__name__})"


def standin_dir(repo_id, build_stand_in):
    """Where a stand-in for `repo_id` lives: beside the Hub cache, never inside a real snapshot.

    Builders of different sizes for one repository (`build_stand_in.variant`) get folders of their own.
    """
    return Path(constants.HF_HOME) / "stand-ins" / repo_id / getattr(build_stand_in, "variant", "default")


def fetch(repo_id, filenames, build_stand_in):
    """Return a folder holding `filenames` (glob patterns allowed) of `repo_id`.

    Tries the Hub first. When that fails for a reason a reader can fix (offline, gated, no network, a
    proxy or SSL problem), prints one line saying so, calls `build_stand_in(folder)` to write the
    stand-in files there (once; it is cached per `build_stand_in.variant`) and returns that folder. Any
    other error is raised.
    """
    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(filenames)))
    except HUB_UNAVAILABLE as err:
        return stand_in(repo_id, build_stand_in, why_unavailable(err, repo_id))


def stand_in(repo_id, build_stand_in, reason):
    """The stand-in folder of `repo_id` (built once), after one line saying why it is used."""
    folder = standin_dir(repo_id, build_stand_in)
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        build_stand_in(folder)
        (folder / ".complete").touch()
    print(f"Using an offline stand-in for {repo_id} (same file format): {reason}.")
    return folder



TINYSTORIES = ("stories15M", "stories42M", "stories110M")  # karpathy/tinyllamas: llama2.c checkpoints, Llama 2's vocabulary


def fetch_llama2(choose_model, filenames, build_stand_in):
    """Notebook 03's model choice: (model, checkpoint, tokenizer file). "Llama-2-7b": Meta's folder (`filenames`);
    a TinyStories model ("stories15M", ...): llama2.c's checkpoint from karpathy/tinyllamas and Llama 2's tokenizer
    from hf-internal-testing/llama-tokenizer (both public). Says in one line what it uses and why. Meta's
    repository gated for this token: stories110M instead. Nothing real available (offline, no network): the
    stand-in of Meta's format, as `fetch` does."""
    repo_id, instead = "meta-llama/Llama-2-7b", ""
    if choose_model == "Llama-2-7b":
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=list(filenames)))
            print(f"Using {repo_id}, Meta's weights.")
            return choose_model, folder, folder / "tokenizer.model"
        except GatedRepoError as err:
            choose_model, instead = "stories110M", f", instead of Meta's weights: {why_unavailable(err, repo_id)}"
        except HUB_UNAVAILABLE as err:
            folder = stand_in(repo_id, build_stand_in, why_unavailable(err, repo_id))
            return "Llama-2-7b", folder, folder / "tokenizer.model"
    if choose_model not in TINYSTORIES:
        raise ValueError(f"CHOOSE_MODEL is {choose_model!r}: choose 'Llama-2-7b' or one of {list(TINYSTORIES)}")
    try:
        checkpoint = Path(hf_hub_download("karpathy/tinyllamas", f"{choose_model}.pt"))
        tokenizer = Path(hf_hub_download("hf-internal-testing/llama-tokenizer", "tokenizer.model"))
    except HUB_UNAVAILABLE as err:
        folder = stand_in(repo_id, build_stand_in, why_unavailable(err, "karpathy/tinyllamas"))
        return "Llama-2-7b", folder, folder / "tokenizer.model"
    print(f"Using {choose_model} from karpathy/tinyllamas (llama2.c's checkpoint) and Llama 2's tokenizer{instead}.")
    return choose_model, checkpoint, tokenizer


SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"  # public (Apache-2.0): a Llama 3-style model in Hugging Face's format
SMOLLM2_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json"]


def fetch_llama3(repo_id, filenames, build_stand_in):
    """Notebook 04's folder of weights, saying in one line which it is and why: Meta's repository `repo_id`
    (`filenames`); where it is gated for this token, SmolLM2-135M-Instruct, the same file format with its own
    tokenizer files; where nothing real can be had (offline, no network), the stand-in, as `fetch` does."""
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=list(filenames)))
        print(f"Using {repo_id}, Meta's weights.")
        return folder
    except GatedRepoError as err:
        gated = why_unavailable(err, repo_id)
        try:
            folder = Path(snapshot_download(SMOLLM2, allow_patterns=SMOLLM2_FILES))
        except HUB_UNAVAILABLE as err:
            return stand_in(repo_id, build_stand_in, f"{gated}; {why_unavailable(err, SMOLLM2)}")
        print(f"Using {SMOLLM2} (Apache-2.0), a public model of Llama 3's architecture in Hugging Face's format, "
              f"instead of Meta's weights: {gated}.")
        return folder
    except HUB_UNAVAILABLE as err:
        return stand_in(repo_id, build_stand_in, why_unavailable(err, repo_id))
