"""Study: the public ask/tell surface (Optuna-style) over a store of record.

Searchers read history from the study on every call and keep no private state, so a study
resumed in another process (after the driver died) proposes exactly what it would have.

Example:
    >>> import mixopt
    >>> study = mixopt.create_study("demo", domains=["code", "legal", "web"], searcher="random")
    >>> [t] = study.ask()
    >>> study.tell(t.trial_id, {"code": 3.1, "legal": 2.9, "web": 3.4}).state.value
    'COMPLETE'
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mixopt import search
from mixopt.core.errors import AlreadyExistsError, ConfigError, NotFoundError, RunsTableError, UserError
from mixopt.core.meta import StudyMeta
from mixopt.core.mixture import Mixture, MixtureSpace
from mixopt.core.names import check_domain_names, check_study_name
from mixopt.core.objective import Objective
from mixopt.core.runs_table import RunsTable, read_runs_table
from mixopt.core.spec import ProxySpec
from mixopt.core.trial import Trial, TrialState
from mixopt.core.worker import TrialResult
from mixopt.search import Observation, Recommendation, SearchContext, Searcher
from mixopt.study.merged import MergedScores
from mixopt.study.storage import Storage
from mixopt.study.stores import get_storage

if TYPE_CHECKING:
    import pandas as pd

_ACTIVE = (TrialState.PENDING, TrialState.RUNNING)


class StudySettings:
    """What a study's metadata says (name, space, objective, searcher, seed, proxy spec, ladder):
    read one way by :class:`Study` and by ``mixopt.client.RemoteStudy``."""

    def _read_meta(self, meta: StudyMeta) -> None:
        self.meta = meta
        self.name: str = meta.name
        self.space: MixtureSpace = meta.space
        self.objective: Objective = meta.objective
        self.searcher_name: str = meta.searcher
        self.searcher_options: dict[str, Any] = dict(meta.searcher_options)
        self.n_init: int = meta.n_init
        self.seed: int = meta.seed
        self.spec: ProxySpec | None = meta.spec
        self.rungs: list[ProxySpec] = list(meta.rungs)

    def rung_of(self, t: Trial) -> int | None:
        """Index of the trial's proxy spec in the study's scale ladder (None: not on it / no ladder)."""
        return self.meta.rung_of(t.spec)

    @property
    def fidelities(self) -> list[ProxySpec]:
        """Deprecated name of :attr:`rungs`."""
        warnings.warn("Study.fidelities is now Study.rungs", DeprecationWarning, stacklevel=2)
        return self.rungs

    def fidelity_costs(self) -> list[float]:
        """Deprecated name of :meth:`rung_costs`."""
        warnings.warn("Study.fidelity_costs() is now Study.rung_costs()", DeprecationWarning, stacklevel=2)
        return self.rung_costs()


class Study(StudySettings):
    """A study in a store: ask/tell, results. Open one with :func:`create_study` / :func:`load_study`.

    Args:
        storage: where the study lives.
        meta: its definition (as stored).
        searcher: the searcher already built from ``meta.searcher`` and ``meta.searcher_options``
            (default: built here).
    """

    def __init__(self, storage: Storage, meta: StudyMeta, searcher: Searcher | None = None) -> None:
        self._storage = storage
        self._read_meta(meta)
        self._searcher = searcher or search.get_searcher(self.searcher_name, self.searcher_options)
        self._init = search.get_searcher("random", {})
        self._trials: list[Trial] = storage.trials(self.name)
        self._stale = False  # another process wrote trials this process has not read yet
        self._merged = MergedScores(storage, self.name)

    # --- reading ------------------------------------------------------------------------
    @property
    def storage(self) -> Storage:
        """The store this study lives in."""
        return self._storage

    @property
    def trials(self) -> list[Trial]:
        if self._stale:
            self.refresh()
        return list(self._trials)

    def trial(self, trial_id: int) -> Trial:
        if self._stale:
            self.refresh()
        if isinstance(trial_id, int) and not isinstance(trial_id, bool) and trial_id >= len(self._trials):
            self.refresh()  # another process may have added it
        if not isinstance(trial_id, int) or isinstance(trial_id, bool) or not (0 <= trial_id < len(self._trials)):
            raise NotFoundError(f"study {self.name!r}: no trial {trial_id!r} (trials 0..{len(self._trials) - 1})")
        return self._trials[trial_id]

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in TrialState}
        for t in self.trials:
            out[t.state.value] += 1
        return out

    def best(self) -> Trial | None:
        """The COMPLETE trial with the lowest objective (None before any)."""
        done = [t for t in self.trials if t.ok]
        return min(done, key=lambda t: t.value) if done else None

    def rung_costs(self) -> list[float]:
        """Cost per trial of each rung, in seconds where measured (mean in-trial training time);
        unmeasured rungs are estimated from 6 * N_active_non_embedding * tokens at the measured s/FLOP."""
        est = [6.0 * f.active_non_embedding_params() * f.tokens for f in self.rungs]
        secs: dict[int, list[float]] = {}
        for t in self.trials:
            i = self.rung_of(t)
            if i is not None and t.state is TrialState.COMPLETE and t.metrics.get("train_seconds"):
                secs.setdefault(i, []).append(t.metrics["train_seconds"])
        if not secs:
            return est
        rate = float(np.mean([np.mean(v) / est[i] for i, v in secs.items()]))
        return [float(np.mean(secs[i])) if i in secs else est[i] * rate for i in range(len(est))]

    def _context(self) -> SearchContext:
        obs = tuple(Observation(t.trial_id, t.mixture, t.state, t.value if t.state is TrialState.COMPLETE else None,
                                self.rung_of(t), dict(t.losses) if t.state is TrialState.COMPLETE and t.losses else None)
                    for t in self.trials)
        rungs = tuple(search.Rung(i, f.to_dict(), c) for i, (f, c) in enumerate(zip(self.rungs, self.rung_costs())))
        merged, cost = self._merged_observations()
        return SearchContext(self.space, obs, self.seed, rungs, dict(self.objective.weights), merged, cost)

    # --- merged scores (model-merging proxies) -------------------------------------------
    def merged_scores(self) -> pd.DataFrame:
        """Every mixture scored by merging the study's domain experts (the tables of its screening
        rounds, ``mixopt.run.experts.screen``): ``round``, ``candidate``, ``w.*``, ``loss.*``,
        ``objective``. Empty when the study has none. Merged scores are never trials."""
        return self._merged.table()

    def _merged_observations(self) -> tuple[tuple[Observation, ...], float | None]:
        costs = self.rung_costs()
        return self._merged.observations(self.space, costs[-1] if costs else 1.0)

    # --- asking -------------------------------------------------------------------------
    def ask(self, n: int = 1, spec: ProxySpec | None = None) -> list[Trial]:
        """Hand out up to ``n`` trials: enqueued ones first, then the initial design, then the
        searcher. Trials already handed out and not finished count as pending for the searcher;
        a searcher may return fewer (a concurrency limit), so fewer than ``n`` may come back.
        Safe to call from many processes at once: ids are assigned and waiting trials claimed
        under the store's lock.

        Args:
            n: how many trials (>= 1).
            spec: the proxy spec for new trials (default: the study's; a multi-rung searcher
                picks a rung of the ladder itself).
        Returns:
            the PENDING trials, in id order.
        Raises:
            UserError: ``n`` is not a positive integer.
        """
        if not isinstance(n, int) or n < 1:
            raise UserError(f"ask: n={n!r} must be a positive integer")
        with self._storage.lock(self.name):  # another process may claim the same waiting trial
            waiting = self._storage.waiting_trials(self.name)[:n]
            out = [self._save(t.with_(state=TrialState.PENDING)) for t in waiting]
        if len(out) < n:
            self.refresh()  # the searcher sees every trial, other processes' included (read outside the lock)
        while len(out) < n:
            k = n - len(out)
            n_model_done = sum(1 for t in self.trials if t.phase in ("init", "model", "warm_start", "enqueued"))
            in_init = n_model_done < self.n_init
            if in_init:
                k = min(k, self.n_init - n_model_done)
            searcher = self._init if in_init else self._searcher
            proposals = searcher.suggest(self._context(), k)
            if not proposals:  # e.g. a concurrency limit: fewer trials now, more once some finish
                break
            new = [(self.space.validate(Mixture(p.mixture.to_dict(), self.space.domains)),
                    self.rungs[p.rung] if p.rung is not None else (spec or self.spec)) for p in proposals]
            out += self._add([Trial(-1, m, t_spec, TrialState.PENDING, searcher=searcher.name,
                                    phase="init" if in_init else "model") for m, t_spec in new])
        return out

    def _add(self, trials: Sequence[Trial]) -> list[Trial]:
        """Store new trials under the next free ids, atomically with respect to other processes."""
        added = []
        with self._storage.lock(self.name):
            start = self._storage.next_trial_id(self.name)
            for i, t in enumerate(trials):
                added.append(self._remember(self._storage.add_trial(self.name, t.with_(trial_id=start + i))))
        return added

    def refresh(self) -> None:
        """Re-read the trials from the store (other processes may have asked or told)."""
        self._trials = self._storage.trials(self.name)
        self._stale = False

    def _remember(self, t: Trial) -> Trial:
        """Keep the cached trials in step with a trial just written (stale if others wrote between)."""
        if t.trial_id < len(self._trials):
            self._trials[t.trial_id] = t
        elif t.trial_id == len(self._trials):
            self._trials.append(t)
        else:
            self._stale = True
        return t

    def _current(self, trial_id: int) -> Trial:
        """The trial as stored now (under the lock: tell and mark_running check its state)."""
        if isinstance(trial_id, bool) or not isinstance(trial_id, int):
            raise NotFoundError(f"study {self.name!r}: no trial {trial_id!r} (trial ids are integers)")
        t = self._storage.get_trial(self.name, trial_id)
        if t is None:
            n = self._storage.next_trial_id(self.name)
            raise NotFoundError(f"study {self.name!r}: no trial {trial_id!r} (trials 0..{n - 1})")
        return t

    def enqueue(self, mixture: Mapping[str, float], spec: ProxySpec | None = None, label: str = "") -> Trial:
        """Queue a user-chosen mixture (optionally at another proxy spec, with a name); the next
        ``ask`` hands it out before any proposal."""
        m = self.space.validate(mixture if isinstance(mixture, Mixture) else Mixture(mixture, where="enqueue"),
                                "enqueue")
        [t] = self._add([Trial(-1, m, spec or self.spec, TrialState.WAITING, searcher="user", phase="enqueued",
                               label=label)])
        return t

    def mark_running(self, trial_id: int) -> Trial:
        with self._storage.lock(self.name):
            t = self._current(trial_id)
            if t.state is not TrialState.PENDING:
                raise UserError(f"trial {trial_id} is {t.state.value}; only PENDING trials can start")
            return self._save(t.with_(state=TrialState.RUNNING))

    # --- telling ------------------------------------------------------------------------
    def tell(self, trial_id: int, result: TrialResult | Mapping[str, Any] | float | None = None, *,
             error: str | None = None) -> Trial:
        """Report a trial's outcome.

        Args:
            trial_id: a trial handed out by :meth:`ask`.
            result: a proxy result (a :class:`~mixopt.core.worker.TrialResult`, or its ``to_dict()``:
                ``losses`` {domain: loss}, plus optional ``history``, numeric metrics and ``device``), a plain
                ``{domain: loss}`` mapping, or a float
                objective value. Non-finite objectives mark the trial FAILED: the searcher never sees
                a made-up value.
            error: marks the trial FAILED with this reason instead.
        Returns:
            the trial as stored (COMPLETE or FAILED).
        Raises:
            UserError: unknown trial, a trial already told or never handed out, losses for unknown
                domains or lacking an objective domain (nothing is written then).
        """
        if error is not None or result is None:
            done = {"state": TrialState.FAILED, "error": error or "no result reported"}
        else:
            done = self._outcome(result)
        with self._storage.lock(self.name):  # checked and written at once: a trial is told once
            t = self._current(trial_id)
            if t.state.finished:
                raise UserError(f"trial {trial_id} is already {t.state.value}")
            if t.state is TrialState.WAITING:
                raise UserError(f"trial {trial_id} was never handed out by ask()")
            return self._save(t.with_(**done))

    def _outcome(self, result: Mapping[str, Any] | float) -> dict[str, Any]:
        """The trial fields a reported result sets (checked before anything is written)."""
        if isinstance(result, bool) or not isinstance(result, (int, float, Mapping, TrialResult)):
            raise UserError(f"tell: result must be a mapping domain -> loss, a TrialResult (or its dict) or a number, "
                            f"got {type(result).__name__}")
        device = ""
        if isinstance(result, (int, float)):
            value, losses, metrics, history = float(result), {}, {}, []
        else:
            r = result if isinstance(result, TrialResult) else TrialResult.from_dict(result)
            losses, metrics, history, device = r.losses, r.metrics, r.history, r.device
            known = set(self.space.domains) | set(self.objective.domains)
            unknown = sorted(set(losses) - known)
            if unknown:
                raise UserError(f"tell: losses for unknown domain(s) {unknown}; allowed: {', '.join(sorted(known))}")
            missing = [d for d in self.objective.domains if d not in losses]
            if missing:
                raise UserError(f"tell: losses lack the objective's domain(s) {missing} (objective: "
                                f"{self.objective.description}); report them, or tell(id, error=...)")
            value = self.objective.value(losses)
        if not math.isfinite(value):
            bad = {d: losses.get(d) for d in self.objective.domains} if losses else value
            return {"state": TrialState.FAILED, "losses": losses, "metrics": metrics, "history": history,
                    "device": device, "error": f"objective is not finite (losses {bad})"}
        return {"state": TrialState.COMPLETE, "value": value, "losses": losses, "metrics": metrics,
                "history": history, "device": device, "error": None}

    def add_completed(self, table: pd.DataFrame | str | os.PathLike, objective: str | None = None) -> list[Trial]:
        """Warm start from a runs table (DataFrame or CSV/Parquet path): one COMPLETE trial per row.

        Rows' ``w.<domain>`` columns must name the study's training domains (each row is
        renormalized within the runs-table tolerance). The objective is read from column
        ``objective`` (the name given), else computed from ``loss.<domain>`` columns when they
        cover the study's objective, else read from a column named ``objective``. The whole
        table is checked before anything is stored.
        """
        if isinstance(table, RunsTable):
            rt = table
        elif isinstance(table, (str, os.PathLike)):
            rt = read_runs_table(table, objective)
        else:
            rt = RunsTable.from_frame(table, "<dataframe>", objective)
        unknown = [d for d in rt.domains if d not in self.space.domains]
        if unknown:
            raise RunsTableError(f"{rt.source}: w. columns {unknown} are not domains of study {self.name!r} "
                                 f"(allowed: {', '.join(self.space.domains)})")
        loss_cols = [c for c in rt.df.columns if str(c).startswith("loss.")]
        for c in loss_cols + ([objective] if objective else []):
            if not pd_numeric(rt.df[c]):
                raise RunsTableError(f"{rt.source}: column {c!r} is not numeric")
        if objective is not None:
            values = rt.metric(objective)
        elif all(f"loss.{d}" in loss_cols for d in self.objective.domains):
            values = np.array([self.objective.value({d: rt.df[f"loss.{d}"].iloc[i] for d in self.objective.domains})
                               for i in range(len(rt))])
        elif "objective" in rt.df.columns:
            values = rt.metric("objective")
        else:
            raise RunsTableError(f"{rt.source}: no loss columns for {list(self.objective.domains)} "
                                 "and no 'objective' column")
        W = rt.weights()
        k = [self.space.domains.index(d) for d in rt.domains]
        rows = []
        for i in range(len(rt)):
            x = np.zeros(self.space.dim)
            x[k] = W[i]
            m = Mixture.from_array(x, self.space.domains)  # renormalizes the table's rounding
            losses = {c[5:]: float(rt.df[c].iloc[i]) for c in loss_cols}
            rows.append((m, float(values[i]), losses))
        return self._add([Trial(-1, m, None, TrialState.COMPLETE if math.isfinite(v) else TrialState.FAILED,
                                v if math.isfinite(v) else None, losses, searcher="warm_start", phase="warm_start",
                                error=None if math.isfinite(v) else "non-finite objective in runs table")
                          for m, v, losses in rows])

    def _save(self, t: Trial) -> Trial:
        return self._remember(self._storage.update_trial(self.name, t))

    # --- results ------------------------------------------------------------------------
    def recommend(self) -> Recommendation:
        """The searcher's recommended mixture with its predicted objective.

        A study whose proxy spec mixes online (``spec.online``: Aioli, DoReMi) recommends the method's
        output instead: the average mixture of its best online trial's mixer (``online_average.*`` metrics)."""
        ctx = self._context()
        if not ctx.completed_xy()[1].size:
            raise UserError(f"study {self.name!r}: no COMPLETE trial yet, nothing to recommend from")
        online = [t for t in self.trials if self.spec is not None and self.spec.online and t.ok and t.spec is not None
                  and t.spec.online and all(f"online_average.{d}" in t.metrics for d in self.space.domains)]
        if online:
            t = min(online, key=lambda t: t.value)
            avg = Mixture.from_array([t.metrics[f"online_average.{d}"] for d in self.space.domains], self.space.domains)
            return Recommendation(avg, float(t.value), info={"source": "online_average", "mixer": t.spec.online,
                                                             "trial_id": t.trial_id, "searcher": self.searcher_name})
        return self._searcher.recommend(ctx)

    def to_dataframe(self) -> pd.DataFrame:
        """Runs table: one row per trial (``run``, ``state``, ``w.*``, ``loss.*``, ``objective``, ...)."""
        import pandas as pd

        rows = []
        for t in self.trials:
            r: dict[str, Any] = {"run": t.trial_id, "state": t.state.value, "searcher": t.searcher, "phase": t.phase,
                                 "label": t.label}
            r.update({f"w.{d}": t.mixture.get(d, 0.0) for d in self.space.domains})
            r.update({f"loss.{d}": v for d, v in sorted(t.losses.items())})
            r["objective"] = t.value if t.value is not None else np.nan
            if t.spec is not None:
                r["scale"] = t.spec.preset
                r["tokens"] = t.spec.tokens
                r["seed"] = t.spec.seed
                r["params"] = t.metrics.get("params", np.nan)
                r["non_embedding_params"] = t.spec.non_embedding_params()
            for k in ("tokens_per_s", "train_seconds", "flops_per_token"):
                if k in t.metrics:
                    r[k] = t.metrics[k]
            r["device"] = t.device
            r["error"] = t.error or ""
            rows.append(r)
        return pd.DataFrame(rows)


