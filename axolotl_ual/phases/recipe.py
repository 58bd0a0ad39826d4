"""The recipe file: what it may say, how it is checked, and the plan of phases it gives.

```yaml
base_config: base.yml            # an axolotl config every phase starts from
phases:
  - name: knowledge
    datasets: [{path: knowledge.jsonl, type: axolotl_ual.chat_template}]
    num_epochs: 2                # any axolotl key: it replaces the base config's value
  - name: skills
    datasets: [...]
    replay: {knowledge: {fraction: 0.2}}
```

`load_recipe` parses the recipe and its base config and checks everything that can be checked
before training: the schema (pydantic, unknown keys included), every phase key against axolotl's
own config schema and the plugins' keys, the replay sources, and each phase's resulting config
(datasets present, checkpoints saved, an eval split where a checkpoint is chosen by eval loss,
a LoRA phase never followed by full fine-tuning). All problems are reported at once, each naming
the phase and the key. Relative paths are resolved against the folder of the file that holds
them (the recipe, or the base config).
"""

from __future__ import annotations

import copy
import difflib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ..args import PLUGIN_PATH, UAL_ARGS_PATH
from ..compat import config_schema, plugin_input_args
from ..errors import UsageError
from .configs import ADAPTERS, BEST, eval_settings_problem, has_eval_split

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
PHASE_KEYS = ("name", "checkpoint", "replay", "split_by_uncertainty")
# set by the runner in every phase's config
MANAGED_KEYS = (
    "output_dir",
    "dataset_prepared_path",
    "resume_from_checkpoint",
    "auto_resume_from_checkpoints",
)
# set from the previous phase's result in every phase after the first
CHAINED_KEYS = ("base_model", "base_model_config", "tokenizer_config", "lora_model_dir")
# values that name a file or folder (resolved against the folder of the file that holds them)
PATH_KEYS = (
    "base_model",
    "base_model_config",
    "tokenizer_config",
    "lora_model_dir",
    "deepspeed",
    "ual_uncertainty_file",
)
DATASET_KEYS = ("datasets", "test_datasets")
DATA_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".csv", ".arrow", ".txt")
# plugins whose config keys are known without importing them (what their get_input_args says)
KNOWN_PLUGIN_ARGS = {PLUGIN_PATH: UAL_ARGS_PATH}


# --------------------------------------------------------------------------- schema


class Share(BaseModel):
    """How much of an earlier phase's data to replay: a fraction of its rows, or a count."""

    model_config = ConfigDict(extra="forbid")

    fraction: float | None = Field(default=None, gt=0, le=1)
    count: StrictInt | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.fraction is None) == (self.count is None):
            raise ValueError("give exactly one of fraction (0 < fraction <= 1) or count (>= 1)")
        return self

    def describe(self) -> str:
        return f"fraction {self.fraction:g}" if self.fraction is not None else f"count {self.count}"


class Split(BaseModel):
    """`split_by_uncertainty`: one phase becomes one phase per uncertainty bucket, low u first."""

    model_config = ConfigDict(extra="forbid")

    field: str = "uncertainty"
    boundaries: list[float] | None = None
    quantiles: StrictInt | None = Field(default=None, ge=2)
    missing: Literal["error", "first", "last"] = "error"
    replay: Share | None = None

    @field_validator("boundaries")
    @classmethod
    def _increasing(cls, value):
        if value is None:
            return value
        if not value:
            raise ValueError("give at least one boundary")
        if any(not 0 < b < 1 for b in value):
            raise ValueError(f"every boundary must be inside (0, 1), got {value}")
        if any(a >= b for a, b in itertools.pairwise(value)):
            raise ValueError(f"boundaries must increase strictly, got {value}")
        return value

    @model_validator(mode="after")
    def _one_rule(self):
        if (self.boundaries is None) == (self.quantiles is None):
            raise ValueError(
                "give exactly one of boundaries (e.g. [0.33, 0.67]) or quantiles (e.g. 3)"
            )
        return self

    @property
    def buckets(self) -> int:
        return len(self.boundaries) + 1 if self.boundaries is not None else self.quantiles


