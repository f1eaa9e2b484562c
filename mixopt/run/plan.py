"""StudyPlan: everything ``mixopt run`` needs, checked and built once from the config.

:meth:`StudyPlan.build` checks all that can be checked before any data is prepared or anything
is written, and keeps what it built: the searcher (with its options), the recipe's domain names,
the objective and the training domains, the floors and caps over them, the ladder, the sweep's
own mixtures (mixture files read), whether the study exists. Then :meth:`open_corpus`,
:meth:`build_space` (the bounds with the repetition cap of the data) and :meth:`open_study` do the
work, each once, from those. ``mixopt run``, ``mixopt transfer`` and ``mixopt merge-check`` all go
through it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixopt import search
from mixopt.core.errors import (
    AlreadyExistsError,
    BudgetError,
    ConfigError,
    DataError,
    NotFoundError,
    SpaceError,
    UserError,
)
from mixopt.core.experts import resolve_seed_fraction
from mixopt.core.loader import from_dict
from mixopt.core.meta import StudyMeta
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.core.names import DOMAIN_NAME
from mixopt.core.objective import Objective
from mixopt.core.spec import ENGINE_ONLINE_KEYS, ProxySpec, upgrade_stored_spec
from mixopt.data import Corpus, prepare_corpus, resolve_recipe
from mixopt.online import make_mixer
from mixopt.run.config import StudyConfig
from mixopt.run.target import check_target_domains, unresolved
from mixopt.search import Searcher
from mixopt.search.dirichlet import sample
from mixopt.study import Storage, Study, create_study, get_storage, load_study

RESUMABLE = ("budget", "executor", "tracking_uri", "output_dir", "hparams", "target")  # hparams: its numbers are in proxy


def _custom(i: int, m: Any, train: list[str], objective: Objective) -> tuple[str, Mixture]:
    """A sweep's own mixture: a mapping, or a mixture file (its weight on held-out targets dropped)."""
    where = f"sweep.custom[{i}]"
    if isinstance(m, str):
        return Path(m).stem or f"custom{i}", Mixture.from_file(m, train, f"{where} ({m})", held_out=objective.targets)
    return f"custom{i}", Mixture(m, train, where=where)  # finite, >= 0, sums to 1, names training domains


def _check_online(spec: ProxySpec, train: list[str], where: str) -> None:
    """An online mixer named in a proxy spec can be built over the training domains with its options."""
    if not spec.online:
        return
    spec.online_eval_sequences(where)  # the engine's keys, checked
    opts = {k: v for k, v in spec.online_config().items() if k not in ENGINE_ONLINE_KEYS}
    if spec.online == "doremi" and not isinstance(opts.get("reference"), dict):
        raise ConfigError(f"{where}.online_options.reference: DoReMi in the engine needs the reference model's "
                          "per-domain losses, {domain: loss} (e.g. a trained uniform trial's losses)")
    try:
        make_mixer(spec.online, train, **opts)
    except UserError as e:
        raise ConfigError(f"{where}.online: {e}") from None


def log(msg: str) -> None:
    """Progress lines go to stderr (stdout carries the summary table)."""
    print(msg, file=sys.stderr, flush=True)