def pd_numeric(col) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(col))


def create_study(name: str = "mixopt-study", *, space: MixtureSpace | None = None,
                 domains: Sequence[str] | None = None, objective: Objective | Mapping[str, Any] | None = None,
                 searcher: str | Searcher = search.DEFAULT_SEARCHER,
                 searcher_options: Mapping[str, Any] | None = None,
                 n_init: int = 0, seed: int = 0, spec: ProxySpec | None = None,
                 rungs: Sequence[ProxySpec] = (), storage: Storage | str | None = None, load_if_exists: bool = False,
                 extra: Mapping[str, Any] | None = None, fidelities: Sequence[ProxySpec] | None = None) -> Study:
    """Create a study (or load it with ``load_if_exists``).

    Give either a ``space`` or plain ``domains`` (full simplex over the training domains: the
    domains less the objective's held-out targets). ``objective`` is an :class:`Objective` or its
    config mapping (``{domain: X}``, ``{weights: ...}``, ``{target: X}``); default: the average loss
    over the training domains. ``searcher`` is a registered name (``searcher_options`` its options;
    default ``bo``, the searcher ``mixopt run`` defaults to), or a searcher already built from them
    with ``mixopt.search.get_searcher(name, searcher_options)``: the store keeps the name and options,
    and :func:`load_study` rebuilds it from them.
    ``storage``: None (in memory), an MLflow tracking URI (``sqlite:///mlflow.db``,
    ``http://127.0.0.1:5000``) or a Storage. ``rungs`` is the scale ladder (cheapest first, the last
    is the target) for multi-rung searchers; ``spec`` defaults to its last rung (``fidelities`` is
    the deprecated name of ``rungs``).

    Returns:
        the new (or, with ``load_if_exists``, the existing) :class:`Study`.
    Raises:
        ConfigError: a bad name (empty, slashes), domain name, ``n_init``, objective, searcher
            or searcher option.
        AlreadyExistsError: the study exists (without ``load_if_exists``).
        UserError: the store cannot be opened.
    """
    check_study_name(name, "create_study: name")
    StudyMeta.check_counts(n_init, seed)  # before the store is opened (or created)
    if fidelities is not None:
        warnings.warn("create_study(fidelities=...) is now create_study(rungs=...)", DeprecationWarning, stacklevel=2)
        rungs = rungs or fidelities
    if domains is not None:
        check_domain_names(domains, "create_study: domains")
    store = get_storage(storage)
    existing = store.load_meta(name)
    if existing is not None:
        if load_if_exists:
            return Study(store, existing)
        raise AlreadyExistsError(f"study {name!r} already exists in the store; resume it (--resume / load_study) "
                                 "or choose another name")
    if space is None:
        if not domains:
            raise ConfigError("create_study: give a space or a list of domains")
        if not isinstance(objective, Objective):
            objective = Objective.from_config(objective, list(domains))
        train = objective.training_domains(domains)
        space = MixtureSpace(tuple(train), (0.0,) * len(train), (1.0,) * len(train))
    if not isinstance(objective, Objective):
        objective = Objective.from_config(objective, list(space.domains))
    if isinstance(searcher, str):
        built = search.get_searcher(searcher, dict(searcher_options or {}))  # validates name and options now
    else:
        built = searcher
        if built.name not in search.available():
            raise ConfigError(f"create_study: searcher {built!r} is not registered; give a registered name "
                              f"({', '.join(search.available())}) and its options")
    meta = StudyMeta(name, space, objective, built.name, dict(searcher_options or {}), n_init, seed, spec,
                     tuple(rungs), dict(extra or {}))
    store.create_study(meta)
    return Study(store, meta, built)


def load_study(name: str, storage: Storage | str, searcher: Searcher | None = None) -> Study:
    """Open an existing study from its store (e.g. after the driver died, or in another process).

    ``searcher``: the study's searcher when the caller built it already (from the same name and options).

    Returns:
        the :class:`Study`, with every trial read back from the store.
    Raises:
        NotFoundError: no such study (the message lists the studies there).
        UserError: the store cannot be opened.
    """
    store = get_storage(storage, create=False)
    meta = store.load_meta(name)
    if meta is None:
        names = store.study_names()
        raise NotFoundError(f"no study {name!r} in {store.uri}"
                            + (f"; studies there: {', '.join(names)}" if names else ""))
    return Study(store, meta, searcher)
