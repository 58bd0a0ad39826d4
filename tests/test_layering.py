"""The modules that say they need no axolotl (the README's [pure torch] ones, and those whose
docstring says "no axolotl imports") import with axolotl made unimportable."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE_MODULES = [
    # [pure torch] in the README's module map
    "axolotl_ual.loss",
    "axolotl_ual.mapping",
    "axolotl_ual.objectives",
    # the rest of the training math and the data they read
    "axolotl_ual.columns",
    "axolotl_ual.output_head",
    "axolotl_ual.metrics",
    "axolotl_ual.reference",
    "axolotl_ual.rows",
    "axolotl_ual.uncertainty",
    # `axolotl-ual inspect` validates ual_* keys without axolotl
    "axolotl_ual.args",
    "axolotl_ual.errors",
]

BLOCK_AXOLOTL = """
import importlib.abc, sys

class NoAxolotl(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "axolotl" or name.startswith("axolotl."):
            raise ImportError(f"axolotl is not importable here (imported {name})")
        return None

sys.meta_path.insert(0, NoAxolotl())
import {module}
assert not any(m == "axolotl" or m.startswith("axolotl.") for m in sys.modules), "axolotl leaked in"
"""


@pytest.mark.parametrize("module", PURE_MODULES)
def test_imports_without_axolotl(module):
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_AXOLOTL.replace("{module}", module)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
