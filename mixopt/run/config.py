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
from mixopt.core.experts import check_power, check_scale, check_seed_fraction
from mixopt.core.loader import from_dict, merge, parse_overrides, set_dotted
from mixopt.core.spec import ProxySpec, merge_overrides
from mixopt.run.target import HparamsConfig, TargetConfig, take_auto, validate_hparams, validate_target
from mixopt.search import DEFAULT_SEARCHER
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

    def cache_path(self) -> Path:
        """Where corpora and expert sets are cached: ``cache_dir``, else ``$MIXOPT_CACHE_DIR`` or ``~/.cache/mixopt``."""
        from mixopt.data import default_cache_dir

        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


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

    searcher: str = DEFAULT_SEARCHER
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
    trained, so it is not part of the proxy spec and may change on ``--resume``.

    ``synchronous``: ask the searcher for every worker's trials at once, and again only when all of
    them have reported, so that the same config and seed give the same trials and recommendation on
    every run (asynchronous, the default, asks whenever a worker is free: which trial finishes first
    decides what the searcher has seen, so repeated runs differ after the initial design). The cost:
    workers idle while a round's slowest trial finishes."""

    kind: str = "ray"
    workers: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    threads_per_worker: int = 1
    max_retries: int = 2
    address: str | None = None
    pack_size: int = 0
    synchronous: bool = False

    @property
    def device(self) -> str:
        """Where trials train: "auto" (CUDA when present) when workers ask for GPUs, else "cpu"."""
        return "auto" if self.num_gpus > 0 else "cpu"


@dataclass(frozen=True)
class SweepConfig:
    """A fixed set of mixtures trained at every rung of the scale ladder (``mixopt run`` trains
    the sweep before any searcher proposal): ``mixtures`` seeded Dirichlet draws, the named
    ``baselines`` (``uniform``, ``natural`` = proportional to available tokens) and ``custom``
    mixtures: {domain: weight} mappings, or mixture files (YAML/JSON: a mapping, or a document with a
    ``mixture``: ``recommendation.yaml``, ``mixopt infer-mixture --out``), which start the search there."""

    mixtures: int = 0
    baselines: list[str] = field(default_factory=list)
    custom: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class MergeConfig:
    """Model-merging proxies (``mixopt.proxies.merge``): ``candidates`` > 0 turns them on.

    A seed proxy (the study's ``proxy`` spec) trains on ``base`` (``natural``, ``uniform`` or a mixture
    {domain: weight}) for ``seed_fraction`` of the proxy's tokens; one expert per training domain then
    continues on that domain alone for the rest (one pack). ``seed_fraction: auto`` (the default) hands
    off as late as leaves the experts 150 optimizer steps, within 10-50 % of the schedule (0.5 up to 300
    steps, 0.9 from 1,500: :func:`mixopt.core.experts.resolve_seed_fraction`). Before any proposal,
    ``rounds`` screening rounds each score ``candidates`` mixtures by merging the experts (round 1:
    Dirichlet draws over the space; later rounds: draws around the best merged mixtures so far). Which
    of them are trained for real is the searcher's business (``merge_screen`` proposes the best merged
    ones; ``mfbo`` uses the merged scores as its cheapest fidelity). ``batch``: merged models per forward
    pass.
    ``eval_batches``: validation batches per domain a merged score is measured on (default: the
    proxy's; fewer cost less and are noisier). ``power`` and ``scale``: the merged model of mixture w is
    ``theta_seed + scale * sum_i c_i (theta_i - theta_seed)`` with ``c = w ** power / sum(w ** power)``;
    at ``scale`` 1 (the default) the weight average ``sum_i c_i theta_i`` of the experts, above 1 each
    expert's change from the seed scaled up. ``power`` 1 merges with the mixture's own weights; the
    default 0.5 flattens them (small weights count for more, as a little of a domain's data does in
    training): with it merged scores rank 32 random mixtures as dense-37k proxies trained on them do at
    Spearman 0.91-0.96 on both objectives of four sets, against 0.80-0.92 with power 1 (``mixopt
    merge-check --power``; the README has the figures, on which set it was chosen, and the others).

    ``branch``: every trained trial continues the seed on its mixture for the rest of the schedule
    instead of training from scratch (a *branch*, the seed's share of training shared), so it costs
    ``1 - seed_fraction`` of a proxy; with enough steps left to them they rank mixtures about as proxies
    trained from scratch do, with too few they do not (``mixopt merge-check --branch`` shows which on a
    proxy; the README has the figures). With ``candidates`` 0 only the seed is trained, no experts."""

    candidates: int = 0
    rounds: int = 1
    seed_fraction: float | str = "auto"
    base: Any = "natural"
    batch: int = 32
    eval_batches: int | None = None
    scale: float = 1.0
    power: float = 0.5
    branch: bool = False

    @property
    def enabled(self) -> bool:
        """Whether mixtures are screened by merging (the experts are trained)."""
        return self.candidates > 0

    @property
    def needs_seed(self) -> bool:
        """Whether the study trains (or reuses) a seed: to screen, or to branch its trials from."""
        return self.enabled or self.branch