class PhaseSpec(BaseModel):
    """One phase as written: its own keys, and any axolotl key (kept in `model_extra`)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=NAME_PATTERN)
    checkpoint: Literal["best_eval_loss", "last"] | None = None
    replay: dict[str, Share] = Field(default_factory=dict)
    split_by_uncertainty: Split | None = None

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RecipeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_config: str
    work_dir: str | None = None
    replay_seed: StrictInt = 42
    checkpoint: Literal["best_eval_loss", "last"] = BEST
    # how each `axolotl train` starts: accelerate (axolotl's default, multi-GPU capable) or
    # python (one process, without accelerate's own start-up: faster on a CPU or one GPU)
    launcher: Literal["accelerate", "python"] = "accelerate"
    phases: list[PhaseSpec] = Field(min_length=1)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Bucket:
    """The `number`-th of a split phase's uncertainty buckets (1 = lowest u)."""

    number: int
    split: Split


@dataclass(frozen=True)
class ReplaySource:
    """Replay `share` of the data of `plans` (one phase, or every bucket of a split phase)."""

    written: str  # the name as the recipe writes it
    plans: tuple[str, ...]
    share: Share


@dataclass
class PhasePlan:
    """One `axolotl train` run of the recipe."""

    index: int  # 1-based position in the run
    name: str
    source: str  # the recipe phase it comes from (its own name unless split)
    checkpoint: str  # best_eval_loss | last
    config: dict[str, Any]  # base config + the phase's keys, paths absolute
    replay: list[ReplaySource] = field(default_factory=list)
    bucket: Bucket | None = None

    @property
    def dirname(self) -> str:
        return f"{self.index:02d}-{self.name}"

    @property
    def adapter(self) -> str | None:
        adapter = self.config.get("adapter")
        return adapter if adapter in ADAPTERS else None


@dataclass
class Recipe:
    path: Path
    spec: RecipeSpec
    base_path: Path
    base: dict[str, Any]  # the base config, paths absolute
    work_dir: Path
    plans: list[PhasePlan]
    raw: dict[str, Any]  # the recipe as parsed (its fingerprint)
    raw_base: dict[str, Any]  # the base config as parsed
    warnings: list[str] = field(default_factory=list)

    def plan(self, name: str) -> PhasePlan:
        return next(p for p in self.plans if p.name == name)


# --------------------------------------------------------------------------- loading

KeySource = Callable[[Iterable[str]], frozenset[str]]


def load_recipe(
    path: str | Path, *, work_dir: str | Path | None = None, known_keys: KeySource | None = None
) -> Recipe:
    """Parse and check a recipe; raise `UsageError` listing every problem found.

    `known_keys(plugins)` gives the axolotl config keys a phase may set (default: axolotl's
    schema plus the plugins' keys, see `axolotl_keys`); tests pass a small set instead.
    """
    path = Path(path).resolve()
    raw = _read_yaml(path, "recipe")
    try:
        spec = RecipeSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [_pydantic_problem(e, raw) for e in exc.errors()]
        raise UsageError(_problems(path, problems)) from None

    base_path = (path.parent / spec.base_config).resolve()
    raw_base = _read_yaml(base_path, "base config (base_config)")
    base = absolute_paths(raw_base, base_path.parent)
    problems: list[str] = []
    warnings: list[str] = []
    for key in ("resume_from_checkpoint", "auto_resume_from_checkpoints"):
        if raw_base.get(key):
            problems.append(
                f"base config {base_path.name}: {key}: the phases runner resumes phases "
                "itself; remove it"
            )

    plugins = list(base.get("plugins") or [])
    for phase in spec.phases:
        plugins.extend(phase.overrides.get("plugins") or [])
    keys = (known_keys or axolotl_keys)(plugins)
    unknown_base = sorted(k for k in raw_base if k not in keys)
    if unknown_base:
        warnings.append(
            f"base config {base_path.name}: keys axolotl does not know (it ignores them): "
            + ", ".join(unknown_base)
        )

    for number, phase in enumerate(spec.phases, 1):
        where = f"phase {number} {phase.name!r}"
        for key in phase.overrides:
            if key in MANAGED_KEYS:
                problems.append(f"{where}: {key}: set by the phases runner; remove it")
            elif key in CHAINED_KEYS and number > 1:
                problems.append(
                    f"{where}: {key}: every phase after the first starts from the previous "
                    "phase's checkpoint, which sets this key; set it in the base config or "
                    "the first phase"
                )
            elif key not in keys:
                problems.append(f"{where}: unknown key {key!r}: " + _unknown_hint(key, keys))

    plans = _expand(spec, base, path.parent, problems)
    _check_plans(plans, problems)
    if problems:
        raise UsageError(_problems(path, problems))
    if work_dir is None:
        work_dir = path.parent / spec.work_dir if spec.work_dir else _default_work_dir(path)
    return Recipe(
        path=path,
        spec=spec,
        base_path=base_path,
        base=base,
        work_dir=Path(work_dir).resolve(),
        plans=plans,
        raw=raw,
        raw_base=raw_base,
        warnings=warnings,
    )


