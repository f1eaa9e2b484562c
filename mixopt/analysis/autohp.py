"""``lr: auto`` and ``batch_size: auto``: a proxy's, a ladder rung's or a transfer target's numbers from a law.

The config records where ``auto`` was written (:mod:`mixopt.run.target`); :func:`resolve_config` gives
those keys numbers, before the plan is built (the command line calls it for ``mixopt run`` and its
``--dry-run``, ``transfer``, ``merge-check``), and the study stores the resolved config. The law
(``hparams:`` in the config), first that applies:

1. ``hparams.study``: the Step-Law forms (:func:`mixopt.analysis.hparams.fit_hparams`, point estimates)
   fitted to that study's runs (a ``mixopt hparams-sweep`` study in the same store), the way its last
   fit run did (its tolerance and optimum; the defaults when it has none);
2. the config's own study, when it exists and has a ``mixopt fit --kind hparams`` run: the same fit of
   its runs at that run's tolerance and optimum (``mixopt transfer`` of a study that swept lr reads its own law);
3. ``hparams.law: auto | published``: the published Step Law (:func:`~mixopt.analysis.hparams.published_hparams`)
   at N = non-embedding params (an MoE's total), D = the spec's tokens, scaled for proxies below its
   range (N < 2.1e8) by ``PROXY_LR_FACTOR`` and ``PROXY_BATCH_FACTOR``.

The two factors are constants measured by ``bench/bench_hparams.py`` (the geometric mean of best /
Step-Law over the grid points within 0.25 % of their size's best, seeds averaged): an lr x batch sweep
at 100 tokens per parameter, lr 0.005-0.08 (x2), batch 4/8/16/32 sequences of 128 (also 2 at dense-6k,
1 and 2 at dense-3k, so that every size's best batch lies inside the grid or at one sequence), three
seeds a point, on the pip recipe's text with a 1024-token BPE (``bench/configs/hparams.yaml``), natural
mixture, mean validation loss over its 6 domains; the factors come from its dense-3k, -6k and -14k
sizes, and dense-37k checks them. Nothing of the transfer benchmark's Debian corpus or objective was
used. The best lr was 0.01 at all three sizes while the Step Law falls 1.8x over them, so one constant
factor is a compromise: 1.7x the best at dense-3k, 0.92x at dense-14k; the best batch grows faster
with D than the Step Law's D^0.571 (128, 512, 1,024 tokens), so the batch factor is 1.9x the best at
dense-3k, 0.55x at dense-14k. (The first measurement, one seed on batch 8/16/32 only, had the best
batch on the grid's lower edge at all three sizes and gave 0.0474 and 0.85.)

``hparams.law: fitted`` refuses the published law; ``auto`` under ``parametrization: mup`` has no
published law (the Step Law was fitted under the standard parametrization): one line naming the key.
The batch size is the law's tokens per step over ``seq_len``, rounded (>= 1 sequence); the lr is
rounded to 4 significant digits. A resumed study keeps the numbers it was created with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mixopt.analysis.hparams import (
    DEFAULT_TOLERANCE,
    STEP_LAW_N_RANGE,
    HparamFit,
    fit_hparams,
    published_hparams,
    table_from_trials,
)
from mixopt.core.errors import ConfigError, UserError
from mixopt.core.loader import from_dict
from mixopt.core.spec import ProxySpec, merge_overrides
from mixopt.run.config import StudyConfig
from mixopt.run.target import AUTO_KEYS, rung_auto, unresolved
from mixopt.study import Storage, get_storage, load_study

# best / published Step Law on the proxies of bench/bench_hparams.py (see the module docstring): the geometric
# means over the 6 grid points of its dense-3k, -6k and -14k sizes within 0.25 % of their size's best (lr 0.035 and
# 0.071, 0.047 and 0.093, 0.065 twice; batch 0.161 twice, 0.435 twice, 0.274 and 0.548)
PROXY_LR_FACTOR = 0.0597
PROXY_BATCH_FACTOR = 0.301


@dataclass(frozen=True)
class ProxyLaw:
    """The law ``auto`` keys are resolved with: a fit (``fit``) or the published Step Law (``fit`` None)."""

    source: str
    fit: HparamFit | None = None
    parametrization: str | None = None  # a fit's runs': "standard" or "mup, alpha 4" (see _param)

    def at(self, spec: ProxySpec, key: str) -> tuple[float, float]:
        """(lr, batch tokens) for ``spec`` (N = its non-embedding params, D = its tokens); ``key`` names errors."""
        N, D = float(spec.non_embedding_params()), float(spec.tokens)
        if self.fit is not None:
            if self.parametrization is not None and _param(spec) != self.parametrization:
                raise ConfigError(f"{key}: auto from {self.source.split(' (')[0]}, whose runs are parametrization "
                                  f"{self.parametrization}, but this proxy is {_param(spec)}; the best lr does not "
                                  "carry over between them: sweep in this parametrization, or set it by hand")
            h = self.fit.predict(N, D, seq_len=spec.seq_len)
            return h.lr, h.batch_tokens
        if spec.parametrization != "standard":
            raise ConfigError(f"{key}: auto has no published law under parametrization {spec.parametrization!r} "
                              "(the Step Law was fitted under the standard one); set it, or fit a law to a sweep in "
                              "that parametrization (hparams.study)")
        h = published_hparams(N, D, seq_len=spec.seq_len)
        below = N < STEP_LAW_N_RANGE[0]
        return h.lr * (PROXY_LR_FACTOR if below else 1.0), h.batch_tokens * (PROXY_BATCH_FACTOR if below else 1.0)


def _published() -> ProxyLaw:
    return ProxyLaw(f"published Step Law (arXiv 2503.04715), below N = {STEP_LAW_N_RANGE[0]:.2g} scaled by "
                    f"lr x {PROXY_LR_FACTOR:g}, batch x {PROXY_BATCH_FACTOR:g} (bench/bench_hparams.py)")


def _store(cfg: StudyConfig, storage: Storage | None) -> Storage | None:
    """The config's store, or None where there is none yet (a SQLite file not created: no study in it)."""
    if storage is not None:
        return storage
    uri = cfg.resolved_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return None
    return get_storage(uri, create=False)


