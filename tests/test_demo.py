"""`axolotl-ual demo` without axolotl: reading its output line by line, the plot, the summary.

The real run is `tests/e2e/test_train_setups.py::test_demo_command`; here the lines are canned
(copied from a real run's log, tqdm's carriage returns included) and `axolotl` is a stand-in
script, so these take a second or two.
"""

from __future__ import annotations

import json
import math
import stat
import sys
import textwrap
from argparse import Namespace
from pathlib import Path

import pytest

from axolotl_ual import demo
from axolotl_ual.compat import logged_metrics
from axolotl_ual.demo import DemoSetup, Progress, bucket_ranges, parameter_count, stream
from axolotl_ual.demo_plot import plot_run
from axolotl_ual.toolkit import DATA, REPO, offline_env

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BAR = "\r                                             \r"  # tqdm clearing its bar


def eval_line(loss: float, nll: float, low: float, mid: float, high: float, epoch: str) -> str:
    record = {
        "eval_loss": f"{loss}",
        "eval_ual_tokens": 116,
        "eval_ual_nll": f"{nll}",
        "eval_ual_tokens_low": 48,
        "eval_ual_nll_low": f"{low}",
        "eval_ual_tokens_mid": 20,
        "eval_ual_nll_mid": f"{mid}",
        "eval_ual_tokens_high": 48,
        "eval_ual_nll_high": f"{high}",
        "eval_runtime": "1.667",
        "epoch": epoch,
    }
    return f"{BAR}{record}\n"


def train_line(step: int, loss: float, eps: float) -> str:
    record = {
        "loss": f"{loss}",
        "grad_norm": "1.654",
        "learning_rate": "0.001",
        "ual_epsilon_mean": f"{eps}",
        "ual_uncertainty_mean": f"{eps * 5:.4g}",
        "memory/max_active (GiB)": "0",
        "tokens/trainable": 213,
        "epoch": f"{step / 3:.4g}",
    }
    bar = f"\r 33%|███▎      | {step}/3 [00:06<00:10,  1.70s/it]"
    return f"{bar}{BAR}{record}\n"


# what `axolotl train` prints, one entry per line as `stream` hands them on (abridged)
CANNED = [
    "[2026-12-01 19:48:32,840] [WARNING] [torchao] Failed to load /x/_C_mxfp8.so\n",
    "[2026-12-01 19:48:41,040] [INFO] [axolotl_ual.plugin] UAL: prepared datasets for these "
    "uncertainty settings live in prepared/ual-e7aff9bf5b188fa9\n",
    '  "ual_smoothing_max": 0.2,\n',
    "[2026-12-01 19:48:43,878] [INFO] [axolotl.utils.data.sft] Loading raw datasets...\n",
    "Tokenizing Prompts (num_proc=1): 100%|██████████| 54/54 [00:00<00:00, 105.56 examples/s]\n",
    "[2026-12-01 19:49:10,883] [INFO] [axolotl.utils.data.sft] Maximum number of steps set at 3\n",
    "[2026-12-01 19:49:16,541] [INFO] [axolotl.train] Starting trainer...\n",
    eval_line(6.231, 6.228, 6.241, 6.201, 6.228, "0"),
    train_line(1, 6.218, 0.1041),
    train_line(2, 6.228, 0.09114),
    eval_line(5.777, 5.719, 5.755, 5.675, 5.701, "0.6667"),
    train_line(3, 5.53, 0.1166),
    eval_line(5.635, 5.559, 5.615, 5.494, 5.53, "1"),
    f"{BAR}{{'train_runtime': '40.08', 'train_loss': '5.855', 'epoch': '1'}}\n",
    "[2026-12-01 19:49:22,439] [INFO] [axolotl.train] Training completed! Saving trained model\n",
]


def fed(lines=CANNED, **kwargs) -> tuple[Progress, list[list[str]]]:
    progress = Progress(**kwargs)
    return progress, [progress.feed(line) for line in lines]


def test_progress_reports_each_line_as_it_arrives():
    progress, messages = fed()
    by_line = dict(zip(CANNED, messages, strict=True))
    assert by_line[CANNED[0]] == []  # axolotl's noise is not echoed
    assert by_line[CANNED[2]] == []
    assert by_line[CANNED[1]] == [
        "UAL: prepared datasets for these uncertainty settings live in prepared/ual-e7aff9bf5b188fa9"
    ]
    assert by_line[CANNED[5]] == ["axolotl: 3 optimizer steps"]
    assert messages[7] == [
        "eval at step 0/3: loss 6.231, unsmoothed NLL 6.228; by u: low 6.241  mid 6.201  high 6.228"
    ]
    assert messages[8] == ["step   1/3  loss 6.218  mean eps 0.1041"]
    assert messages[10][0].startswith("eval at step 2/3: loss 5.777")
    assert messages[11] == ["step   3/3  loss 5.53  mean eps 0.1166"]
    assert messages[13] == []  # the final train_runtime summary dict is neither
    assert [m[0].split(":")[0] for m in (messages[3], messages[6], messages[14])] == ["axolotl"] * 3

    assert [r["step"] for r in progress.train] == [1, 2, 3]
    assert [r["loss"] for r in progress.train] == [6.218, 6.228, 5.53]
    assert [r["step"] for r in progress.evals] == [0, 2, 3]
    assert progress.evals[-1]["eval_ual_nll_high"] == 5.53


