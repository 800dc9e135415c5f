"""The library's shape: every lvat_tf import points down the layer order below, and no
lvat_tf import hides inside a function (where it would dodge a cycle instead of fixing it)."""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lvat_tf")

#: The layers, bottom to top (the one place the order is written). A module may
#: import from its own layer and the ones below it. The most specific prefix wins.
LAYERS = (
    # ground floor: replica helpers, errors, atomic files, machine facts, dtype policies,
    # checkpoint files, the fit callbacks every trainer shares
    ("lvat_tf.distribute", "lvat_tf.errors", "lvat_tf.files", "lvat_tf.hardware",
     "lvat_tf.precision", "lvat_tf.checkpointing", "lvat_tf.fitting"),
    ("lvat_tf.losses",),
    ("lvat_tf.data",),
    ("lvat_tf.models",),
    ("lvat_tf.generative",),
    ("lvat_tf.regularizers",),
    ("lvat_tf.training",),
    ("lvat_tf.config", "lvat_tf.recipes"),
    # applications of a configured run: restoring, evaluating, comparing, converting
    ("lvat_tf.trained", "lvat_tf.robustness", "lvat_tf.analysis", "lvat_tf.export",
     "lvat_tf.regression", "lvat_tf.benchmark", "lvat_tf.upstream"),
    ("lvat_tf.experiments", "lvat_tf"),
)


def layer_of(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    assert best is not None, f"{module} is in no layer"
    return best[0]


def _modules():
    for dirpath, _, filenames in os.walk(ROOT):
        for f in sorted(filenames):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                yield rel.replace(".__init__", ""), path


def lvat_imports(path):
    """(imported module, line, inside a function?) of every lvat_tf import in a file."""
    tree = ast.parse(open(path).read())
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function) for a in child.names
                           if a.name.startswith("lvat_tf"))
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("lvat_tf"):
                if child.module == "lvat_tf":  # from lvat_tf import x: x is the module
                    out.extend((f"lvat_tf.{a.name}", child.lineno, in_function)
                               for a in child.names)
                else:
                    out.append((child.module, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return out


def test_every_module_is_in_a_layer():
    for mod, _ in _modules():
        layer_of(mod)


def test_no_upward_import():
    upward = [f"{mod}:{line} imports {imp}" for mod, path in _modules()
              for imp, line, _ in lvat_imports(path) if layer_of(imp) > layer_of(mod)]
    assert upward == []


def test_no_lvat_tf_import_inside_a_function():
    hidden = [f"{mod}:{line} imports {imp}" for mod, path in _modules()
              for imp, line, in_fn in lvat_imports(path) if in_fn]
    assert hidden == []


@pytest.mark.parametrize("source,expected", [
    ("from lvat_tf.training import run\n", [("lvat_tf.training", 1, False)]),
    ("def f():\n    from lvat_tf import config\n", [("lvat_tf.config", 2, True)]),
    ("import lvat_tf.data.pipeline as p\n", [("lvat_tf.data.pipeline", 1, False)]),
])
def test_the_parser_sees_imports(tmp_path, source, expected):
    p = tmp_path / "m.py"
    p.write_text(source)
    assert lvat_imports(str(p)) == expected


def test_an_upward_import_would_be_caught():
    assert layer_of("lvat_tf.data.pipeline") < layer_of("lvat_tf.regularizers.methods")
    assert layer_of("lvat_tf.distribute") < layer_of("lvat_tf.models.layers")
    assert layer_of("lvat_tf.training.run") < layer_of("lvat_tf.config")


def test_readme_layout_names_every_module():
    readme = open(os.path.join(os.path.dirname(ROOT), "README.md")).read()
    layout = readme[readme.index("## Layout"):]
    missing = []
    for mod, path in _modules():
        name = os.path.basename(path)
        if name == "__init__.py":
            continue
        if name not in layout and name[:-3] + ".py" not in layout:
            missing.append(mod)
    assert missing == [], f"README Layout omits {missing}"
    for script in os.listdir(os.path.join(os.path.dirname(ROOT), "run_scripts")):
        if script.endswith(".py") and not script.startswith("_"):
            assert script in layout, script