def _default_work_dir(path: Path) -> Path:
    return path.parent / f"{path.stem}-run"


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {str(path)!r}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the {what} must be a YAML mapping, got {type(data).__name__}")
    return data


def axolotl_keys(plugins: Iterable[str]) -> frozenset[str]:
    """Top-level keys axolotl's config schema knows, plus each plugin's own keys."""
    import importlib

    models = [config_schema()]
    for dotted in dict.fromkeys(str(p) for p in plugins):
        try:
            # ours are known without importing the plugin (and torch)
            args_path = KNOWN_PLUGIN_ARGS.get(dotted) or plugin_input_args(dotted)
            if args_path:
                args_module, _, args_class = args_path.rpartition(".")
                models.append(getattr(importlib.import_module(args_module), args_class))
        except Exception as exc:  # noqa: BLE001 - any failure: the plugin cannot be loaded
            raise UsageError(
                f"plugins: cannot load {dotted!r} to learn its config keys: "
                f"{type(exc).__name__}: {exc}"
            ) from None
    keys: set[str] = set()
    for model in models:
        for name, info in model.model_fields.items():
            keys.add(name)
            if isinstance(info.alias, str):
                keys.add(info.alias)
    return frozenset(keys)


def _unknown_hint(key: str, keys: frozenset[str]) -> str:
    hint = f"neither a phase key ({', '.join(PHASE_KEYS)}) nor an axolotl config key"
    close = difflib.get_close_matches(key, [*PHASE_KEYS, *keys], n=1, cutoff=0.75)
    return hint + (f"; did you mean {close[0]!r}?" if close else "")


def _pydantic_problem(error: dict, raw: dict) -> str:
    loc = list(error["loc"])
    head = "recipe"
    if len(loc) >= 2 and loc[0] == "phases" and isinstance(loc[1], int):
        phases = raw.get("phases") or []
        entry = phases[loc[1]] if loc[1] < len(phases) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        head = f"phase {loc[1] + 1}" + (f" {name!r}" if name else "")
        loc = loc[2:]
    key = ".".join(str(part) for part in loc)
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        allowed = ", ".join(RecipeSpec.model_fields) if head == "recipe" else None
        text = "unknown key" + (f" (recipe keys: {allowed})" if allowed else "")
    elif kind == "missing":
        text = "required"
    elif kind == "value_error":
        text = message.removeprefix("Value error, ")
    else:
        text = f"{message[:1].lower()}{message[1:]} (got {error.get('input')!r})"
    return f"{head}: {key}: {text}" if key else f"{head}: {text}"


