"""Every model choice a reader can make, on the online path: the notebooks run against replicas of the
real Hub repositories (tests/replicas.py) placed in a temporary Hub cache, as if the reader had
downloaded them. Each run must raise nothing, fall back to no stand-in (notebook 05: to no other source of
weights), and load the replica's weights (the printed parameter count is the replica's)."""

import math
import os
import re

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from safetensors import safe_open

import replicas
from nbsupport.notebooks import REPO_ROOT
from nbsupport.standins import train_llama2_style_tokenizer


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """A Hub cache holding the replica of every repository the notebooks can load."""
    home = tmp_path_factory.mktemp("reader-hf-home")
    tokenizer = home / "llama2-tokenizer.model"
    train_llama2_style_tokenizer(tokenizer)
    for repo_id in replicas.ALL_REPOS:
        replicas.write_replica(home / "hub", repo_id, llama2_tokenizer=tokenizer)
    return home


def run_notebook(name, hf_home, insert_after=None, code=None, stop_after=None, also=(), endpoint=None):
    """Execute notebook `name` from the repository root with the Hub cache `hf_home` (offline; online against
    the Hub at `endpoint` where given), with the cell `code` inserted after the cell containing `insert_after`,
    up to the cell containing `stop_after`, then the later cells containing the texts `also`. Returns everything
    the cells printed."""
    nb = nbformat.read(REPO_ROOT / name, as_version=4)
    index = lambda text: next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and text in c.source)
    if stop_after is not None:
        nb.cells = nb.cells[:index(stop_after) + 1] + [nb.cells[index(text)] for text in also]
    if code is not None:
        nb.cells.insert(index(insert_after) + 1, nbformat.v4.new_code_cell(code))
    env = ({**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"} if endpoint is None
           else replicas.online_env(hf_home, endpoint))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT)}}).execute(env=env)
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)


def replica_numel(hf_home, repo_id, suffix, skip=()):
    """Number of weights in the replica's files ending in `suffix`, less the tensors named `*skip`."""
    n = 0
    for path in replicas.snapshot_folder(hf_home / "hub", repo_id).glob(f"*{suffix}"):
        if suffix == ".safetensors":
            with safe_open(path, "pt") as f:
                n += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if not k.endswith(skip))
        else:
            n += sum(t.numel() for k, t in torch.load(path, weights_only=True).items() if not k.endswith(skip))
    return n


@pytest.mark.parametrize("choice, repo_id", [
    ("gpt2-small (124M)", "openai-community/gpt2"),
    ("gpt2-medium (355M)", "openai-community/gpt2-medium"),
    ("gpt2-large (774M)", "openai-community/gpt2-large"),
    ("gpt2-xl (1558M)", "openai-community/gpt2-xl"),
])
def test_02_loads_every_gpt2_size(hf_home, choice, repo_id):
    s = replicas.GPT2_SHRUNK
    shrink = (f"MODEL_CONFIGS = {{name: {{**c, 'emb_dim': {s['n_embd']}, 'n_layers': {s['n_layer']}, "
              f"'n_heads': {s['n_head']}}} for name, c in MODEL_CONFIGS.items()}}\nCHOOSE_MODEL = {choice!r}")
    # every size is downloaded and loaded; the smallest also runs to the end (generation, transformers)
    whole = choice.startswith("gpt2-small")
    out = run_notebook("02-load-gpt2-weights.ipynb", hf_home, insert_after="CHOOSE_MODEL =", code=shrink,
                       stop_after=None if whole else 'print(f"unique parameters:')
    assert "stand-in" not in out
    assert repo_id + "\n" in out.split("our config")[0]  # the table of sizes names the repository
    assert f"unique parameters: {replica_numel(hf_home, repo_id, '.safetensors', skip=('.attn.bias',)):,};" in out
    assert ("greedy tokens identical" in out) == whole


