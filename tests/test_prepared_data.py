"""The prepared-dataset path changes exactly when what UAL tokenizes changes."""

from __future__ import annotations

import os

from axolotl_ual.prepared_data import data_fingerprint, isolate_prepared_path


def _cfg(tmp_path, **overrides):
    data = tmp_path / "data.jsonl"
    if not data.exists():
        data.write_text('{"messages": [], "uncertainty": 0.1}\n')
    return {
        "datasets": [{"path": str(data), "type": "axolotl_ual.chat_template"}],
        "dataset_prepared_path": str(tmp_path / "prepared"),
        **overrides,
    }


def test_data_keys_change_the_path_mapping_keys_do_not(tmp_path):
    base = data_fingerprint(_cfg(tmp_path))
    for key, value in [
        ("ual_uncertainty_field", "score"),
        ("ual_missing_uncertainty", "default"),
        ("ual_default_uncertainty", 0.9),
        ("ual_uncertainty_source", "constant"),
    ]:
        assert data_fingerprint(_cfg(tmp_path, **{key: value})) != base, key
    for key, value in [("ual_smoothing_max", 0.3), ("ual_mapping", "rank"), ("learning_rate", 1.0)]:
        assert data_fingerprint(_cfg(tmp_path, **{key: value})) == base, key
    # an explicit default is the same setting
    assert data_fingerprint(_cfg(tmp_path, ual_uncertainty_field="uncertainty")) == base


def test_rescored_data_or_sidecar_changes_the_path(tmp_path):
    base = data_fingerprint(_cfg(tmp_path))
    data = tmp_path / "data.jsonl"
    data.write_text('{"messages": [], "uncertainty": 0.7}\n')  # same size, re-scored in place
    os.utime(data, ns=(1, 1))
    assert data_fingerprint(_cfg(tmp_path)) != base

    sidecar = tmp_path / "scores.jsonl"
    sidecar.write_text('{"sample_key": "a", "uncertainty": 0.1}\n')
    with_sidecar = data_fingerprint(_cfg(tmp_path, ual_uncertainty_file=str(sidecar)))
    sidecar.write_text('{"sample_key": "a", "uncertainty": 0.2}\n')
    assert data_fingerprint(_cfg(tmp_path, ual_uncertainty_file=str(sidecar))) != with_sidecar


def test_isolate_is_idempotent_and_defaults_like_axolotl(tmp_path):
    cfg = _cfg(tmp_path)
    first = isolate_prepared_path(cfg)
    assert first.startswith(str(tmp_path / "prepared" / "ual-"))
    assert isolate_prepared_path(cfg) == first  # register() may run twice on one config
    cfg = _cfg(tmp_path, dataset_prepared_path=None)
    assert isolate_prepared_path(cfg).startswith("last_run_prepared/ual-")


def test_an_edit_that_keeps_size_and_mtime_still_changes_the_path(tmp_path):
    """`cp -p`, `rsync -a` and `tar` restore the modification time: only the content tells."""
    data = tmp_path / "data.jsonl"
    data.write_text('{"messages": [], "uncertainty": 0.1}\n')
    before = data_fingerprint(_cfg(tmp_path))
    stat = data.stat()
    data.write_text('{"messages": [], "uncertainty": 0.9}\n')
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert data.stat().st_size == stat.st_size and data.stat().st_mtime_ns == stat.st_mtime_ns
    assert data_fingerprint(_cfg(tmp_path)) != before


def test_a_user_folder_named_ual_something_is_not_taken_for_ours(tmp_path):
    cfg = _cfg(tmp_path, dataset_prepared_path=str(tmp_path / "data" / "ual-cache"))
    path = isolate_prepared_path(cfg)
    assert path.startswith(str(tmp_path / "data" / "ual-cache" / "ual-")), path