def _problems(path: Path, problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"recipe {path}: {len(problems)} problem(s):\n{lines}"


# --------------------------------------------------------------------------- paths


def absolute_paths(cfg: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`cfg` with relative paths that exist under `folder` made absolute (hub names stay)."""
    cfg = copy.deepcopy(cfg)
    for key in PATH_KEYS:
        if cfg.get(key) is not None:
            cfg[key] = _absolute(cfg[key], folder)
    for key in DATASET_KEYS:
        entries = cfg.get(key)
        if isinstance(entries, list):
            cfg[key] = [_absolute_entry(e, folder) for e in entries]
    return cfg


def _absolute(value: Any, folder: Path) -> Any:
    if isinstance(value, list):
        return [_absolute(v, folder) for v in value]
    if not isinstance(value, str) or not value or Path(value).is_absolute():
        return value
    candidate = folder / value
    return str(candidate.resolve()) if candidate.exists() else value


def _absolute_entry(entry: Any, folder: Path) -> Any:
    if not isinstance(entry, dict):
        return entry
    entry = dict(entry)
    for key in ("path", "data_files"):
        if key in entry:
            entry[key] = _absolute(entry[key], folder)
    return entry


# --------------------------------------------------------------------------- expansion


def _expand(
    spec: RecipeSpec, base: dict[str, Any], recipe_dir: Path, problems: list[str]
) -> list[PhasePlan]:
    """One plan per phase, or per uncertainty bucket of a split phase, in training order."""
    plans: list[PhasePlan] = []
    groups: dict[str, tuple[str, ...]] = {}  # recipe phase name -> its plans' names
    for number, phase in enumerate(spec.phases, 1):
        where = f"phase {number} {phase.name!r}"
        config = {**base, **absolute_paths(phase.overrides, recipe_dir)}
        config = {k: v for k, v in config.items() if v is not None}  # `key: null` removes it
        sources = []
        for written, share in phase.replay.items():
            if written in groups:
                sources.append(ReplaySource(written, groups[written], share))
            elif written in {p.name for p in plans}:
                sources.append(ReplaySource(written, (written,), share))
            elif written == phase.name:
                problems.append(f"{where}: replay.{written}: a phase cannot replay itself")
            else:
                later = any(p.name == written for p in spec.phases)
                problems.append(
                    f"{where}: replay.{written}: "
                    + (
                        "that phase comes later; only earlier phases can be replayed"
                        if later
                        else f"no earlier phase is called {written!r} (earlier: "
                        f"{', '.join(p.name for p in plans) or 'none'})"
                    )
                )
        checkpoint = phase.checkpoint or spec.checkpoint
        split = phase.split_by_uncertainty
        if split is None:
            names = [phase.name]
        else:
            names = [f"{phase.name}-{i}" for i in range(1, split.buckets + 1)]
        for i, name in enumerate(names, 1):
            replay = list(sources)
            if split is not None and split.replay is not None and i > 1:
                replay += [ReplaySource(n, (n,), split.replay) for n in names[: i - 1]]
            plans.append(
                PhasePlan(
                    index=len(plans) + 1,
                    name=name,
                    source=phase.name,
                    checkpoint=checkpoint,
                    config=copy.deepcopy(config),
                    replay=replay,
                    bucket=Bucket(i, split) if split is not None else None,
                )
            )
        groups[phase.name] = tuple(names)
    seen: dict[str, int] = {}
    for plan in plans:
        if plan.name in seen:
            problems.append(
                f"phase {plan.name!r}: the name is used twice (phases {seen[plan.name]} and "
                f"{plan.index} of the run; a split phase 'x' makes phases 'x-1', 'x-2', ...)"
            )
        seen.setdefault(plan.name, plan.index)
    return plans


def _missing_file(path: str) -> bool:
    """A path that names a local data file (by its extension) which is not there."""
    return Path(path).suffix.lower() in DATA_SUFFIXES and not Path(path).exists()


def _check_plans(plans: list[PhasePlan], problems: list[str]) -> None:
    """What each phase's resulting config must satisfy."""
    previous: PhasePlan | None = None
    for plan in plans:
        where = f"phase {plan.name!r}"
        cfg = plan.config
        datasets = cfg.get("datasets")
        if not isinstance(datasets, list) or not datasets:
            problems.append(f"{where}: datasets: no datasets (set them in the phase or the base)")
        else:
            for i, entry in enumerate(datasets):
                if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                    problems.append(f"{where}: datasets[{i}]: each entry needs a `path`")
        for key in DATASET_KEYS:
            for i, entry in enumerate(cfg.get(key) or []):
                path = entry.get("path") if isinstance(entry, dict) else None
                if isinstance(path, str) and _missing_file(path):
                    problems.append(
                        f"{where}: {key}[{i}].path: no file {path!r} (relative paths are "
                        "resolved against the folder of the recipe or base config that names them)"
                    )
        if str(cfg.get("save_strategy")).lower() == "no":
            problems.append(
                f"{where}: save_strategy: 'no': every phase must save checkpoints (to resume "
                "and to hand one on); use steps or epoch"
            )
        if plan.checkpoint == BEST:
            if not has_eval_split(cfg):
                problems.append(
                    f"{where}: checkpoint: best_eval_loss needs an evaluation split "
                    "(val_set_size > 0 or test_datasets, and evaluation not turned off); "
                    "or set checkpoint: last"
                )
            else:
                problem = eval_settings_problem(cfg)
                if problem:
                    problems.append(f"{where}: checkpoint: best_eval_loss: {problem}")
        if previous is not None and previous.adapter and not plan.adapter:
            problems.append(
                f"{where}: adapter: this phase fine-tunes all weights but the previous phase "
                f"{previous.name!r} trained a {previous.adapter} adapter, which would first "
                "have to be merged into the weights (`axolotl merge-lora`); make this phase a "
                "LoRA phase too, or end the recipe and start a new one from the merged model"
            )
        previous = plan