def test_03_loads_llama2_and_its_chat_model(hf_home):
    out = run_notebook("03-gpt-to-llama2.ipynb", hf_home, stop_after='print(f"chat model: loaded')
    assert "stand-in" not in out
    n = replica_numel(hf_home, "meta-llama/Llama-2-7b", ".pth", skip=("rope.freqs",))
    assert f"loaded {n:,} parameters" in out
    n_chat = replica_numel(hf_home, "meta-llama/Llama-2-7b-chat", ".pth", skip=("rope.freqs",))
    assert f"chat model: loaded {n_chat:,} parameters" in out


@pytest.mark.parametrize("choice", ["stories15M", "stories42M", "stories110M"])
def test_03_runs_a_tinystories_model_top_to_bottom(hf_home, choice):
    """CHOOSE_MODEL names a TinyStories model: llama2.c's checkpoint (karpathy/tinyllamas) and Llama 2's tokenizer
    (hf-internal-testing/llama-tokenizer) go through the same loader, Meta's code agrees, and the chat cells say
    there is no chat model; no stand-in anywhere."""
    out = run_notebook("03-gpt-to-llama2.ipynb", hf_home, insert_after="CHOOSE_MODEL = ", code=f"CHOOSE_MODEL = {choice!r}")
    assert f"Using {choice} from karpathy/tinyllamas (llama2.c's checkpoint) and Llama 2's tokenizer.\n" in out
    assert "stand-in" not in out and "Using meta-llama" not in out
    n = sum(t.numel() for t in torch.load(replicas.snapshot_folder(hf_home / "hub", replicas.TINYLLAMAS) / f"{choice}.pt",
                                          weights_only=True)["model"].values())  # (head and embedding: both names)
    assert f"loaded {n:,} parameters in torch.float32" in out
    assert re.search(r"layers, \d+ tokens: max \|logits - Meta's\| < 1e-\d; without the permutation about 1e-?\d", out), out
    assert "rope.freqs" not in out
    assert f"{choice} has no chat model" in out


def test_04_loads_llama32_1b_and_instruct(hf_home):
    out = run_notebook("04-llama2-to-llama3.ipynb", hf_home, stop_after='print("What do llamas eat?\\n->", repr(answer))')
    assert "stand-in" not in out
    assert f"{replica_numel(hf_home, 'meta-llama/Llama-3.2-1B', '.safetensors'):,} unique parameters" in out
    assert "What do llamas eat?\n->" in out


def test_04_without_metas_approval_runs_on_smollm2_safetensors(gated_hub, tmp_path):
    """Online, against a Hub that refuses meta-llama as gated, with SmolLM2-135M-Instruct's repository in the cache:
    04 says why in one line and runs sections 5-6 on SmolLM2's safetensors with its own tokenizer and chat template
    (the real weights of the packaged GGUF file), no stand-in; section 7 finds the GGUF file's weights to be
    these weights rounded."""
    endpoint, seen = gated_hub
    replicas.write_replica(tmp_path / "hub", replicas.SMOLLM2)
    out = run_notebook("04-llama2-to-llama3.ipynb", tmp_path, endpoint=endpoint)
    assert "stand-in" not in out
    why = ("is gated: accept its license at https://huggingface.co/{0} and set HF_TOKEN to an access token of that "
           "account.\n")
    for repo_id in ("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B-Instruct"):
        assert (f"Using HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), a public model of Llama 3's architecture in "
                f"Hugging Face's format, instead of Meta's weights: {repo_id} " + why.format(repo_id)) in out
    assert any("/meta-llama/Llama-3.2-1B" in path for _, path in seen), seen  # the Hub was asked
    assert f"{replica_numel(tmp_path, replicas.SMOLLM2, '.safetensors'):,} unique parameters" in out
    assert re.search(r"2 layers, \d+-token prompt: max \|logits ours - transformers\| < 1e-\d\n", out), out
    answer = out.split("What do llamas eat?\n->")[1].splitlines()[0]
    assert "<|im" not in answer and len(answer.split()) >= 5, answer  # words of SmolLM2's chat answer, no markup
    share = re.search(r"([\d.]+)% of the GGUF's weights = the safetensors weights rounded as the file says; max "
                      r"\|logits GGUF - safetensors\| = ([\d.]+) \(the rounding\)", out)
    assert share and float(share[1]) > 99 and float(share[2]) > 0, out


