"""Study configuration: frozen dataclasses loaded from YAML plus ``--a.b=c`` overrides.

Every key is checked against the dataclass fields and their types; any mistake raises one
:class:`~mixopt.core.errors.ConfigError` naming the file, the dotted key, the value and what is
allowed. Nothing is prepared, trained or written before the config validates.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixopt.core.errors import ConfigError
from mixopt.core.loader import from_dict, merge, parse_overrides
from mixopt.core.spec import ProxySpec, merge_overrides
from mixopt.study.storage import default_tracking_uri


@dataclass(frozen=True)
class DataConfig:
    """Corpus: a built-in recipe (``pip`` or ``debian``) or a folder with one subfolder per domain."""

    recipe: str = "pip"
    tokenizer: str = "bpe"
    vocab_size: int = 4096
    max_mb_per_domain: float = 4.0
    val_fraction: float = 0.05
    cache_dir: str | None = None


@dataclass(frozen=True)
class SpaceConfig:
    """Feasible mixtures: floors/caps per domain and the repetition cap.

    ``target_tokens`` is the token budget of the big run the mixture is for; with
    ``max_epochs`` it caps ``p_j <= max_epochs * tokens_j / target_tokens``. Proxies are held
    to the same cap for their own budget.
    """

    floors: dict[str, float] = field(default_factory=dict)
    caps: dict[str, float] = field(default_factory=dict)
    max_epochs: float = 4.0
    target_tokens: float | None = None


@dataclass(frozen=True)
class SearchConfig:
    """Searcher by name, its options, and the random initial design before it."""

    searcher: str = "regmix"
    options: dict[str, Any] = field(default_factory=dict)
    n_init: int = 8


@dataclass(frozen=True)
class BudgetConfig:
    """When the study stops: after ``trials`` trials, or ``flops`` proxy FLOPs, or ``wall_seconds``."""

    trials: int = 32
    flops: float | None = None
    wall_seconds: float | None = None


@dataclass(frozen=True)
class ExecutorConfig:
    """How trials run. ``ray``: Ray tasks (local Ray unless ``address`` / ``RAY_ADDRESS``);
    ``local``: in this process, one at a time.

    ``pack_size``: trials of one architecture trained together as one batched pack per task
    (``mixopt.proxies.pack_train``; each trial keeps its own mixture, seed, data, optimizer and
    losses): 1 trains one proxy per task; 0 (default) picks by device and size
    (:func:`mixopt.run.loop.auto_pack_size`). It decides how trials are scheduled, not what is
    trained, so it is not part of the proxy spec and may change on ``--resume``."""

    kind: str = "ray"
    workers: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    threads_per_worker: int = 1
    max_retries: int = 2
    address: str | None = None
    pack_size: int = 0


@dataclass(frozen=True)
class SweepConfig:
    """A fixed set of mixtures trained at every rung of the scale ladder (``mixopt run`` trains
    the sweep before any searcher proposal): ``mixtures`` seeded Dirichlet draws, the named
    ``baselines`` (``uniform``, ``natural`` = proportional to available tokens) and ``custom``
    mixtures ({domain: weight} mappings)."""

    mixtures: int = 0
    baselines: list[str] = field(default_factory=list)
    custom: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class StudyConfig:
    study: str = "mixopt-study"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxySpec = field(default_factory=ProxySpec)
    ladder: list[dict[str, Any]] = field(default_factory=list)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    objective: dict[str, Any] = field(default_factory=dict)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    tracking_uri: str | None = None
    output_dir: str = "mixopt-out"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def ladder_specs(self) -> list[ProxySpec]:
        """The scale ladder: each entry overrides ``proxy`` fields; sorted cheapest first
        (6 * N_active_non_embedding * tokens), so the last rung is the target fidelity."""
        specs = []
        for i, entry in enumerate(self.ladder):
            if not isinstance(entry, dict):
                raise ConfigError(f"ladder[{i}]: must be a mapping of proxy fields, got {entry!r}")
            specs.append(from_dict(ProxySpec, merge_overrides(self.proxy.to_dict(), entry), f"ladder[{i}]"))
        if len(set(specs)) != len(specs):
            raise ConfigError("ladder: two rungs are the same proxy spec")
        return sorted(specs, key=lambda s: 6 * s.active_non_embedding_params() * s.tokens)

    def resolved_tracking_uri(self) -> str:
        """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in the working folder."""
        return self.tracking_uri or default_tracking_uri()


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> StudyConfig:
    """Load and validate a study config (YAML) and apply dotted overrides.

    Errors name the file and key, e.g. ``study.yaml: proxy.tokens: 'x' has the wrong type``.
    """
    raw: dict[str, Any] = {}
    label = str(path) if path else "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{label}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{label}:{at}: not valid YAML ({getattr(e, 'problem', e)})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{label}: cannot read ({e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{label}: top level must be a mapping of study settings")
    over = parse_overrides(overrides or [])  # its errors name the override
    try:
        cfg = from_dict(StudyConfig, merge(raw, over))
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{_blame(str(e), overrides or [], label)}: {e}") from None
    return cfg


def _blame(msg: str, overrides: list[str], label: str) -> str:
    """Where a config error comes from: the override that set the key, else the file."""
    key = msg.split(":", 1)[0].strip()
    for i, a in enumerate(overrides):
        if not a.startswith("--"):
            continue
        okey = a[2:].split("=", 1)[0]
        if key == okey or key.startswith(okey + ".") or key.startswith(okey + "[") or okey.startswith(key + "."):
            value = a.split("=", 1)[1] if "=" in a else (overrides[i + 1] if i + 1 < len(overrides) else "")
            return f"override --{okey}={value}"
    return label


def validate(cfg: StudyConfig) -> None:
    """Cross-field checks that the dataclass types cannot express."""
    if not cfg.study or any(c in cfg.study for c in "/\\\n"):
        raise ConfigError(f"study: {cfg.study!r} must be a non-empty name without slashes")
    cfg.ladder_specs()
    d = cfg.data
    if d.tokenizer not in ("bpe", "bytes"):
        raise ConfigError(f"data.tokenizer: {d.tokenizer!r}; allowed: bpe, bytes")
    if d.tokenizer == "bpe" and not (258 <= d.vocab_size <= 65535):
        raise ConfigError(f"data.vocab_size: {d.vocab_size} must be in [258, 65535]")
    if not (0 < d.max_mb_per_domain <= 10_000):
        raise ConfigError(f"data.max_mb_per_domain: {d.max_mb_per_domain} must be in (0, 10000]")
    if not (0 < d.val_fraction <= 0.5):
        raise ConfigError(f"data.val_fraction: {d.val_fraction} must be in (0, 0.5]")
    if cfg.space.max_epochs <= 0:
        raise ConfigError(f"space.max_epochs: {cfg.space.max_epochs} must be > 0")
    if cfg.space.target_tokens is not None and cfg.space.target_tokens <= 0:
        raise ConfigError(f"space.target_tokens: {cfg.space.target_tokens} must be > 0")
    s = cfg.search
    if s.n_init < 0:
        raise ConfigError(f"search.n_init: {s.n_init} must be >= 0")
    sw = cfg.sweep
    if sw.mixtures < 0:
        raise ConfigError(f"sweep.mixtures: {sw.mixtures} must be >= 0")
    for i, name in enumerate(sw.baselines):
        if name not in ("uniform", "natural"):
            raise ConfigError(f"sweep.baselines[{i}]: {name!r}; allowed: uniform, natural")
    b = cfg.budget
    if b.trials < 1:
        raise ConfigError(f"budget.trials: {b.trials} must be >= 1")
    for k in ("flops", "wall_seconds"):
        v = getattr(b, k)
        if v is not None and v <= 0:
            raise ConfigError(f"budget.{k}: {v} must be > 0")
    e = cfg.executor
    if e.kind not in ("ray", "local"):
        raise ConfigError(f"executor.kind: {e.kind!r}; allowed: ray, local")
    if e.workers < 1 or e.threads_per_worker < 1 or e.max_retries < 0:
        raise ConfigError("executor: workers and threads_per_worker must be >= 1, max_retries >= 0")
    if e.pack_size < 0 or e.pack_size > 1024:
        raise ConfigError(f"executor.pack_size: {e.pack_size} must be in [0, 1024] (0: chosen by device and size)")
    if e.num_cpus < 0 or e.num_gpus < 0:
        raise ConfigError("executor: num_cpus and num_gpus must be >= 0")


def to_yaml(cfg: StudyConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
