"""MLflow as the store of record (the only module that imports mlflow).

Schema (docs/architecture.md, "MLflow schema"): experiment per study; one parent run per study (tag ``mixopt.role=study``,
the study metadata as JSON in tag ``mixopt.meta`` and artifact ``study.json``); one nested
child run per trial with params ``w.<domain>`` and ``proxy.<field>``, metrics
``loss.<domain>`` (with step), ``objective``, throughput, and tags ``mixopt.study``,
``mixopt.trial``, ``mixopt.searcher``, ``mixopt.phase``, ``mixopt.state``
(``mixopt.error`` for FAILED). MLflow run status mirrors the state: WAITING/PENDING ->
SCHEDULED, RUNNING -> RUNNING, COMPLETE -> FINISHED, FAILED -> FAILED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mixopt.core.errors import AlreadyExistsError, NotFoundError, UserError
from mixopt.core.loader import from_dict
from mixopt.core.meta import StudyMeta
from mixopt.core.mixture import Mixture
from mixopt.core.spec import ProxySpec, upgrade_stored_spec
from mixopt.core.trial import Trial, TrialState
from mixopt.study.storage import Storage, default_tracking_uri

_STATUS = {TrialState.WAITING: "SCHEDULED", TrialState.PENDING: "SCHEDULED", TrialState.RUNNING: "RUNNING",
           TrialState.COMPLETE: "FINISHED", TrialState.FAILED: "FAILED"}
_SPEC_FIELDS = {f.name for f in dataclasses.fields(ProxySpec)}
_TAG_LIMIT = 7500  # MLflow caps tag values at 8000 characters
_EXPERIMENT_TAG_LIMIT = 20000  # and experiment tag values at 20,000
EXPERIMENT_KIND = "custom_model_development"  # mlflow.experimentKind of a model-training experiment (MLflow 3)
ML_VIEW = "workflowType=machine_learning"  # MLflow 3's UI: the model-training view, not the GenAI one
UI_VIEW = "mixopt-trials"  # the shared view of a study's runs table (see ui_view_state)


def _client(uri: str):
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" line per trial
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bar per file read back
    import mlflow
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _probe_server(uri: str, timeout: float = 5.0) -> None:
    """Fail within ``timeout`` seconds when nothing answers at ``uri`` (MLflow's client retries for minutes)."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # something answers (a server without /health, or behind auth): let MLflow speak for it
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"MLflow tracking URI {uri!r}: no server answers there ({reason}); start it or fix "
                        "--tracking-uri / MLFLOW_TRACKING_URI") from None


_LEASE_S = 60.0  # a lock held longer than this was left by a dead process: it is broken


@contextlib.contextmanager
def _server_lock(store: MlflowStorage, name: str) -> Iterator[None]:
    """A mutex for study ``name`` on a tracking server, which has no locks or transactions of its
    own: the registered model ``mixopt-lock.<study>`` exists while the lock is held. Creating a
    registered model whose name exists fails atomically in the server's database, which makes
    creation a test-and-set; release deletes it (registered models are deleted for good). A lock
    older than ``_LEASE_S`` is from a dead process and is broken."""
    from mlflow.exceptions import MlflowException

    client, key = store.client, f"mixopt-lock.{name}"
    me = f"mixopt study lock {uuid.uuid4().hex} (pid {os.getpid()})"  # MLflow's client retries requests:
    rng = random.Random()                                              # a retried create may find our own
    wait = 0.02  # backoff: waiters polling fast would take the server's time from the holder
    while True:
        try:
            client.create_registered_model(key, description=me)
            break
        except MlflowException as e:  # taken; or, under contention, gone again before the server answered
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        with contextlib.suppress(MlflowException):
            held = client.get_registered_model(key)
            if held.description == me:
                break
            if time.time() * 1000 - held.creation_timestamp > _LEASE_S * 1000:
                client.delete_registered_model(key)
        time.sleep(wait * (0.5 + rng.random()))
        wait = min(2 * wait, 0.5)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):  # gone already (a retried request): nothing to release
            if client.get_registered_model(key).description == me:
                client.delete_registered_model(key)