NB05_REFERENCE_CHECK = "def transformers_reference("  # Appendix C's check against transformers


@pytest.mark.parametrize("model", ["1B", "3B"])
@pytest.mark.parametrize("instruct", [False, True])
def test_05_loads_llama32_1b_and_3b_base_and_instruct(hf_home, model, instruct):
    """Sections 1-3 and Appendix C's check against transformers, on Meta's repository."""
    repo_id = f"meta-llama/Llama-3.2-{model}" + ("-Instruct" if instruct else "")
    out = run_notebook("05-standalone-llama32.ipynb", hf_home, insert_after='MODEL = "1B"',
                       code=f"MODEL, INSTRUCT = {model!r}, {instruct}", stop_after="greedy tokens with and without the cache",
                       also=[NB05_REFERENCE_CHECK])
    assert f"Using {repo_id}, Meta's weights (safetensors).\n" in out
    assert "SmolLM2" not in out and "bartowski" not in out
    assert f"Llama 3.2 {model}: {replica_numel(hf_home, repo_id, '.safetensors'):,} parameters" in out
    assert re.search(r"(\d+) of \1 blocks, \d+-token prompt: max \|logits ours - transformers\| = \S+; the same 32 "
                     r"greedy tokens as transformers' generate", out), out
    assert "the same 32 greedy tokens with and without the cache" in out


