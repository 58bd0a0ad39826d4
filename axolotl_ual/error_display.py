"""Show our own errors plainly when an `axolotl` command stops on one.

An `UncertaintyDataError` or a `ual_*` config error is written for the user, but under
`axolotl train` it arrives at the bottom of a 70-line traceback through axolotl's data loading
or pydantic's validation, itself followed by accelerate's traceback of the failed child
process. The plugin installs `show_plainly` as the process's excepthook in its first hook
(`register`): for an exception that is, or wraps, a `UALError`, rank 0 prints only our message
(the traceback with `AXOLOTL_UAL_TRACEBACK=1`); anything else keeps Python's usual report.
accelerate's own "returned non-zero exit status" traceback still follows under `axolotl train`.
"""

from __future__ import annotations

import os
import sys
import traceback

from .errors import UALError

TRACEBACK_ENV = "AXOLOTL_UAL_TRACEBACK"


def our_error(exc: BaseException | None) -> UALError | None:
    """The `UALError` that `exc` is, causes, or carries as a pydantic validation error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UALError):
            return exc
        errors = getattr(exc, "errors", None)
        if callable(errors) and type(exc).__name__ == "ValidationError":  # pydantic
            for entry in errors():
                inner = (entry.get("ctx") or {}).get("error")
                if isinstance(inner, UALError):
                    return inner
        exc = exc.__cause__ or exc.__context__
    return None


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("0", "")


def show_plainly(exc_type, exc, tb, *, fallback=sys.__excepthook__, stream=None) -> None:
    """An excepthook: our message alone for our errors, Python's report for the rest."""
    ours = our_error(exc)
    if ours is None:
        fallback(exc_type, exc, tb)
        return
    if not _is_rank_zero():
        return
    stream = stream or sys.stderr
    if os.environ.get(TRACEBACK_ENV):
        traceback.print_exception(exc_type, exc, tb, file=stream)
        hint = ""
    else:
        hint = f"\n(the traceback: set {TRACEBACK_ENV}=1)"
    print(f"\naxolotl-ual: {type(ours).__name__}: {ours}{hint}\n", file=stream, flush=True)


def install() -> None:
    """Make `show_plainly` the excepthook (once; the previous hook handles other errors)."""
    current = sys.excepthook
    if getattr(current, "_axolotl_ual", False):
        return
    previous = current

    def hook(exc_type, exc, tb):
        show_plainly(exc_type, exc, tb, fallback=previous)

    hook._axolotl_ual = True
    sys.excepthook = hook
