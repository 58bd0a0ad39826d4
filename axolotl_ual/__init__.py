"""axolotl-ual: Uncertainty-Aware Learning (per-sample label smoothing) for axolotl.

Use it from an axolotl YAML with ``plugins: [axolotl_ual.UALPlugin]``. The plugin class is
imported lazily so that the light parts of the package (``axolotl_ual.loss``,
``axolotl_ual.mapping``, the ``axolotl-ual elicit`` command) do not import axolotl.
"""

__version__ = "0.1.0"
__all__ = ["UALPlugin", "__version__"]


def __getattr__(name):
    if name == "UALPlugin":
        from .plugin import UALPlugin

        return UALPlugin
    raise AttributeError(f"module 'axolotl_ual' has no attribute {name!r}")