def test_replicas_have_the_real_layout(hf_home):
    hub = hf_home / "hub"
    names = lambda repo: sorted(str(p.relative_to(replicas.snapshot_folder(hub, repo)))
                                for p in replicas.snapshot_folder(hub, repo).rglob("*") if p.is_file())
    assert (hub / "models--meta-llama--Llama-3.2-3B" / "refs" / "main").read_text() == replicas.COMMIT
    assert names("meta-llama/Llama-3.2-3B") == [
        "LICENSE.txt", "README.md", "USE_POLICY.md", "config.json", "generation_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        "original/consolidated.00.pth", "original/params.json", "original/tokenizer.model",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert "model.safetensors" in names("meta-llama/Llama-3.2-1B")
    assert names("meta-llama/Llama-2-7b") == ["checklist.chk", "consolidated.00.pth", "params.json",
                                              "tokenizer.model", "tokenizer_checklist.chk"]
    with safe_open(replicas.snapshot_folder(hub, "meta-llama/Llama-3.2-1B") / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys() and f.get_tensor("model.norm.weight").dtype == torch.bfloat16
    with safe_open(replicas.snapshot_folder(hub, "openai-community/gpt2") / "model.safetensors", "pt") as f:
        assert f.get_tensor("h.1.attn.bias").shape == (1, 1, 1024, 1024)
        assert f.get_tensor("wte.weight").dtype == torch.float32


def tensor_layout(folder, pattern):
    """{file name: {tensor name: (shape, dtype)}} of the checkpoint files in `folder` matching `pattern`."""
    layout = {}
    for path in sorted(folder.glob(pattern)):
        if path.suffix == ".safetensors":
            with safe_open(path, "pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        else:
            tensors = torch.load(path, weights_only=True)
        layout[path.name] = {k: (tuple(t.shape), t.dtype) for k, t in tensors.items()}
    return layout


def test_stand_ins_have_the_layout_of_the_replicas(hf_home, tmp_path):
    """The offline stand-ins (nbsupport.standins) at the replicas' sizes have the same files, tensor names,
    shapes and dtypes as the replicas of the real repositories (and notebook 05 reads Llama 3.2's config.json
    of both the same way)."""
    from nbsupport import import_notebook, standins

    hub = hf_home / "hub"
    s = replicas.GPT2_SHRUNK
    (tmp_path / "gpt2").mkdir()
    standins.gpt2_checkpoint(s["n_embd"], s["n_layer"], s["n_head"])(tmp_path / "gpt2")
    assert tensor_layout(tmp_path / "gpt2", "*.safetensors") == \
        tensor_layout(replicas.snapshot_folder(hub, "openai-community/gpt2"), "*.safetensors")

    (tmp_path / "llama2").mkdir()
    s = replicas.LLAMA2_SHRUNK
    standins.llama2_checkpoint(s["dim"], s["n_layers"], s["n_heads"], s["multiple_of"])(tmp_path / "llama2")
    assert tensor_layout(tmp_path / "llama2", "*.pth") == \
        tensor_layout(replicas.snapshot_folder(hub, "meta-llama/Llama-2-7b"), "*.pth")

    real = replicas.snapshot_folder(hub, "meta-llama/Llama-3.2-3B")
    _, c = replicas.LLAMA32_REPOS["meta-llama/Llama-3.2-3B"]
    (tmp_path / "llama3").mkdir()
    standins.llama3_checkpoint(c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                               c["num_key_value_heads"], c["intermediate_size"], n_shards=2)(tmp_path / "llama3")
    nb05 = import_notebook("05-standalone-llama32.ipynb")
    cfg = nb05.llama32_config(real, torch.bfloat16)
    real_names = {n: set(layout) for n, layout in tensor_layout(real, "model*.safetensors").items()}
    folder = tmp_path / "llama3"
    names = {n: set(layout) for n, layout in tensor_layout(folder, "model*.safetensors").items()}
    assert set.union(*names.values()) == set.union(*real_names.values())  # shards may cut elsewhere
    assert names.keys() == real_names.keys()
    flat = lambda f: {k: v for layout in tensor_layout(f, "model*.safetensors").values() for k, v in layout.items()}
    assert flat(folder) == flat(real)
    assert nb05.llama32_config(folder, torch.bfloat16) == cfg  # config.json read the same way
    assert (folder / "original" / "tokenizer.model").read_bytes() == (real / "original" / "tokenizer.model").read_bytes()


def test_05_runs_on_a_gguf_file_named_by_gguf_path(tmp_path):
    """GGUF_PATH: a Llama 3.2 GGUF file as llama.cpp's converter writes it (the shrunk replica, Q8_0) goes
    through section 2 and section 3's check, with nothing downloaded, no fallback, and Appendix C's check against
    transformers (given the file's RoPE frequencies, which it does not read)."""
    import gguf

    path, _ = replicas.write_llama32_gguf(tmp_path / "Llama-3.2-1B-Instruct-Q8_0.gguf")
    n = sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors if t.name != "rope_freqs.weight")
    out = run_notebook("05-standalone-llama32.ipynb", tmp_path / "hf-home", insert_after='MODEL = "1B"',
                       code=f"GGUF_PATH = {str(path)!r}", stop_after="greedy tokens with and without the cache",
                       also=[NB05_REFERENCE_CHECK])
    assert "Using Llama-3.2-1B-Instruct-Q8_0.gguf, the file GGUF_PATH names.\n" in out
    assert "SmolLM2" not in out and "bartowski" not in out and "meta-llama" not in out
    assert f"Llama-3.2-1B-Instruct-Q8_0.gguf: {n:,} parameters in float32, 2 blocks of width 256" in out
    assert re.search(r"2 of 2 blocks, \d+-token prompt: max \|logits ours - transformers\| = 0e\+00; the same 32 "
                     r"greedy tokens as transformers' generate", out), out
    assert "the same 32 greedy tokens with and without the cache" in out