@dataclass
class StudyPlan:
    """A validated study config with what was derived from it.

    Attributes:
        cfg: the config.
        domains: the recipe's domain names (sorted).
        objective: the objective over ``domains``.
        train_domains: what a mixture may weight: ``domains`` less the objective's held-out targets.
        bounds: floors and caps over ``train_domains`` (the space before the data's repetition cap).
        searcher: the study's searcher, built (and its options checked) once.
        custom: the sweep's own (label, mixture) pairs, checked (files read).
        ladder: the scale ladder (cheapest first; empty for a single-scale study).
        resume: whether an existing study is continued.
        storage: the study's store, opened once (created on first use for a new study).
    """

    cfg: StudyConfig
    domains: list[str]
    objective: Objective
    train_domains: list[str]
    bounds: MixtureSpace
    searcher: Searcher
    custom: list[tuple[str, Mixture]]
    ladder: list[ProxySpec]
    resume: bool = False
    _storage: Storage | None = field(default=None, repr=False)

    # --- checks before anything is written -------------------------------------------------
    @classmethod
    def build(cls, cfg: StudyConfig, *, resume: bool = False, storage: Storage | None = None,
              check_exists: bool = True, source: str | None = None) -> StudyPlan:
        """Check the config against the recipe and the store; nothing is prepared or written.

        Args:
            source: the config file's name, to prefix the errors found in the config with.
        Raises:
            ConfigError, DataError, SpaceError, MixtureError, UserError: one line saying what is
            wrong, where, and what is allowed.
        """
        try:
            plan = cls._checked(cfg, resume, storage)
        except UserError as e:
            if source and not str(e).startswith(str(source)):
                raise type(e)(f"{source}: {e}") from None
            raise
        if check_exists:  # the path to training: `auto` hyperparameters must have their numbers by now
            left = unresolved(cfg.hparams)
            if left:
                raise ConfigError(f"{source + ': ' if source else ''}{left[0]}: auto is not resolved; resolve the "
                                  "config with mixopt.analysis.autohp.resolve_config (the command line does)")
            plan._check_exists()
        return plan

    @classmethod
    def _checked(cls, cfg: StudyConfig, resume: bool, storage: Storage | None) -> StudyPlan:
        searcher = search.get_searcher(cfg.search.searcher, cfg.search.options)
        cache = cfg.data.cache_path()
        _, key, sources = resolve_recipe(cfg.data.recipe, cache)
        if key not in ("pip", "debian"):
            for src in sources:
                src.fingerprint()  # lists the folder: a missing or empty domain fails here, not mid-way
        names = sorted(s.name for s in sources)
        for n in names:
            if not DOMAIN_NAME.fullmatch(n):
                raise DataError(f"data.recipe: domain name {n!r} (a folder name) may only use letters, digits, "
                                "'_', '.' and '-' (it names MLflow params and metrics); rename the folder")
        objective = Objective.from_config(cfg.objective, names)
        train = objective.training_domains(names)
        bounds = MixtureSpace.build(train, floors=cfg.space.floors, caps=cfg.space.caps)
        custom = [_custom(i, m, train, objective) for i, m in enumerate(cfg.sweep.custom)]
        check_target_domains(cfg.target, names)
        ladder = cfg.ladder_specs()
        for where, spec in [("proxy", cfg.proxy), *((f"ladder[{i}]", r) for i, r in enumerate(ladder))]:
            _check_online(spec, train, where)
        return cls(cfg, names, objective, train, bounds, searcher, custom, ladder, resume, storage)

    def _check_exists(self) -> None:
        cfg = self.cfg
        exists = self._study_exists()
        if exists and not self.resume:
            raise AlreadyExistsError(f"study {cfg.study!r} already exists in {self.where}; "
                                     "pass --resume to continue it, or set --study=NEW_NAME")
        if self.resume and not exists:
            raise NotFoundError(f"--resume: no study {cfg.study!r} in {self.where} to resume")
        if self.resume:
            self._check_resume(self.storage().load_meta(cfg.study))

    @property
    def where(self) -> str:
        return self._storage.uri if self._storage is not None else self.cfg.resolved_tracking_uri()

    def _study_exists(self) -> bool:
        """Whether the store holds the study, without creating a SQLite database that isn't there."""
        if self._storage is None:
            uri = self.cfg.resolved_tracking_uri()
            if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
                return False
        return self.storage(create=False).load_meta(self.cfg.study) is not None

    def _check_resume(self, meta: StudyMeta | None) -> None:
        """On --resume only the budget, executor and output settings may change."""
        stored = meta.extra.get("config") if meta is not None else None
        if not stored:
            return
        proxy, hint = stored.get("proxy"), ""
        if isinstance(proxy, dict) and "mup_output_mult" not in proxy:  # stored before muP's read-out multiplier
            stored = {**stored, "proxy": upgrade_stored_spec(proxy)}  # was a key: muP trained with alpha 1
            if proxy.get("parametrization") != "mup" and isinstance(stored.get("ladder"), list):
                stored["ladder"] = [{**r, "mup_output_mult": 1.0}  # a muP rung over a standard proxy too
                                    if isinstance(r, dict) and r.get("parametrization") == "mup"
                                    and "mup_output_mult" not in r else r for r in stored["ladder"]]
            if stored != meta.extra.get("config"):
                hint = ("; its muP proxies were created before proxy.mup_output_mult existed and trained with "
                        "alpha 1: set mup_output_mult: 1 where parametrization: mup is")
        merge = stored.get("merge")
        if isinstance(merge, dict) and "power" not in merge:  # stored before merge.power: merged with w itself
            stored = {**stored, "merge": {**merge, "power": 1.0}}
        try:  # read back as a config: keys added since the study was created take their defaults
            stored = from_dict(StudyConfig, stored).to_dict()
        except UserError:
            pass  # compare as stored
        now = json.loads(json.dumps(self.cfg.to_dict(), default=str))
        stored = json.loads(json.dumps(stored, default=str))
        for d in (now, stored):
            d.get("data", {}).pop("cache_dir", None)
            _merge_as_used(d, self.ladder[-1] if self.ladder else self.cfg.proxy)  # the experts' proxy
        diff = sorted(k for k in set(now) | set(stored) if k not in RESUMABLE and now.get(k) != stored.get(k))
        hint = hint if {"proxy", "ladder"} & set(diff) else ""
        was, cur = stored.get("merge") or {}, now.get("merge") or {}
        keep = [f"merge.{k}: {was[k]}" for k in ("seed_fraction", "scale", "power")
                if "merge" in diff and None not in (was.get(k), cur.get(k)) and was[k] != cur[k]]
        if keep:  # the defaults changed (seed_fraction 0.5 -> auto, scale 1.25 -> 1, power 1 -> 0.5)
            hint += f"; its merged scores and experts came from other merge settings: set {', '.join(keep)} to continue it"
        if diff:
            raise UserError(f"--resume: study {self.cfg.study!r} was created with other {', '.join(diff)} settings; "
                            f"on resume only {', '.join(RESUMABLE)} may change (start a new study for the rest){hint}")

    def storage(self, create: bool = True) -> Storage:
        """The study's store, opened once."""
        if self._storage is None:
            self._storage = get_storage(self.cfg.resolved_tracking_uri(), create=create)
        return self._storage

    # --- the work ------------------------------------------------------------------------------
    def open_corpus(self, progress: Callable[[str], None] = log) -> Corpus:
        """Prepare (or reuse the cached) corpus and check every domain holds a window at every rung."""
        d = self.cfg.data
        corpus = prepare_corpus(d.recipe, tokenizer=d.tokenizer, vocab_size=d.vocab_size,
                                max_bytes_per_domain=int(d.max_mb_per_domain * 1_000_000),
                                val_fraction=d.val_fraction, cache_dir=d.cache_dir, seed=self.cfg.seed,
                                progress=progress)
        if corpus.verify_once():  # sha256 of every shard, once per corpus (again if a shard changes)
            progress(f"corpus {corpus.path}: shards verified against their sha256")
        need = max([self.cfg.proxy.seq_len] + [s.seq_len for s in self.ladder]) + 1
        for split in ("train", "val"):
            for dom, n in corpus.token_counts(split).items():
                if n < need:
                    raise DataError(f"data: domain {dom!r} has {n} {split} tokens, fewer than one window of "
                                    f"seq_len + 1 = {need}; add documents to it, raise data.val_fraction, or "
                                    "lower proxy.seq_len")
        return corpus

    def build_space(self, tokens: dict[str, int], proxy_tokens: int | None = None) -> MixtureSpace:
        """The study's space: :attr:`bounds` with the repetition cap at the larger of the proxies' tokens
        (``proxy_tokens``, default: the most any proxy or rung of the config trains on) and
        ``space.target_tokens``, and the natural mixture of ``tokens`` as its prior."""
        cfg = self.cfg
        train = self.train_domains
        proxy_tokens = proxy_tokens or max([cfg.proxy.tokens] + [s.tokens for s in self.ladder])
        target = max(cfg.space.target_tokens or 0.0, float(proxy_tokens))
        try:
            return self.bounds.capped({d: tokens[d] for d in train}, target, cfg.space.max_epochs)
        except SpaceError:
            avail = sum(tokens[d] for d in train)
            raise BudgetError(
                f"budget: {target:.4g} tokens (max of the proxies' tokens and space.target_tokens) needs more data "
                f"than the corpus allows under the repetition cap (space.max_epochs={cfg.space.max_epochs}, {avail} "
                f"train tokens over {len(train)} domains: at most {cfg.space.max_epochs * avail:.4g} tokens); lower "
                "the token budget, raise max_epochs or caps, or add data") from None

    @staticmethod
    def baselines(space: MixtureSpace) -> dict[str, Mixture]:
        """``uniform`` and ``natural`` (proportional to the available tokens), projected into ``space``."""
        return {name: Mixture.from_array(space.project(x), space.domains)
                for name, x in (("uniform", np.full(space.dim, 1.0 / space.dim)), ("natural", space.prior_array()))}

    def sweep_mixtures(self, space: MixtureSpace) -> list[tuple[str, Mixture]]:
        """The sweep's (label, mixture) pairs: baselines, custom mixtures, then seeded Dirichlet draws."""
        cfg = self.cfg
        base = self.baselines(space)
        out: list[tuple[str, Mixture]] = [(name, base[name]) for name in cfg.sweep.baselines]
        out += [(label, space.validate(m, f"sweep.custom[{i}]")) for i, (label, m) in enumerate(self.custom)]
        if cfg.sweep.mixtures:
            X = sample(space, cfg.sweep.mixtures, np.random.default_rng([cfg.seed, 0x5EE9]))
            out += [(f"dirichlet{i}", Mixture.from_array(x, space.domains)) for i, x in enumerate(X)]
        return out

    def open_study(self, space: MixtureSpace, *, extra: dict[str, Any] | None = None,
                   queue: list[tuple[str, Mixture, ProxySpec]] | None = None) -> Study:
        """Create the study, or load it on resume.

        A new study gets ``queue`` enqueued, (label, mixture, spec) in order: by default the sweep at
        every rung. A resumed one gets the entries of a ``queue`` given here that it has no trial of
        (same label and spec; a failed trial counts, it is not retried): what a resumed command asks for
        beyond the stored study (more seeds, a grown grid). ``extra``: metadata stored beside the config
        (``StudyMeta.extra``).
        """
        cfg = self.cfg
        if self.resume:
            study = load_study(cfg.study, self.storage(create=False), self.searcher)  # built here already
            if tuple(study.space.domains) != space.domains:
                raise UserError(f"--resume: study {cfg.study!r} has domains {list(study.space.domains)} but this "
                                f"config gives {list(space.domains)}")
            have = {(t.label, t.spec) for t in study.trials}
            for label, m, spec in queue or ():
                if (label, spec) not in have:
                    study.enqueue(m, spec, label)
            return study
        if queue is None:  # checked before the study is created
            queue = [(label, m, spec) for label, m in self.sweep_mixtures(space) for spec in self.ladder or [cfg.proxy]]
        study = create_study(cfg.study, space=space, objective=self.objective, searcher=self.searcher,
                             searcher_options=cfg.search.options, n_init=cfg.search.n_init, seed=cfg.seed,
                             spec=None if self.ladder else cfg.proxy, rungs=self.ladder,
                             storage=self.storage(), extra={"config": cfg.to_dict(), **(extra or {})})
        for label, m, spec in queue:
            study.enqueue(m, spec, label)
        return study


def _merge_as_used(d: dict[str, Any], proxy: ProxySpec) -> None:
    """A stored or current config dict's ``merge`` as far as it changes the study, for the resume check:
    dropped where the study neither screens nor branches (its settings are unused), only the seed's
    settings where it branches without screening, and ``seed_fraction: auto`` resolved for ``proxy`` (the
    experts' proxy: a study stored with the number ``auto`` gives resumes)."""
    m = d.get("merge")
    if not isinstance(m, dict):
        return
    try:
        screens, branches = int(m.get("candidates") or 0) > 0, bool(m.get("branch"))
    except (TypeError, ValueError):
        return  # compared as stored
    if not (screens or branches):
        d.pop("merge")
        return
    if not screens:  # a branch study uses the seed alone: how merged scores are made does not change it
        m = {k: m.get(k) for k in ("candidates", "branch", "seed_fraction", "base")}
    if m.get("seed_fraction") == "auto":
        m = {**m, "seed_fraction": resolve_seed_fraction("auto", proxy)}
    d["merge"] = m