def test_progress_matches_logged_metrics_on_the_whole_log():
    """Line by line gives the records `logged_metrics` reads from the whole text at once."""
    progress, _ = fed()
    whole = logged_metrics("".join(CANNED))
    strip = [{k: v for k, v in r.items() if k != "step"} for r in progress.train + progress.evals]
    assert sorted(map(repr, strip)) == sorted(
        repr(r) for r in whole if "loss" in r or "eval_loss" in r
    )


def test_progress_without_a_step_count_and_with_logging_steps():
    lines = [line for line in CANNED if "Maximum number of steps" not in line]
    progress, messages = fed(lines, logging_steps=5)
    assert "step     5  loss 6.218  mean eps 0.1041" in [m for line in messages for m in line]
    assert [r["step"] for r in progress.train] == [5, 10, 15]


def test_plot_is_a_png_matplotlib_reads(tmp_path):
    import matplotlib.image

    progress, _ = fed()
    png = plot_run(progress.train, progress.evals, tmp_path / "demo.png", title="canned")
    assert png == tmp_path / "demo.png"
    assert png.read_bytes().startswith(PNG_MAGIC)
    height, width, _channels = matplotlib.image.imread(png).shape
    assert width > height > 200
    assert [p.name for p in tmp_path.iterdir()] == ["demo.png"]  # no temporary file left


def test_plot_without_evals(tmp_path):
    progress, _ = fed([line for line in CANNED if "eval_loss" not in line])
    assert not progress.evals
    png = plot_run(progress.train, [], tmp_path / "demo.png", title="no evals")
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_bucket_ranges():
    assert bucket_ranges(["low", "mid", "high"], [1 / 3, 2 / 3]) == (
        "low: u < 0.333, mid: 0.333 <= u < 0.667, high: u >= 0.667"
    )
    assert bucket_ranges(["low", "high"], [0.5]) == "low: u < 0.5, high: u >= 0.5"
    assert bucket_ranges(["low", "high"], [0.3, 0.6]) == ""  # names that do not fit the edges


