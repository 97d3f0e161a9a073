"""Import the definitions of an earlier notebook without running its experiments.

`import_notebook("01-gpt-from-scratch.ipynb")` executes only the top-level statements of the
notebook's code cells that define something: imports, functions, classes, UPPER_CASE constants,
`nb01 = import_notebook(...)` calls (so notebook 03 can build on 02, which builds on 01) and
re-exports from such a module (`GPTModel = nb01.GPTModel`). Training loops,
downloads, plots and prints are skipped. The result is a module, cached per notebook.
"""

import ast
import json
import linecache
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _keeps(node, notebook_modules):
    """Whether a top-level statement is a definition; records names bound by import_notebook(...)."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if not isinstance(node, (ast.Assign, ast.AnnAssign)):
        return False
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    value = node.value
    if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "import_notebook":
        notebook_modules.update(t.id for t in targets if isinstance(t, ast.Name))
        return True
    # Re-exports of an earlier notebook's names: `GPTModel, generate = nb01.GPTModel, nb01.generate`
    values = value.elts if isinstance(value, ast.Tuple) else [value]
    if all(isinstance(v, ast.Attribute) and getattr(v.value, "id", None) in notebook_modules for v in values):
        return True
    return all(isinstance(t, ast.Name) and t.id.isupper() for t in targets)


def without_magics(source):
    """A cell's source as Python: IPython magics (%matplotlib, !pip) never define anything we need, and
    each becomes `pass`, so that a block of magics (Colab's set-up under an `if`) still parses."""
    return "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!"))
                     else line for line in source.splitlines())


def definitions(notebook):
    """The source code of the notebook's definitions, in cell order."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    kept, notebook_modules = [], set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = without_magics("".join(cell["source"]))
        tree = ast.parse(source)
        kept += [ast.get_source_segment(source, node) for node in tree.body if _keeps(node, notebook_modules)]
    return "\n\n".join(kept) + "\n"


def import_notebook(name):
    """Import the definitions of notebook `name` (a file in the repository root) as a module."""
    path = REPO_ROOT / name
    if not path.exists():
        raise FileNotFoundError(f"no notebook {name!r} in the repository root")
    module_name = "nb_" + path.stem.replace("-", "_")
    if module_name in sys.modules:
        return sys.modules[module_name]
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    sys.modules[module_name] = module
    source = definitions(path)
    filename = f"<definitions of {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # for tracebacks
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