def _param(spec: ProxySpec) -> str:
    """A spec's parametrization as far as the best lr depends on it: muP's read-out multiplier alpha too."""
    return f"mup, alpha {spec.mup_output_mult:g}" if spec.parametrization == "mup" else spec.parametrization


def _fit_runs(store: Storage, name: str) -> list[dict[str, Any]]:
    return [r for r in store.runs(name, "fit") if r["tags"].get("mixopt.fit") == "hparams"]


def _fitted(store: Storage, name: str, what: str) -> ProxyLaw:
    """The law fitted to study ``name``'s runs the way its last ``fit --kind hparams`` run did (tolerance,
    optimum; the defaults when it has none)."""
    fits = _fit_runs(store, name)
    last = fits[-1]["params"] if fits else {}
    tolerance = float(last.get("tolerance", DEFAULT_TOLERANCE))
    optimum = str(last.get("optimum", "kept"))  # fits logged before the option existed read the kept set
    study = load_study(name, store)
    params = sorted({_param(t.spec) for t in study.trials if t.spec is not None})
    if len(params) > 1:
        raise ConfigError(f"{what}: study {name!r} holds runs of parametrizations {' and '.join(params)}; a law fitted "
                          "across them does not apply to either (sweep each in a study of its own)")
    try:
        fit = fit_hparams(table_from_trials(study.trials), tolerance, bootstrap=0, source=f"{what} {name!r}",
                          optimum=optimum)
    except UserError as e:
        raise ConfigError(f"{what}: {e}") from None
    return ProxyLaw(f"Step-Law forms fitted to study {name!r} ({fit.n_kept} of {fit.n_runs} runs, {fit.sizes} sizes): "
                    f"lr = {math.exp(fit.lr.c):.4g} N^{fit.lr.n_exp:.3f} D^{fit.lr.d_exp:.3f}, batch = "
                    f"{math.exp(fit.batch.c):.4g} D^{fit.batch.d_exp:.3f} tokens", fit, params[0] if params else None)


def proxy_law(cfg: StudyConfig, storage: Storage | None = None) -> ProxyLaw:
    """The law for the config's ``auto`` keys (see the module docstring); ConfigError if none applies."""
    h = cfg.hparams
    store = _store(cfg, storage)
    if h.study is not None:
        if store is None or store.load_meta(h.study) is None:
            raise ConfigError(f"hparams.study: no study {h.study!r} in {cfg.resolved_tracking_uri()} (run "
                              "`mixopt hparams-sweep` first, or leave hparams.study out)")
        return _fitted(store, h.study, "hparams.study")
    if h.law != "published" and store is not None and store.load_meta(cfg.study) is not None:
        if _fit_runs(store, cfg.study):
            return _fitted(store, cfg.study, f"study {cfg.study!r}'s hparams fit")
    if h.law == "fitted":
        raise ConfigError(f"hparams.law: fitted, but no law is fitted: name a sweep study (hparams.study), or run "
                          f"`mixopt fit --kind hparams` on study {cfg.study!r}")
    return _published()