def fake_model(model_dir: Path, shapes: dict[str, list[int]]) -> Path:
    """A config.json and a safetensors file whose header declares `shapes` (data zero-filled)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(
        json.dumps({"num_hidden_layers": 2, "hidden_size": 64, "vocab_size": 512})
    )
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    (model_dir / "model.safetensors").write_bytes(
        len(raw).to_bytes(8, "little") + raw + bytes(offset)
    )
    return model_dir


def test_parameter_count_from_the_safetensors_header(tmp_path):
    model = fake_model(tmp_path / "m", {"embed": [512, 64], "norm": [64], "head": [512, 64]})
    assert parameter_count(model) == 2 * 512 * 64 + 64
    assert parameter_count(tmp_path) is None


def demo_workdir(tmp_path: Path, yaml_text: str | None = None) -> Path:
    """What `prepare_workdir` leaves, with a fake model (so nothing imports torch)."""
    workdir = tmp_path / "work"
    fake_model(workdir / "tiny-model", {"embed": [512, 64], "head": [512, 64]})
    (workdir / "sample_chat.jsonl").write_text((DATA / "sample_chat.jsonl").read_text())
    (workdir / "config.yml").write_text(yaml_text or (DATA / "tiny_cpu_demo.yml").read_text())
    return workdir


def test_describe_says_what_is_trained_in_one_line(tmp_path):
    workdir = demo_workdir(tmp_path)
    setup = DemoSetup.read(workdir, workdir / "config.yml")
    line = setup.describe()
    assert "\n" not in line
    assert line.startswith(
        "Training a tiny Llama (65,536 parameters: 2 layers, hidden 64, vocab 512) on 54 chat rows"
    )
    assert "15% held out for eval" in line and "for 3 epochs" in line
    assert "eps = 0.2 * u per row (linear from 0 at u=0 to 0.2 at u=1)" in line
    assert "(stopping after 4 steps)" in setup.describe(max_steps=4)


@pytest.mark.parametrize(
    ("keys", "rule"),
    [
        (
            {"ual_smoothing_min": 0.05, "ual_mapping": "power", "ual_mapping_power": 2},
            "0.05 + 0.15 * u^2",
        ),
        ({"ual_mapping": "rank"}, "0.2 * rank(u)"),
        ({"ual_uncertainty_source": "constant"}, "eps = 0.2 for every row"),
    ],
)
def test_epsilon_rule(tmp_path, keys, rule):
    from axolotl_ual.args import UALArgs

    setup = DemoSetup(tmp_path, {}, UALArgs(**{"ual_smoothing_max": 0.2, **keys}), [], {}, None)
    assert rule in setup.epsilon_rule()


def fake_axolotl(tmp_path: Path, lines: list[str], exit_code: int) -> Path:
    """An `axolotl` stand-in printing `lines` (as the real one does: stdout) and exiting."""
    script = tmp_path / "fake_axolotl.py"
    script.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import sys
            for line in {lines!r}:
                sys.stdout.write(line)
                sys.stdout.flush()
            sys.exit({exit_code})
            """
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_demo_run_with_a_stand_in_axolotl(tmp_path, monkeypatch, capsys):
    workdir = demo_workdir(tmp_path)
    monkeypatch.setattr(demo, "console_script", lambda name: str(fake_axolotl(tmp_path, CANNED, 0)))
    assert demo.run(Namespace(workdir=str(workdir), max_steps=None)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Training a tiny Llama (")
    assert out[1].startswith(f"Full log: {workdir / 'train.log'} (`axolotl train config.yml")
    progress_at = next(i for i, line in enumerate(out) if "step   1/3  loss 6.218" in line)
    finished_at = next(i for i, line in enumerate(out) if line.startswith("UAL demo finished in"))
    assert progress_at < finished_at
    assert not any("torchao" in line for line in out)
    assert any(line.startswith("  eval_ual_nll_low/mid/high: the unsmoothed NLL") for line in out)
    assert f"  plot: {workdir / 'ual_demo.png'} (" in "\n".join(out)
    assert (workdir / "ual_demo.png").read_bytes().startswith(PNG_MAGIC)
    log = (workdir / "train.log").read_bytes()
    assert "".join(CANNED).encode() in log  # axolotl's output, byte for byte


def test_a_rerun_in_the_same_demo_folder_works(tmp_path, monkeypatch, capsys):
    """The README's second run in the same folder: the demo's own files are replaced."""
    workdir = demo_workdir(tmp_path)
    monkeypatch.setattr(demo, "console_script", lambda name: str(fake_axolotl(tmp_path, CANNED, 0)))
    for _ in range(2):
        assert demo.run(Namespace(workdir=str(workdir), max_steps=None)) == 0
    assert "UAL demo finished in" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mine",
    [
        {"notes.txt": b"my notes"},  # a folder of the user's
        {"config.yml": b"base_model: my/model\n"},  # another config.yml
        {"config.yml": None, "train.log": b"my own training log\n"},  # a demo folder, but...
        {"config.yml": None, "ual_demo.png": b"not a png"},
        {"config.yml": None, "sample_chat.jsonl": b'{"text": "my data"}\n'},
    ],
    ids=["other-folder", "other-config", "other-log", "other-png", "other-data"],
)
def test_a_folder_the_demo_did_not_make_is_refused_untouched(tmp_path, monkeypatch, capsys, mine):
    workdir = tmp_path / "work"
    workdir.mkdir()
    demo_config = (DATA / "tiny_cpu_demo.yml").read_bytes()
    for name, content in mine.items():
        (workdir / name).write_bytes(demo_config if content is None else content)
    before = {p: p.read_bytes() for p in workdir.iterdir()}
    monkeypatch.setattr(demo, "console_script", lambda name: pytest.fail("axolotl was started"))
    assert demo.run(Namespace(workdir=str(workdir), max_steps=None)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --workdir {workdir}: ") and "\n" not in err
    assert {p: p.read_bytes() for p in workdir.iterdir()} == before


def test_the_bundled_config_is_recognised_as_the_demos():
    assert (DATA / "tiny_cpu_demo.yml").read_text().startswith(demo.CONFIG_HEADER)


def test_demo_failure_shows_the_log_tail_and_returns_axolotl_status(tmp_path, monkeypatch, capsys):
    workdir = demo_workdir(tmp_path)
    lines = [*CANNED[:4], "Traceback (most recent call last):\n", "ValueError: broken config\n"]
    monkeypatch.setattr(demo, "console_script", lambda name: str(fake_axolotl(tmp_path, lines, 3)))
    assert demo.run(Namespace(workdir=str(workdir), max_steps=None)) == 3
    err = capsys.readouterr().err
    assert "ValueError: broken config" in err
    assert err.rstrip().endswith(
        f"axolotl train failed (exit 3); full log: {workdir / 'train.log'}"
    )
    assert not (workdir / "ual_demo.png").exists()


def test_stream_hands_on_each_line_before_the_process_ends(tmp_path):
    """The child waits for a file that the callback writes on seeing its first line."""
    marker = tmp_path / "seen"
    child = textwrap.dedent(
        f"""
        import pathlib, sys, time
        print("first", flush=True)
        deadline = time.monotonic() + 30
        while not pathlib.Path({str(marker)!r}).exists():
            if time.monotonic() > deadline:
                sys.exit(9)
            time.sleep(0.01)
        print("second", flush=True)
        sys.exit(4)
        """
    )
    seen = []

    def on_line(line: str) -> None:
        seen.append(line)
        marker.touch()

    with open(tmp_path / "log", "wb") as log:
        code = stream(
            [sys.executable, "-c", child], cwd=REPO, env=offline_env(), log=log, on_line=on_line
        )
    assert code == 4
    assert seen == ["first\n", "second\n"]
    assert (tmp_path / "log").read_text() == "first\nsecond\n"
