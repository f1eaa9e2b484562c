"""StudyPlan: everything ``mixopt run`` needs, checked and built once from the config.

:meth:`StudyPlan.build` checks all that can be checked before any data is prepared or anything
is written (the searcher and its options, the recipe and its domain names, the objective,
floors and caps, the ladder, the sweep's custom mixtures, whether the study exists); then
:meth:`open_corpus`, :meth:`build_space` and :meth:`open_study` do the work, each once.
``mixopt run`` and ``mixopt transfer`` both go through it.
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
from mixopt.core.errors import BudgetError, DataError, SpaceError, UserError
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.core.names import DOMAIN_NAME
from mixopt.core.objective import Objective
from mixopt.core.spec import ProxySpec
from mixopt.data import Corpus, default_cache_dir, prepare_corpus, resolve_recipe
from mixopt.run.config import StudyConfig
from mixopt.search.dirichlet import sample
from mixopt.study import Storage, Study, create_study, get_storage, load_study

RESUMABLE = ("budget", "executor", "tracking_uri", "output_dir")


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
        ladder: the scale ladder (cheapest first; empty for a single-scale study).
        resume: whether an existing study is continued.
        storage: the study's store, opened once (created on first use for a new study).
    """

    cfg: StudyConfig
    domains: list[str]
    objective: Objective
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
        if check_exists:
            plan._check_exists()
        return plan

    @classmethod
    def _checked(cls, cfg: StudyConfig, resume: bool, storage: Storage | None) -> StudyPlan:
        search.get_searcher(cfg.search.searcher, cfg.search.options)
        cache = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_dir()
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
        train = [d for d in names if d not in objective.targets]
        MixtureSpace.build(train, None, None, None, cfg.space.floors, cfg.space.caps)
        for i, m in enumerate(cfg.sweep.custom):
            where = f"sweep.custom[{i}]"
            Mixture(m, train, where=where)  # finite, >= 0, sums to 1, names training domains
        return cls(cfg, names, objective, cfg.ladder_specs(), resume, storage)

    def _check_exists(self) -> None:
        cfg = self.cfg
        exists = self._study_exists()
        if exists and not self.resume:
            raise UserError(f"study {cfg.study!r} already exists in {self.where}; "
                            "pass --resume to continue it, or set --study=NEW_NAME")
        if self.resume and not exists:
            raise UserError(f"--resume: no study {cfg.study!r} in {self.where} to resume")
        if self.resume:
            self._check_resume(self.storage().load_meta(cfg.study) or {})

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

    def _check_resume(self, meta: dict[str, Any]) -> None:
        """On --resume only the budget, executor and output settings may change."""
        stored = meta.get("config")
        if not stored:
            return
        now = json.loads(json.dumps(self.cfg.to_dict(), default=str))
        stored = json.loads(json.dumps(stored, default=str))
        for d in (now, stored):
            d.get("data", {}).pop("cache_dir", None)
        diff = sorted(k for k in set(now) | set(stored) if k not in RESUMABLE and now.get(k) != stored.get(k))
        if diff:
            raise UserError(f"--resume: study {self.cfg.study!r} was created with other {', '.join(diff)} settings; "
                            f"on resume only {', '.join(RESUMABLE)} may change (start a new study for the rest)")

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

    def build_space(self, tokens: dict[str, int]) -> MixtureSpace:
        """The study's space over the training domains (corpus domains minus held-out targets),
        with the repetition cap at the larger of the proxies' tokens and ``space.target_tokens``."""
        cfg = self.cfg
        train = [d for d in self.domains if d not in self.objective.targets]
        proxy_tokens = max([cfg.proxy.tokens] + [s.tokens for s in self.ladder])
        target = max(cfg.space.target_tokens or 0.0, float(proxy_tokens))
        try:
            return MixtureSpace.build(train, {d: tokens[d] for d in train}, target, cfg.space.max_epochs,
                                      cfg.space.floors, cfg.space.caps)
        except SpaceError:
            avail = sum(tokens[d] for d in train)
            raise BudgetError(
                f"budget: {target:.4g} tokens (max of the proxies' tokens and space.target_tokens) needs more data "
                f"than the corpus allows under the repetition cap (space.max_epochs={cfg.space.max_epochs}, {avail} "
                f"train tokens over {len(train)} domains: at most {cfg.space.max_epochs * avail:.4g} tokens); lower "
                "the token budget, raise max_epochs or caps, or add data") from None

    def sweep_mixtures(self, space: MixtureSpace) -> list[tuple[str, Mixture]]:
        """The sweep's (label, mixture) pairs: baselines, custom mixtures, then seeded Dirichlet draws."""
        cfg = self.cfg
        out: list[tuple[str, Mixture]] = []
        for name in cfg.sweep.baselines:
            x = space.prior_array() if name == "natural" else np.full(space.dim, 1.0 / space.dim)
            out.append((name, Mixture.from_array(space.project(x), space.domains)))
        for i, m in enumerate(cfg.sweep.custom):
            out.append((f"custom{i}", space.validate(Mixture(m, where=f"sweep.custom[{i}]"), f"sweep.custom[{i}]")))
        if cfg.sweep.mixtures:
            X = sample(space, cfg.sweep.mixtures, np.random.default_rng([cfg.seed, 0x5EE9]))
            out += [(f"dirichlet{i}", Mixture.from_array(x, space.domains)) for i, x in enumerate(X)]
        return out

    def open_study(self, space: MixtureSpace) -> Study:
        """Create the study (with its sweep enqueued at every rung), or load it on resume."""
        cfg = self.cfg
        if self.resume:
            study = load_study(cfg.study, self.storage(create=False))
            if tuple(study.space.domains) != space.domains:
                raise UserError(f"--resume: study {cfg.study!r} has domains {list(study.space.domains)} but this "
                                f"config gives {list(space.domains)}")
            return study
        sweep = self.sweep_mixtures(space)  # checked before the study is created
        study = create_study(cfg.study, space=space, objective=self.objective, searcher=cfg.search.searcher,
                             searcher_options=cfg.search.options, n_init=cfg.search.n_init, seed=cfg.seed,
                             spec=None if self.ladder else cfg.proxy, fidelities=self.ladder,
                             storage=self.storage(), extra={"config": cfg.to_dict()})
        for label, m in sweep:
            for spec in self.ladder or [cfg.proxy]:
                study.enqueue(m, spec, label)
        return study
