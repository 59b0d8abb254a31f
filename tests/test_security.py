"""No code execution from files: the package never unpickles and loads tensors weights-only.

torch.load without weights_only=True (and pickle.load, np.load(allow_pickle=True)) run code
from the file they read. Checked on the syntax tree, so calls split over lines count too.
torchvision's CIFAR reader unpickles the official CIFAR files inside torchvision, not here;
that is documented where CIFAR is loaded (autoal_dist/data/packaged.py).
"""
import ast
from pathlib import Path

import autoal_dist

PACKAGE = Path(autoal_dist.__file__).parent
UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"),
              ("cloudpickle", "load"), ("cloudpickle", "loads"), ("dill", "load"),
              ("joblib", "load")}


def calls():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name):
                yield f"{path.relative_to(PACKAGE)}:{node.lineno}", node.func.value.id, \
                    node.func.attr, {k.arg: k.value for k in node.keywords}


def is_true(value) -> bool:
    return isinstance(value, ast.Constant) and value.value is True


def test_torch_load_is_always_weights_only():
    found = [(where, kw) for where, mod, fn, kw in calls() if (mod, fn) == ("torch", "load")]
    assert found, "the package loads weights somewhere; the check must see those calls"
    assert [where for where, kw in found if not is_true(kw.get("weights_only"))] == []


def test_nothing_is_unpickled():
    assert [where for where, mod, fn, kw in calls() if (mod, fn) in UNPICKLERS] == []
    assert [where for where, mod, fn, kw in calls()
            if (mod, fn) in {("np", "load"), ("numpy", "load")}
            and not (isinstance(kw.get("allow_pickle"), ast.Constant)
                     and kw["allow_pickle"].value is False)] == []


def test_no_module_imports_an_unpickler_by_name():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in {"pickle", "torch"}:
                names = {a.name for a in node.names}
                assert not names & {"load", "loads", "Unpickler"}, f"{path}:{node.lineno}"