def resolve_spec(spec: ProxySpec, law: ProxyLaw, lr: bool, batch: bool, where: str = "proxy") -> ProxySpec:
    """``spec`` with its lr and/or batch size from ``law`` (``where`` names the key in errors)."""
    if not (lr or batch):
        return spec
    got_lr, bt = law.at(spec, f"{where}.{'lr' if lr else 'batch_size'}")
    changes: dict[str, Any] = {}
    if lr:
        changes["lr"] = float(f"{got_lr:.4g}")
        if not 0 < changes["lr"] <= 1:
            raise ConfigError(f"{where}.lr: auto gives {got_lr:.4g} ({law.source}), outside (0, 1]; set it by hand")
    if batch:
        changes["batch_size"] = max(1, round(bt / spec.seq_len))
        if changes["batch_size"] * spec.seq_len > spec.tokens:
            raise ConfigError(f"{where}.batch_size: auto gives {changes['batch_size']} sequences ({bt:,.0f} tokens per "
                              f"step), more than {where}.tokens = {spec.tokens:,}; raise the tokens or set it by hand")
    return replace(spec, **changes)


def _stored(cfg: StudyConfig, store: Storage | None) -> dict[str, Any] | None:
    """The resolved config of the study as it was created, when it resolved the same ``auto`` keys."""
    meta = store.load_meta(cfg.study) if store is not None else None
    stored = (meta.extra.get("config") or {}) if meta is not None else {}
    h = stored.get("hparams") or {}
    return stored if h.get("auto") == list(cfg.hparams.auto) and h.get("resolved") else None


def resolve_config(cfg: StudyConfig, storage: Storage | None = None) -> StudyConfig:
    """``cfg`` with every ``auto`` lr / batch size resolved (unchanged without any); the numbers and the
    law are recorded in ``hparams.resolved`` and ``hparams.source``. ConfigError: no law applies."""
    if not unresolved(cfg.hparams):
        return cfg
    store = _store(cfg, storage)
    old = _stored(cfg, store)
    if old is not None:  # a resumed study keeps its numbers
        proxy = replace(cfg.proxy, **{k: old["proxy"][k] for k in AUTO_KEYS if f"proxy.{k}" in cfg.hparams.auto})
        ladder = []
        for i, entry in enumerate(cfg.ladder):
            wanted = dict(zip(AUTO_KEYS, rung_auto(cfg.hparams, i, entry)))
            ladder.append({**entry, **{k: old["ladder"][i][k] for k, w in wanted.items() if w}})
        return replace(cfg, proxy=proxy, ladder=ladder,
                       hparams=replace(cfg.hparams, resolved=dict(old["hparams"]["resolved"]),
                                       source=f"{old['hparams'].get('source', '')} (as study {cfg.study!r} was created)"))
    law = proxy_law(cfg, store)
    auto = cfg.hparams.auto
    proxy = resolve_spec(cfg.proxy, law, "proxy.lr" in auto, "proxy.batch_size" in auto)
    resolved = {f"proxy.{k}": getattr(proxy, k) for k in ("lr", "batch_size") if f"proxy.{k}" in auto}
    ladder = []
    for i, entry in enumerate(cfg.ladder):
        want_lr, want_b = rung_auto(cfg.hparams, i, entry)
        if want_lr or want_b:  # the rung as ladder_specs builds it, then its own numbers
            spec = from_dict(ProxySpec, merge_overrides(proxy.to_dict(), entry), f"ladder[{i}]")
            spec = resolve_spec(spec, law, want_lr, want_b, f"ladder[{i}]")
            entry = {**entry, **({"lr": spec.lr} if want_lr else {}), **({"batch_size": spec.batch_size} if want_b else {})}
            resolved.update({f"ladder[{i}].{k}": entry[k] for k, w in (("lr", want_lr), ("batch_size", want_b)) if w})
        ladder.append(entry)
    return replace(cfg, proxy=proxy, ladder=ladder, hparams=replace(cfg.hparams, resolved=resolved, source=law.source))


def resolve_derived(cfg: StudyConfig, specs: Sequence[ProxySpec], where: str,
                    storage: Storage | None = None) -> tuple[list[ProxySpec], dict[str, Any]]:
    """Specs derived from the config's proxy (a transfer target and its rungs) with the proxy's ``auto`` keys
    resolved again at their own size: (specs, {"<where>[i].lr": ...}). Unchanged where the proxy has none."""
    want_lr, want_b = ("proxy.lr" in cfg.hparams.auto), ("proxy.batch_size" in cfg.hparams.auto)
    if not (want_lr or want_b):
        return list(specs), {}
    law = proxy_law(cfg, storage)
    out, resolved = [], {}
    for i, s in enumerate(specs):
        r = resolve_spec(s, law, want_lr, want_b, f"{where}[{i}]")
        out.append(r)
        resolved.update({f"{where}[{i}].{k}": getattr(r, k) for k, w in (("lr", want_lr), ("batch_size", want_b)) if w})
    return out, resolved


__all__ = ["PROXY_BATCH_FACTOR", "PROXY_LR_FACTOR", "ProxyLaw", "proxy_law", "resolve_config",
           "resolve_derived", "resolve_spec"]