def _artifact_location(uri: str, name: str) -> str | None:
    """Next to a SQLite database: ``<db folder>/mlartifacts/<study>``; a server decides itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts" / name).as_uri()
    return None


class MlflowStorage(Storage):
    """A study store on an MLflow tracking server or SQLite database.

    Example:
        >>> store = MlflowStorage("sqlite:///mlflow.db")  # doctest: +SKIP
    """

    def __init__(self, uri: str | None = None, create: bool = True) -> None:
        self.uri = uri or default_tracking_uri()
        self._db = Path(self.uri[len("sqlite:///"):]) if self.uri.startswith("sqlite:///") else None
        if not create and self._db is not None and not self._db.is_file():
            raise UserError(f"MLflow tracking URI {self.uri!r}: no such database (run a study first, or set "
                            "--tracking-uri / MLFLOW_TRACKING_URI)")
        if self.uri.startswith(("http://", "https://")):
            _probe_server(self.uri)  # an unreachable server fails here, in seconds, not after minutes of retries
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # no INFO lines on first use
        self._local = threading.RLock()
        try:
            with self._file_lock():  # concurrent first use of a SQLite file races its migration
                self.client = _client(self.uri)
                self.client.search_experiments(max_results=1)  # creates/migrates a SQLite store once, here
        except Exception as e:  # a wrong URI or an unreachable server is the user's to fix
            raise UserError(f"MLflow tracking URI {self.uri!r}: cannot open the store ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
        self._parents: dict[str, tuple[str, str]] = {}  # study -> (experiment id, parent run id)
        self._run_ids: dict[tuple[str, int], str] = {}
        self._domains: dict[str, list[str]] = {}

    # --- one writer at a time per study --------------------------------------------------------
    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """An exclusive lock on ``<database>.mixopt-lock`` (SQLite stores); nothing for servers."""
        if self._db is None:
            yield
            return
        self._db.parent.mkdir(parents=True, exist_ok=True)
        with open(str(self._db) + ".mixopt-lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Exclusive access to study ``name`` across threads and processes.

        SQLite: an OS file lock next to the database (every process on the machine that holds it).
        A tracking server: a registered model that exists while the lock is held (:func:`_server_lock`).
        """
        with self._local:
            if self._db is not None:
                with self._file_lock():
                    yield
            else:
                with _server_lock(self, name):
                    yield

    # --- study --------------------------------------------------------------------------
    def _find_parent(self, name: str) -> tuple[str, str] | None:
        if name in self._parents:
            return self._parents[name]
        exp = self.client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage != "active":
            return None
        runs = self.client.search_runs([exp.experiment_id], "tags.`mixopt.role` = 'study'", max_results=1)
        if not runs:
            return None
        self._parents[name] = (exp.experiment_id, runs[0].info.run_id)
        return self._parents[name]

    def create_study(self, meta: StudyMeta) -> None:
        name = meta.name
        if self._find_parent(name) is not None:
            raise AlreadyExistsError(f"study {name!r} already exists in {self.uri}; use --resume or another name")
        exp = self.client.get_experiment_by_name(name)
        if exp is not None and exp.lifecycle_stage != "active":
            raise UserError(f"study {name!r}: its MLflow experiment was deleted in {self.uri}; restore it "
                            "(mlflow experiments restore) or choose another study name")
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(
            name, artifact_location=_artifact_location(self.uri, name), tags={"mixopt.study": name})
        self._tag_ui(exp_id, {}, meta.space.domains, (*meta.space.domains, *meta.objective.domains))
        text = json.dumps(meta.to_dict(), sort_keys=True, default=str)
        run = self.client.create_run(exp_id, run_name=name, tags={
            "mixopt.study": name, "mixopt.searcher": meta.searcher,
            "mixopt.meta": text if len(text) <= _TAG_LIMIT else "artifact:study.json"})
        from mlflow.entities import Param

        params = {"searcher": meta.searcher, "n_init": meta.n_init, "seed": meta.seed,
                  "objective": meta.objective.description, "domains": ",".join(meta.space.domains)}
        params.update({f"searcher.{k}": v for k, v in meta.searcher_options.items()})
        if meta.spec is not None:
            params.update({f"proxy.{k}": v for k, v in meta.spec.to_dict().items()})
        self._log_text(run.info.run_id, text, "study.json")
        from mlflow.entities import RunTag

        # the role tag comes last: a study run is only found once its metadata is complete
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                              tags=[RunTag("mixopt.role", "study")])
        self._parents[name] = (exp_id, run.info.run_id)

    def load_meta(self, name: str) -> StudyMeta | None:
        found = self._find_parent(name)
        if found is None:
            return None
        run = self.client.get_run(found[1])
        text = run.data.tags.get("mixopt.meta", "")
        if text.startswith("artifact:"):
            with tempfile.TemporaryDirectory() as d:
                text = Path(self.client.download_artifacts(found[1], text[len("artifact:"):], d)).read_text()
        return StudyMeta.from_dict(json.loads(text))

    def study_names(self) -> list[str]:
        runs = self.client.search_runs(
            [e.experiment_id for e in self.client.search_experiments()], "tags.`mixopt.role` = 'study'")
        return sorted({r.data.tags.get("mixopt.study", "") for r in runs} - {""})

    def set_study_status(self, name: str, status: str) -> None:
        found = self._find_parent(name)
        if found:
            self.client.update_run(found[1], status=status)

    def study_status(self, name: str) -> str | None:
        found = self._find_parent(name)
        return None if found is None else self.client.get_run(found[1]).info.status

    # --- trials -------------------------------------------------------------------------
    def trials(self, name: str) -> list[Trial]:
        found = self._find_parent(name)
        if found is None:
            return []
        if name not in self._domains:
            self._domains[name] = self._meta_domains(name)
        domains = self._domains[name]
        runs, token = [], None
        while True:
            page = self.client.search_runs([found[0]], "tags.`mixopt.role` = 'trial'", max_results=1000,
                                           page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
        trials = sorted((_trial_from_run(r, domains) for r in runs), key=lambda t: t.trial_id)
        for t in trials:
            self._run_ids[(name, t.trial_id)] = t.run_id
        if [t.trial_id for t in trials] != list(range(len(trials))):
            raise UserError(f"study {name!r} in {self.uri}: trial ids are not 0..{len(trials) - 1}; "
                            "the store was edited by hand")
        return trials

    def _meta_domains(self, name: str) -> list[str]:
        meta = self.load_meta(name)
        return list(meta.space.domains) if meta is not None else []

    def _trial_runs(self, name: str, where: str) -> list[Trial]:
        found = self._find_parent(name)
        if found is None:
            return []
        if name not in self._domains:
            self._domains[name] = self._meta_domains(name)
        runs = self.client.search_runs([found[0]], f"tags.`mixopt.role` = 'trial' and {where}", max_results=1000)
        return sorted((_trial_from_run(r, self._domains[name]) for r in runs), key=lambda t: t.trial_id)

    def get_trial(self, name: str, trial_id: int) -> Trial | None:
        found = self._trial_runs(name, f"tags.`mixopt.trial` = '{int(trial_id)}'")
        if found:
            self._run_ids[(name, trial_id)] = found[0].run_id
        return found[0] if found else None

    def waiting_trials(self, name: str) -> list[Trial]:
        return self._trial_runs(name, "tags.`mixopt.state` = 'WAITING'")

    def next_trial_id(self, name: str) -> int:
        """A counter on the study's run (``mixopt.n_trials``), checked against the trial runs
        (a process that died between creating a trial and counting it left it there)."""
        _, parent = self._find_parent(name)
        tag = self.client.get_run(parent).data.tags.get("mixopt.n_trials")
        n = int(tag) if tag is not None else len(self.trials(name))
        while self.get_trial(name, n) is not None:
            n += 1
        return n

    def add_trial(self, name: str, trial: Trial) -> Trial:
        from mlflow.entities import Param

        exp_id, parent = self._find_parent(name)
        from mlflow.entities import RunTag

        run = self.client.create_run(exp_id, run_name=f"trial-{trial.trial_id:04d}", tags={
            "mlflow.parentRunId": parent, "mixopt.study": name, "mixopt.trial": str(trial.trial_id),
            "mixopt.searcher": trial.searcher, "mixopt.phase": trial.phase, "mixopt.state": trial.state.value,
            **({"mixopt.label": trial.label} if trial.label else {})})
        params = [Param(f"w.{d}", repr(float(w))) for d, w in trial.mixture.items()]
        if trial.spec is not None:
            params += [Param(f"proxy.{k}", str(v)) for k, v in trial.spec.to_dict().items()]
        # params and the role tag in one batch: a run cut off before it is not a trial of the study
        self.client.log_batch(run.info.run_id, params=params, tags=[RunTag("mixopt.role", "trial")])
        trial = trial.with_(run_id=run.info.run_id)
        self._run_ids[(name, trial.trial_id)] = run.info.run_id
        self.client.set_tag(parent, "mixopt.n_trials", str(trial.trial_id + 1))
        return self.update_trial(name, trial) if trial.state is not TrialState.RUNNING else trial

    def update_trial(self, name: str, trial: Trial) -> Trial:
        from mlflow.entities import Metric, RunTag

        run_id = trial.run_id or self._run_ids[(name, trial.trial_id)]
        now = int(time.time() * 1000)
        tags = [RunTag("mixopt.state", trial.state.value)]
        if trial.device:
            tags.append(RunTag("mixopt.device", trial.device))
        if trial.error:
            tags.append(RunTag("mixopt.error", trial.error[:5000]))
        metrics = []
        if trial.state.finished:
            for h in trial.history:
                step = int(h.get("step", 0))
                metrics += [Metric(f"loss.{d}", float(v), now, step) for d, v in h.get("losses", {}).items()
                            if math.isfinite(float(v))]
                if "train_loss" in h and math.isfinite(float(h["train_loss"])):
                    metrics.append(Metric("train_loss", float(h["train_loss"]), now, step))
                # an online mixer's trajectory: its weights from this step on (metrics w.<domain>)
                metrics += [Metric(f"w.{d}", float(v), now, step) for d, v in h.get("weights", {}).items()]
            # the last step on the schedule's axis, as the history's: a branch's steps follow its seed's
            last = int(trial.metrics.get("steps", 0)) + int(trial.metrics.get("branch_start_step", 0))
            if not any("losses" in h for h in trial.history):
                metrics += [Metric(f"loss.{d}", float(v), now, last) for d, v in trial.losses.items()
                            if math.isfinite(float(v))]
            metrics += [Metric(k, float(v), now, last) for k, v in trial.metrics.items()
                        if k != "train_loss" and math.isfinite(float(v))]
            if trial.value is not None:
                metrics.append(Metric("objective", float(trial.value), now, last))
        chunks = [metrics[i:i + 1000] for i in range(0, len(metrics), 1000)] or [[]]
        for i, chunk in enumerate(chunks):  # the state tag goes with the last batch (objective included)
            self.client.log_batch(run_id, metrics=chunk, tags=tags if i == len(chunks) - 1 else [])
        if trial.state.finished:
            self.client.set_terminated(run_id, status=_STATUS[trial.state])
        else:
            self.client.update_run(run_id, status=_STATUS[trial.state])
        return trial.with_(run_id=run_id)

    # --- outputs ------------------------------------------------------------------------
    def _log_text(self, run_id: str, text: str, filename: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / filename
            p.write_text(text)
            self.client.log_artifact(run_id, str(p))

    def log_study_outputs(self, name: str, files: dict[str, str], metrics: dict[str, float],
                          tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, RunTag

        _, parent = self._find_parent(name)
        now = int(time.time() * 1000)
        self.client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                                               if v is not None and math.isfinite(float(v))],
                              tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
        for path in files.values():
            self.client.log_artifact(parent, path)

    def log_run(self, name: str, run_name: str, role: str, params: dict[str, Any], metrics: dict[str, float],
                tags: dict[str, str], files: list[str]) -> str:
        """A finished run of its own in the study's experiment (a fit, a transfer report), nested
        under the study's run; returns its run id."""
        from mlflow.entities import Metric, Param, RunTag

        exp_id, parent = self._find_parent(name)
        run = self.client.create_run(exp_id, run_name=run_name, tags={"mlflow.parentRunId": parent,
                                                                       "mixopt.study": name, **tags})
        now = int(time.time() * 1000)
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                              metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                                       if v is not None and math.isfinite(float(v))],
                              tags=[RunTag("mixopt.role", role)])
        for path in files:
            self.client.log_artifact(run.info.run_id, path)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def runs(self, name: str, role: str) -> list[dict[str, Any]]:
        found = self._find_parent(name)
        if found is None:
            return []
        found_runs = self.client.search_runs([found[0]], f"tags.`mixopt.role` = '{role}'", order_by=["start_time ASC"])
        return [{"run_id": r.info.run_id, "run_name": r.info.run_name, "params": dict(r.data.params),
                 "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)} for r in found_runs]

    def trial_trajectory(self, name: str, trial_id: int) -> list[dict[str, Any]]:
        t = self.get_trial(name, trial_id)
        if t is None or t.spec is None or not t.spec.online or t.run_id is None:
            return []
        series: dict[int, dict[str, float]] = {}
        for d in t.mixture:
            for m in self.client.get_metric_history(t.run_id, f"w.{d}"):
                series.setdefault(int(m.step), {})[d] = float(m.value)
        return [{"step": s, "weights": w} for s, w in sorted(series.items()) if len(w) == len(t.mixture)]

    def run_files(self, name: str, run_id: str, dest: str | os.PathLike) -> dict[str, Path]:
        from mlflow.exceptions import MlflowException

        found = self._find_parent(name)
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            run = None
        if found is None or run is None or run.info.experiment_id != found[0]:
            raise NotFoundError(f"study {name!r} in {self.uri}: no run {run_id!r}")
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        names = [a.path for a in self.client.list_artifacts(run_id) if not a.is_dir]
        return {n: Path(self.client.download_artifacts(run_id, n, str(out))) for n in names}

    def run_url(self, name: str) -> str | None:
        found = self._find_parent(name)
        return None if found is None else self.ui_url(name, found[1])

    # --- the MLflow UI ------------------------------------------------------------------
    def _tag_ui(self, exp_id: str, have: dict[str, str], domains: Sequence[str], loss_domains: Sequence[str]) -> None:
        want = {"mlflow.experimentKind": EXPERIMENT_KIND,
                f"mlflow.sharedViewState.{UI_VIEW}": ui_view_state(domains, loss_domains)}
        for key, value in want.items():
            if have.get(key) != value:
                self.client.set_experiment_tag(exp_id, key, value)

    def tag_ui(self, name: str) -> bool:
        """Tag study ``name``'s experiment for MLflow's UI (model development; the runs-table view
        :meth:`ui_url` opens), as new studies are; for studies stored before. False: no such study."""
        found = self._find_parent(name)
        meta = self.load_meta(name) if found is not None else None
        if meta is None:
            return False
        have = dict(self.client.get_experiment(found[0]).tags)
        self._tag_ui(found[0], have, meta.space.domains, (*meta.space.domains, *meta.objective.domains))
        return True

    def ui_url(self, name: str, run_id: str | None = None, base: str | None = None) -> str | None:
        """Browser URL of study ``name`` in the MLflow UI at ``base`` (default: the tracking server;
        None for a file store without ``base``), in MLflow's model-training view: the study's runs
        table (every trial flat, best objective first, ``w.*``/``objective``/``loss.*`` columns,
        once :meth:`tag_ui` has tagged it), or the run ``run_id``'s page."""
        base = base or (self.uri if self.uri.startswith(("http://", "https://")) else None)
        found = self._find_parent(name)
        if base is None or found is None:
            return None
        url = f"{base.rstrip('/')}/#/experiments/{found[0]}/runs"
        if run_id:
            return f"{url}/{run_id}?{ML_VIEW}"
        tags = self.client.get_experiment(found[0]).tags
        return f"{url}?{ML_VIEW}" + (f"&viewStateShareKey={UI_VIEW}" if f"mlflow.sharedViewState.{UI_VIEW}" in tags
                                     else "")


def ui_view_state(domains: Sequence[str], loss_domains: Sequence[str]) -> str:
    """The runs-table view of a study in MLflow's UI, as MLflow's shared view state (JSON, kept in the
    experiment tag ``mlflow.sharedViewState.<key>`` and opened by ``?viewStateShareKey=<key>``; MLflow 3).

    Runs ordered by ``objective`` (best first): MLflow lists runs flat, not folded under the study's
    run, whenever they are ordered by anything but their start time. Columns, in this order:
    ``objective``, ``w.<domain>``, ``loss.<domain>`` (as many as fit MLflow's 20,000-character tag);
    every run drawn in the charts."""
    cols = ["metrics.`objective`"] + [f"params.`w.{d}`" for d in domains]
    cols += [f"metrics.`loss.{d}`" for d in dict.fromkeys(loss_domains)]
    state = {"orderByKey": "metrics.`objective`", "orderByAsc": True, "searchFilter": "", "selectedColumns": cols,
             "columnOrder": cols, "runsHiddenMode": "SHOW_ALL"}
    while len(text := json.dumps(state)) > _EXPERIMENT_TAG_LIMIT:
        cols.pop()
    return text


def _spec_from_params(params: dict[str, str]) -> ProxySpec | None:
    import yaml

    def value(v: str) -> Any:  # JSON first (numbers as written, online_options' text), else YAML (True, names)
        if v == "":
            return ""  # online: none
        try:
            return json.loads(v)
        except ValueError:
            return yaml.safe_load(v)

    raw = {k[6:]: value(v) for k, v in params.items() if k.startswith("proxy.") and k[6:] in _SPEC_FIELDS}
    return from_dict(ProxySpec, upgrade_stored_spec(raw), "proxy") if raw else None


def _trial_from_run(run, domains: list[str]) -> Trial:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    weights = {k[2:]: float(v) for k, v in params.items() if k.startswith("w.")}
    mixture = Mixture({d: weights.get(d, 0.0) for d in domains}, domains)  # repr(float) round-trips exactly
    state = TrialState(tags.get("mixopt.state", "FAILED"))
    losses = {k[5:]: v for k, v in metrics.items() if k.startswith("loss.")}
    extra = {k: v for k, v in metrics.items()  # w.<domain> metrics are an online mixer's trajectory, not results
             if not k.startswith(("loss.", "w.")) and k != "objective"}
    value = metrics.get("objective") if state is TrialState.COMPLETE else None
    return Trial(int(tags["mixopt.trial"]), mixture, _spec_from_params(params), state, value, losses, extra, [],
                 tags.get("mixopt.searcher", ""), tags.get("mixopt.phase", ""), tags.get("mixopt.error"),
                 run.info.run_id, tags.get("mixopt.label", ""), tags.get("mixopt.device", ""))
