"""The offline hint (issue 12): axolotl's telemetry waits forever at exit without internet, so
where the environment says the run is offline and telemetry is on, the plugin says so."""

from __future__ import annotations

import logging
import sys

import pytest

from axolotl_ual.compat import telemetry_would_hang_offline
from tests.support import SAMPLE_CHAT

ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "AXOLOTL_DO_NOT_TRACK", "DO_NOT_TRACK")
HINT = "Set AXOLOTL_DO_NOT_TRACK=1"


def set_env(monkeypatch, **values: str) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    "env, hangs",
    [
        ({}, False),  # online: telemetry is sent and axolotl exits
        ({"HF_HUB_OFFLINE": "1"}, True),
        ({"TRANSFORMERS_OFFLINE": "true"}, True),
        ({"HF_HUB_OFFLINE": " YES "}, True),
        ({"HF_HUB_OFFLINE": "0"}, False),
        ({"HF_HUB_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1"}, False),
        ({"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "true"}, False),
        ({"HF_HUB_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "0"}, True),
    ],
)
def test_telemetry_would_hang_offline(monkeypatch, env, hangs):
    set_env(monkeypatch, **env)
    assert telemetry_would_hang_offline() is hangs


@pytest.mark.parametrize("tracked", [True, False], ids=["telemetry-on", "do-not-track"])
def test_register_warns_an_offline_run_with_telemetry_on(monkeypatch, tmp_path, caplog, tracked):
    from axolotl_ual.plugin import UALPlugin

    set_env(monkeypatch, HF_HUB_OFFLINE="1", **({} if tracked else {"AXOLOTL_DO_NOT_TRACK": "1"}))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # register() installs its own
    cfg = {
        "plugins": ["axolotl_ual.UALPlugin"],
        "datasets": [{"path": str(SAMPLE_CHAT), "type": "axolotl_ual.chat_template"}],
        "dataset_prepared_path": str(tmp_path / "prepared"),
    }
    with caplog.at_level(logging.INFO, logger="axolotl_ual.plugin"):
        UALPlugin().register(cfg)
    ours = [
        r.getMessage()
        for r in caplog.records
        if r.name == "axolotl_ual.plugin" and r.levelno == logging.WARNING
    ]
    assert len(ours) == tracked
    if tracked:
        assert HINT in ours[0] and "offline" in ours[0] and "waits forever" in ours[0]
