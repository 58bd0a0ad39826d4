"""Our errors reach the user as one plain message, other errors as Python reports them."""

from __future__ import annotations

import io
import sys

import pytest
from pydantic import ValidationError

from axolotl_ual import error_display
from axolotl_ual.args import UALArgs
from axolotl_ual.errors import DataError
from axolotl_ual.uncertainty import UncertaintyDataError


def _report(exc: BaseException, **env) -> tuple[str, list]:
    fallback_calls = []
    stream = io.StringIO()
    error_display.show_plainly(
        type(exc),
        exc,
        exc.__traceback__,
        fallback=lambda *a: fallback_calls.append(a),
        stream=stream,
    )
    return stream.getvalue(), fallback_calls


def _raised(make):
    try:
        make()
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return exc
    raise AssertionError("nothing raised")


def test_a_data_error_deep_in_a_traceback_is_shown_alone(monkeypatch):
    monkeypatch.delenv(error_display.TRACEBACK_ENV, raising=False)

    def load():
        try:
            raise UncertaintyDataError(
                "dataset 'd.jsonl': 1 row(s) ...: row 2: 1.7 is outside [0, 1]"
            )
        except UncertaintyDataError as exc:
            raise RuntimeError("axolotl failed to load the datasets") from exc

    text, fallback = _report(_raised(load))
    assert not fallback
    assert "axolotl-ual: UncertaintyDataError: dataset 'd.jsonl'" in text and "row 2: 1.7" in text
    assert "Traceback" not in text and "AXOLOTL_UAL_TRACEBACK=1" in text


def test_a_config_error_inside_pydantics_report_is_shown_alone(monkeypatch):
    monkeypatch.delenv(error_display.TRACEBACK_ENV, raising=False)
    exc = _raised(lambda: UALArgs.model_validate({"ual_smothing_max": 0.3}))
    assert isinstance(exc, ValidationError)
    text, fallback = _report(exc)
    assert not fallback
    assert "axolotl-ual: UsageError: unknown UAL key(s): ual_smothing_max" in text


def test_the_traceback_on_request_and_other_errors_untouched(monkeypatch):
    monkeypatch.setenv(error_display.TRACEBACK_ENV, "1")
    text, _ = _report(_raised(lambda: (_ for _ in ()).throw(DataError("bad file"))))
    assert "Traceback" in text and "axolotl-ual: DataError: bad file" in text
    text, fallback = _report(_raised(lambda: 1 / 0))
    assert text == "" and fallback and fallback[0][0] is ZeroDivisionError


def test_only_rank_zero_prints(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    text, fallback = _report(_raised(lambda: (_ for _ in ()).throw(DataError("bad file"))))
    assert text == "" and not fallback


def test_install_is_idempotent(monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    error_display.install()
    first = sys.excepthook
    error_display.install()
    assert sys.excepthook is first and first is not sys.__excepthook__
    with pytest.raises(AssertionError):
        _raised(lambda: None)