@dataclass(frozen=True)
class StudyConfig:
    study: str = "mixopt-study"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxySpec = field(default_factory=ProxySpec)
    ladder: list[dict[str, Any]] = field(default_factory=list)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    objective: dict[str, Any] = field(default_factory=dict)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    tracking_uri: str | None = None
    output_dir: str = "mixopt-out"
    hparams: HparamsConfig = field(default_factory=HparamsConfig)  # where `lr: auto` / `batch_size: auto` come from
    target: TargetConfig = field(default_factory=TargetConfig)  # the big run (its run card)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def ladder_specs(self) -> list[ProxySpec]:
        """The scale ladder: each entry overrides ``proxy`` fields; sorted cheapest first
        (6 * N_active_non_embedding * tokens), so the last rung is the target."""
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


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None,
                flags: dict[str, tuple[Any, str]] | None = None) -> StudyConfig:
    """Load and validate a study config (YAML) and apply dotted overrides, then typed values.

    Args:
        path: the YAML file (None: the embedded defaults).
        overrides: ``--a.b=c`` strings (values read as YAML).
        flags: {dotted key: (value, the flag that gave it)}, e.g. ``{"budget.trials": (8, "--trials")}``:
            values a command line already parsed, applied last.
    Errors name the file, override or flag and the key, e.g. ``study.yaml: proxy.tokens: 'x' has the wrong type``.
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
    for key, (value, _) in (flags or {}).items():
        set_dotted(over, key, value, key)
    try:
        cfg = from_dict(StudyConfig, take_auto(merge(raw, over)))  # `auto` lr / batch_size: see mixopt.run.target
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{_blame(str(e), overrides or [], flags or {}, label)}: {e}") from None
    return cfg


def _blame(msg: str, overrides: list[str], flags: dict[str, tuple[Any, str]], label: str) -> str:
    """Where a config error comes from: the flag or override that set the key, else the file."""
    key = msg.split(":", 1)[0].strip()
    for fkey, (value, flag) in flags.items():
        if key == fkey or key.startswith(fkey + ".") or fkey.startswith(key + "."):
            return f"{flag} {value}"
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
    _validate_merge(cfg.merge)
    if cfg.merge.branch and cfg.ladder:
        raise ConfigError("merge.branch: not with a ladder (its rungs would branch from one seed of one size); "
                          "allowed: a study with one proxy")
    if cfg.merge.branch and cfg.proxy.online:
        raise ConfigError(f"merge.branch: not with proxy.online ({cfg.proxy.online!r}); a branch continues the "
                          "seed on a fixed mixture")
    validate_hparams(cfg.hparams)
    validate_target(cfg.target)
    e = cfg.executor
    if e.kind not in ("ray", "local"):
        raise ConfigError(f"executor.kind: {e.kind!r}; allowed: ray, local")
    if e.workers < 1 or e.threads_per_worker < 1 or e.max_retries < 0:
        raise ConfigError("executor: workers and threads_per_worker must be >= 1, max_retries >= 0")
    if e.pack_size < 0 or e.pack_size > 1024:
        raise ConfigError(f"executor.pack_size: {e.pack_size} must be in [0, 1024] (0: chosen by device and size)")
    if e.num_cpus < 0 or e.num_gpus < 0:
        raise ConfigError("executor: num_cpus and num_gpus must be >= 0")


def _validate_merge(m: MergeConfig) -> None:
    for key, lo in (("candidates", 0), ("rounds", 1), ("batch", 1)):
        if getattr(m, key) < lo:
            raise ConfigError(f"merge.{key}: {getattr(m, key)} must be >= {lo}")
    check_seed_fraction(m.seed_fraction)
    if m.eval_batches is not None and m.eval_batches < 1:
        raise ConfigError(f"merge.eval_batches: {m.eval_batches} must be >= 1")
    check_scale(m.scale)
    check_power(m.power)
    if not (m.base in ("natural", "uniform") or isinstance(m.base, dict)):
        raise ConfigError(f"merge.base: {m.base!r}; allowed: natural, uniform, or a mixture {{domain: weight}}")
    if not isinstance(m.branch, bool):
        raise ConfigError(f"merge.branch: {m.branch!r}; allowed: true or false")


def to_yaml(cfg: StudyConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
