"""tools/vendor.py: one self-contained file per check, or a loud refusal."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import textwrap
from pathlib import Path

import pytest

REAL_CHECKS = ["bn-verify", "batch-mix-verify"]


def _vendor(run_tool, root: Path, distribution: str, dest: Path) -> str:
    result = run_tool("vendor", distribution, dest, "--root", root)
    assert result.returncode == 0, result.stderr
    import_name = distribution.replace("-", "_")
    assert result.stdout.strip() == f"wrote {dest / (import_name + '.py')}"
    return (dest / f"{import_name}.py").read_text(encoding="utf-8")


def _section_order(text: str) -> list[str]:
    return [line[2:] for line in text.splitlines() if line.startswith("# ") and line.endswith(".py") and "/" in line]


def test_writes_one_file_with_header_imports_modules_and_all(tree, tmp_path, run_tool):
    text = _vendor(run_tool, tree, "tiny-check", tmp_path / "out")

    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "tiny_check.py"]
    header = text.split('"""', 1)[0]
    assert "GENERATED FILE -- DO NOT EDIT" in header
    assert "tiny-check 0.1.0 and the parts of verify-common 0.1.0 it uses" in header
    assert "python tools/vendor.py tiny-check <destination-dir>" in header
    assert "# Licence: MIT, as follows." in header and "# Copyright (c) 2026 The model-verification authors" in header
    tree_ = ast.parse(text)
    assert ast.get_docstring(tree_) == "A tiny check that uses most of verify_common, for the vendoring tests."
    assert text.count("from __future__ import annotations") == 1
    assert isinstance(tree_.body[1], ast.ImportFrom) and tree_.body[1].module == "__future__"
    # Each import once, hoisted to the top; nothing imports verify_common or a sibling.
    imports = [ast.unparse(node) for node in tree_.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert len(imports) == len(set(imports))
    assert "import torch" in imports and "from torch import nn" in imports
    assert "from typing import Any" in imports
    assert not any("verify_common" in line or "from ." in line for line in imports)
    header_nodes = (ast.Expr, ast.Import, ast.ImportFrom)
    first_code = next(i for i, node in enumerate(tree_.body) if not isinstance(node, header_nodes))
    assert all(not isinstance(node, (ast.Import, ast.ImportFrom)) for node in tree_.body[first_code:])
    # Dependencies first; ties in a stable (package, name) order; the version and __all__ close the file.
    assert _section_order(text) == [
        "verify_common/_collections.py",
        "verify_common/_errors.py",
        "verify_common/_hooks.py",
        "verify_common/_inputs.py",
        "verify_common/_report.py",
        "verify_common/_lightning.py",
        "verify_common/_state.py",
        "tiny_check/_names.py",
        "tiny_check/_check.py",
        "tiny_check/_callback.py",
    ]
    assert text.endswith(
        '__version__ = "0.1.0"\n__all__ = [\n    "TinyCallback",\n    "TinyCheck",\n    "TinyError",\n'
        '    "TinyWarning",\n    "__version__",\n]\n'
    )
    # Module docstrings survive as comments; docstrings of functions and blank lines inside strings are untouched.
    assert "# Fails when a Dropout runs in the forward pass." in text
    assert "Keeps blank lines inside strings as they are:\n\n\n    (two above)" in text
    assert "\n\n\n\n" not in text.replace("inside strings as they are:\n\n\n", "")


def test_inlines_only_the_verify_common_modules_it_uses_and_keeps_import_forms(tree, tmp_path, run_tool, write_package):
    write_package(
        tree / "packages",
        "label-check",
        {
            "__init__.py": '''
                from ._label import label
                from .__about__ import __version__

                __all__ = ["label", "__version__"]
                ''',
            "_label.py": '''
                import importlib.util
                import os.path as _label_path
                from collections import OrderedDict as _LabelDict

                from verify_common import describe_module


                def label(name):
                    return describe_module(name)
                ''',
        },
    )
    text = _vendor(run_tool, tree, "label-check", tmp_path)
    assert _section_order(text) == ["verify_common/_report.py", "label_check/_label.py"]
    assert "describe_module" in text and "class ModelState" not in text
    # Dotted and aliased imports keep their exact form (`import importlib` alone would not load .util).
    assert "\nimport importlib.util\nimport os.path as _label_path\nimport warnings\n" in text
    assert "\nfrom collections import OrderedDict as _LabelDict\n" in text


def test_rerun_is_byte_identical_and_independent_of_the_destination(tree, tmp_path, run_tool):
    first = (tmp_path / "a" / "tiny_check.py")
    _vendor(run_tool, tree, "tiny-check", tmp_path / "a")
    before = first.read_bytes()
    _vendor(run_tool, tree, "tiny-check", tmp_path / "a")
    _vendor(run_tool, tree, "tiny-check", tmp_path / "b" / "deeper")
    assert first.read_bytes() == before
    assert (tmp_path / "b" / "deeper" / "tiny_check.py").read_bytes() == before
    assert str(tmp_path) not in before.decode()
    assert [path.name for path in (tmp_path / "a").iterdir()] == ["tiny_check.py"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert first.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not the temporary's 0600


HIDDEN_IMPORT = """
import copy, json, pickle, sys, warnings
try:
    import verify_common
except ImportError:
    hidden = True
else:
    hidden = False
import {name}
import torch

result = {{"hidden": hidden, "file": {name}.__file__, "all": sorted({name}.__all__),
           "missing": [n for n in {name}.__all__ if not hasattr({name}, n)],
           "lightning_imported": any(  # by importing the check alone
m.split(".")[0] in ("lightning", "pytorch_lightning") for m in sys.modules),
           "verify_common_modules": sorted(m for m in sys.modules if m.startswith("verify_common"))}}
"""

HIDDEN_TINY_CHECK = """
from tiny_check import TinyCallback, TinyCheck, TinyError, TinyWarning
model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
result["check"] = TinyCheck(model).check(torch.zeros(2, 3))
try:
    TinyCheck(model).check("no tensor")
except TinyError as exc:
    result["error"] = [type(exc).__module__, isinstance(exc, ValueError), str(exc)]
try:
    import lightning.pytorch as pl
except ImportError:
    pl = None
if pl is not None:
    callback = TinyCallback(warn=True)
    restored = pickle.loads(pickle.dumps(callback))
    clone = copy.deepcopy(callback)
    model.example_input_array = torch.zeros(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored.on_train_start(None, model)
    result["callback"] = [
        type(restored).__name__, isinstance(restored, pl.Callback), isinstance(clone, pl.Callback),
        type(restored).__module__, [(w.category.__name__, str(w.message)) for w in caught],
    ]
print(json.dumps(result))
"""


def test_vendored_file_works_without_verify_common(tree, tmp_path, run_tool, run_hidden):
    dest = tmp_path / "vendored"
    _vendor(run_tool, tree, "tiny-check", dest)
    code = HIDDEN_IMPORT.format(name="tiny_check") + HIDDEN_TINY_CHECK
    result = run_hidden(code, dest, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)

    assert data["hidden"] is True, "the subprocess could still import verify_common"
    assert data["verify_common_modules"] == []
    assert Path(data["file"]) == dest / "tiny_check.py"
    assert data["all"] == ["TinyCallback", "TinyCheck", "TinyError", "TinyWarning", "__version__"]
    assert data["missing"] == []
    assert data["check"] is False
    assert data["error"][:2] == ["tiny_check", True]
    assert data["error"][2].startswith("The input holds no tensor (got 'no tensor')")
    if "callback" in data:  # Lightning installed: the dynamic subclass pickles through _rebuild_callback
        name, is_callback, clone_is_callback, module, caught = data["callback"]
        assert (name, is_callback, clone_is_callback, module) == ("TinyCallback", True, True, "tiny_check")
        assert caught == [["TinyWarning", "a dropout ran in Sequential"]]
    else:
        assert data["lightning_imported"] is False


@pytest.mark.parametrize("distribution", REAL_CHECKS + ["verify-common"])
def test_real_package_vendors_to_the_same_public_names(distribution, tmp_path, run_tool):
    import_name = distribution.replace("-", "_")
    root = Path(__file__).resolve().parents[2]
    text = _vendor(run_tool, root, distribution, tmp_path)
    package = importlib.import_module(import_name)
    tree_ = ast.parse(text)
    compile(tree_, f"{import_name}.py", "exec")
    all_node = next(node for node in tree_.body if isinstance(node, ast.Assign) and node.targets[0].id == "__all__")
    assert ast.literal_eval(all_node.value) == list(package.__all__)
    assert f'__version__ = "{package.__version__}"' in text


# The shortest use of each check from the public contract, with its expected answer.
CONTRACT_USE = {
    "bn-verify": (
        """
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        verification = bn_verify.BatchNormVerification(model)
        result["use"] = [verification.check(input_array=torch.rand(2, 3, 8, 8)), verification.detected_pairs]
        """,
        [False, [["0", "1"]]],
    ),
    "batch-mix-verify": (
        """
        class Mixing(torch.nn.Module):
            def forward(self, x):
                return x + x.mean(0, keepdim=True)

        result["use"] = [
            batch_mix_verify.BatchGradientVerification(Mixing()).check(input_array=torch.rand(4, 3)),
            batch_mix_verify.BatchGradientVerification(torch.nn.Linear(3, 2)).check(input_array=torch.rand(4, 3)),
        ]
        """,
        [False, True],
    ),
}


@pytest.mark.parametrize("distribution", REAL_CHECKS)
def test_real_check_works_without_verify_common(distribution, tmp_path, run_tool, run_hidden):
    import_name = distribution.replace("-", "_")
    root = Path(__file__).resolve().parents[2]
    _vendor(run_tool, root, distribution, tmp_path / "vendored")
    use, expected_use = CONTRACT_USE[distribution]
    code = HIDDEN_IMPORT.format(name=import_name) + textwrap.dedent(use) + textwrap.dedent(
        f"""
        try:
            import lightning.pytorch as pl
        except ImportError:
            pl = None
        callbacks = [getattr({import_name}, n) for n in {import_name}.__all__ if n.endswith("Callback")]
        result["callbacks"] = []
        for cls in callbacks if pl is not None else []:
            restored = pickle.loads(pickle.dumps(cls()))
            result["callbacks"].append([type(restored).__name__, isinstance(restored, pl.Callback)])
        print(json.dumps(result))
        """
    )
    result = run_hidden(code, tmp_path / "vendored", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    package = importlib.import_module(import_name)
    assert data["hidden"] is True and data["verify_common_modules"] == []
    assert Path(data["file"]) == tmp_path / "vendored" / f"{import_name}.py"
    assert data["all"] == sorted(package.__all__) and data["missing"] == []
    assert data["lightning_imported"] is False
    assert data["use"] == expected_use
    if importlib.util.find_spec("lightning") is not None:
        assert data["callbacks"], "no *Callback in __all__ was pickled"
    assert all(is_callback for _, is_callback in data["callbacks"])


# -- refusals -----------------------------------------------------------------------

REFUSALS = {
    "duplicate-name": (
        {"_callback.py": "from ._check import TinyCheck\n\nclass TinyCallback:\n    pass\n\n\n"
                         "def _tiny_label(name, module):\n    return name\n"},
        r"_callback\.py:7: module-level name `_tiny_label` is also bound in tiny_check/_names\.py "
        r"\(defined there, defined here\)",
    ),
    "clash-with-verify-common": (
        {"_names.py": "def describe_module(name):\n    return name\n\n"
                      "def _tiny_label(name, module):\n    return name\n"},
        r"module-level name `describe_module` is also bound in verify_common/_report\.py",
    ),
    "import-clash": (
        {"_names.py": "from typing import Any as nn\n\ndef _tiny_label(name, module):\n    return name\n"},
        r"_names\.py:1: module-level name `nn` is also bound in verify_common/_hooks\.py "
        r"\(`from torch import nn` there, `from typing import Any as nn` here\)",
    ),
    "import-verify-common": (
        {"_names.py": "import verify_common\n\n"
                      "def _tiny_label(name, module):\n    return verify_common.describe_module(name)\n"},
        r"_names\.py:1: `import verify_common` cannot be inlined",
    ),
    "private-verify-common-name": (
        {"_names.py": "from verify_common import _describe\n\ndef _tiny_label(name, module):\n    return name\n"},
        r"_names\.py:1: `_describe` is not a public name of verify_common",
    ),
    "private-verify-common-module": (
        {"_names.py": "from verify_common._report import describe_module\n\n"
                      "def _tiny_label(name, module):\n    return name\n"},
        r"`from verify_common\._report import \.\.\.` reaches into a private module",
    ),
    "relative-import-in-function": (
        {"_names.py": "def _tiny_label(name, module):\n    from ._check import TinyCheck\n    return name\n"},
        r"_names\.py:2: an import of a sibling or of verify_common inside a function",
    ),
    "aliased-sibling-import": (
        {"_callback.py": "from ._check import TinyCheck as Check, TinyWarning\n\nclass TinyCallback:\n    pass\n"},
        r"`import TinyCheck as Check` from a sibling or verify_common cannot be inlined",
    ),
    "star-import": (
        {"_callback.py": "from ._check import *\n\nclass TinyCallback:\n    pass\n"},
        r"`from \.\.\. import \*` cannot be inlined",
    ),
    "optional-dependency-at-module-level": (
        {"_callback.py": "import lightning\n\nclass TinyCallback:\n    pass\n"},
        r"_callback\.py:1: module-level import of `lightning`; only torch and the standard library",
    ),
    "import-from-own-package": (
        {"_callback.py": "from tiny_check import TinyCheck\n\nclass TinyCallback:\n    pass\n"},
        r"`from tiny_check import \.\.\.` imports the package from itself",
    ),
    "name-missing-in-sibling": (
        {"_callback.py": "from ._check import TinyCheck, Nope\n\nclass TinyCallback:\n    pass\n"},
        r"_callback\.py:1: `Nope` is not defined at module level in tiny_check\._check",
    ),
    "missing-module": (
        {"_callback.py": "from ._gone import thing\n\nclass TinyCallback:\n    pass\n"},
        r"no module tiny_check\._gone",
    ),
    "circular-import": (
        {"_names.py": "from ._callback import TinyCallback\n\ndef _tiny_label(name, module):\n    return name\n"},
        r"circular imports between tiny_check\._callback, tiny_check\._check, tiny_check\._names",
    ),
    "init-with-code": (
        {"__init__.py": 'from ._check import TinyCheck\n\nTinyCheck.x = 1\n__all__ = ["TinyCheck"]\n'},
        r"__init__\.py:3: an `__init__\.py` may hold only a docstring",
    ),
    "init-without-all": (
        {"__init__.py": "from ._check import TinyCheck\n"},
        r"__init__\.py: defines no `__all__`",
    ),
    "all-name-undefined": (
        {"__init__.py": 'from ._check import TinyCheck\n\n__all__ = ["TinyCheck", "Ghost"]\n'},
        r"`__all__` names Ghost are not defined in the generated tiny_check\.py",
    ),
    "semicolon": (
        {"_callback.py": "from ._check import TinyCheck, TinyWarning; X = 1\n\nclass TinyCallback:\n    pass\n"},
        r"_callback\.py:1: an import shares its line with other code",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_refuses_what_cannot_be_inlined(case, tree, tmp_path, vendor_tool):
    files, message = REFUSALS[case]
    src = tree / "packages" / "tiny-check" / "src" / "tiny_check"
    for filename, source in files.items():
        (src / filename).write_text(source)
    with pytest.raises(vendor_tool.VendorError, match=message):
        vendor_tool.vendor("tiny-check", tmp_path / "out", root=tree)
    assert not (tmp_path / "out").exists()


def test_refusal_on_the_command_line_exits_non_zero_and_writes_nothing(tree, tmp_path, run_tool):
    (tree / "packages" / "tiny-check" / "src" / "tiny_check" / "_names.py").write_text(
        "from verify_common import _describe\n\ndef _tiny_label(name, module):\n    return name\n"
    )
    result = run_tool("vendor", "tiny-check", tmp_path / "out", "--root", tree)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("vendor.py: error: ")
    assert "`_describe` is not a public name of verify_common" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_distribution_names_the_packages(tree, tmp_path, run_tool):
    result = run_tool("vendor", "tiny_chek", tmp_path, "--root", tree)
    assert result.returncode == 1
    assert "unknown distribution 'tiny_chek'; the packages are: tiny-check, verify-common" in result.stderr
