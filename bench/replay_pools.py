"""Shared pieces of the replay benchmarks (``bench_replay.py``, ``bench_defaults_all.py``); not a bench.

* :func:`standin_pool`: a synthetic pool of a given shape (rows x domains) for timing pools we do
  not have (a 256-run, 19-domain instruction-tuning pool; a 512-run, 64-domain swarm). It is
  drawn from a **mixing law fitted on a real table** of the same kind: ``y = c + k exp(t . p)``
  fitted (robust least squares, one fixed start, independent of :mod:`mixopt.search`, so the pool
  does not move when the searchers change) on the base table's weights and objective (negated
  for a score); mixtures are Dirichlet draws whose concentration matches the base table's weights
  (per-domain mean, overall concentration by moments), with the per-domain concentrations and the
  law's ``t`` resampled (with replacement) to the new number of domains when it differs; values
  are the law at those mixtures (its exponent ``t . p`` clipped to the range seen on the base table)
  plus the fit's residuals resampled. Seeded, so the same pool every
  run. The figures are for timing and for comparing searchers on equal terms, not the real pools'.
* :class:`GPLogEI` (searcher ``gp_logei``): the baseline of issue 24, a plain BoTorch GP
  (``SingleTaskGP`` defaults: RBF kernel with dimension-scaled priors, standardized outcome, raw
  weights as inputs) fitted from scratch on the rows seen, and analytic
  ``LogExpectedImprovement`` (best_f = best value seen) choosing among the remaining pool rows,
  after ``n_init`` (8) seeded random rows.
* :func:`load_searcher_file`: register a searcher class from a file (e.g. a copy of an older
  ``search/mixing_law.py``) under another name, keeping its own name for seeding, so old and new
  code replay the same seeds in one run.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.core.runs_table import read_runs_table  # noqa: E402
from mixopt.search import register  # noqa: E402
from mixopt.search.base import Proposal, Recommendation, SearchContext, best_completed  # noqa: E402
from mixopt.search.pool import fresh_rows, random_rows  # noqa: E402

# shape -> (base table, objective, maximize): a real table of the same kind as the pool it stands in for
STANDIN_BASES = {
    "256x19": ("admire_ift_3b.csv", "score.avg_id+ood", True),    # 256 instruction-tuning runs, 19 domains
    "512x64": ("olmix_dclm.csv", "objective.mean_bpb", False),    # a 512-run, 64-domain swarm (bits per byte)
}


def _fit_law(W: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(c, log k, t) of ``y = c + k exp(t . p)`` by soft-L1 least squares from the best profile start."""
    from scipy.optimize import least_squares

    n, k = W.shape
    A = np.hstack([np.ones((n, 1)), W])
    spread = float(np.ptp(y))
    best = None
    for c0 in float(y.min()) - np.array([0.02, 0.1, 0.3, 1.0, 3.0]) * spread:
        coef = np.linalg.lstsq(A, np.log(y - c0), rcond=None)[0]
        sse = float(np.sum((c0 + np.exp(A @ coef) - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, np.concatenate([[c0], coef]))
    sol = least_squares(lambda th: (th[0] + np.exp(np.clip(th[1] + W @ th[2:], -700, 700)) - y) / spread,
                        best[1], loss="soft_l1", f_scale=0.05, max_nfev=2000)
    return sol.x


def _dirichlet_alpha(W: np.ndarray) -> np.ndarray:
    """Per-domain Dirichlet concentration matching the rows' mean and (pooled) variance, (k,)."""
    m = W.mean(axis=0)
    v = W.var(axis=0)
    ok = v > 0
    s = float(np.median(m[ok] * (1 - m[ok]) / v[ok] - 1.0)) if ok.any() else 1.0
    return np.clip(m, 1e-4, None) * max(s, 0.05)


def standin_pool(data: Path, shape: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
    """A synthetic pool of ``shape`` ("ROWSxDOMAINS"): W (rows, k), values to minimize (rows,),
    domain names, and one line saying how it was made. See the module docstring."""
    rows, dim = (int(v) for v in shape.lower().split("x"))
    base, objective, maximize = STANDIN_BASES.get(shape, STANDIN_BASES["512x64" if dim > 19 else "256x19"])
    t = read_runs_table(str(Path(data) / base), objective=objective)
    W0, y0 = t.weights(), t.metric(objective) * (-1.0 if maximize else 1.0)
    fin = np.isfinite(y0)
    W0, y0 = W0[fin], y0[fin]
    th = _fit_law(W0, y0)
    resid = y0 - (th[0] + np.exp(th[1] + W0 @ th[2:]))
    rng = np.random.default_rng([seed, rows, dim])
    alpha, tt = _dirichlet_alpha(W0), th[2:]
    if dim != W0.shape[1]:
        pick = rng.choice(W0.shape[1], dim, replace=True)
        alpha = alpha[pick] * alpha.sum() / alpha[pick].sum()
        tt = tt[pick]
    W = rng.dirichlet(alpha, rows)
    z0 = W0 @ th[2:]
    z = np.clip(W @ tt, z0.min(), z0.max())       # no extrapolation beyond the base table's range of the law
    v = th[0] + np.exp(th[1] + z) + rng.choice(resid, rows, replace=True)
    domains = tuple(f"d{i:02d}" for i in range(dim))
    how = (f"stand-in {rows}x{dim}: mixing law fitted on {base} ({objective}{', negated' if maximize else ''}; "
           f"train R^2 {1 - resid.var() / y0.var():.2f}), Dirichlet mixtures matched to its weights, "
           f"law clipped to its range, its residuals resampled; seed {seed}")
    return W, v, domains, how


@dataclass(frozen=True)
class GPLogEI:
    """Baseline: BoTorch ``SingleTaskGP`` (defaults) + analytic ``LogExpectedImprovement`` over the
    pool rows not yet evaluated; ``n_init`` seeded random rows first. Pool mode (``select``);
    ``suggest`` scores Dirichlet draws the same way."""

    name: str = "gp_logei"
    n_init: int = 8

    def _scores(self, ctx: SearchContext, P: np.ndarray) -> np.ndarray:
        """log EI (to maximize) of candidates P (m, k) under a GP on the finite trials. (m,)."""
        import torch
        from botorch.acquisition import LogExpectedImprovement
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from gpytorch.mlls import ExactMarginalLogLikelihood

        X, y = ctx.completed_xy()
        Xt = torch.as_tensor(X, dtype=torch.float64)
        Yt = torch.as_tensor(-y, dtype=torch.float64).unsqueeze(-1)       # BoTorch maximizes
        with torch.random.fork_rng():
            torch.manual_seed((int(ctx.seed) * 1_000_003 + len(y)) % (2**31 - 1))
            model = SingleTaskGP(Xt, Yt)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        acq = LogExpectedImprovement(model, best_f=float(Yt.max()))
        with torch.no_grad():
            return acq(torch.as_tensor(P, dtype=torch.float64).unsqueeze(1)).numpy()

    def select(self, ctx: SearchContext, pool: np.ndarray, n: int) -> list[int]:
        if len(ctx.completed_xy()[1]) < self.n_init:
            return random_rows(ctx, pool, n, f"{self.name}.select")
        idx = fresh_rows(ctx, pool)
        score = self._scores(ctx, np.asarray(pool, dtype=float)[idx])
        return idx[np.argsort(-score, kind="stable")][:n].tolist()

    def suggest(self, ctx: SearchContext, n: int) -> list[Proposal]:
        from mixopt.search.dirichlet import sample

        P = sample(ctx.space, max(512, 4 * n), ctx.rng(f"{self.name}.suggest"))
        idx = self.select(ctx, P, n)
        return Proposal.from_array(P[idx], ctx.space.domains)

    def recommend(self, ctx: SearchContext) -> Recommendation:
        return best_completed(ctx, self.name)


register("gp_logei", __name__, "GPLogEI")


COMPARE_ENV = "MIXOPT_BENCH_COMPARE"     # "label=FILE:CLASS;..." registered at import (spawned workers too)


def load_searcher_file(label: str, spec: str) -> None:
    """Register ``label`` as the searcher class in ``FILE:CLASS`` (e.g. a copy of an older module),
    seeded under the class's own default name so it replays the same random streams as the
    current class. Recorded in the environment, so spawned replay workers register it too."""
    import dataclasses
    import os
    import zlib

    path, _, cls_name = spec.rpartition(":")
    if not path or not Path(path).is_file():
        raise SystemExit(f"--compare {label}={spec}: expected FILE:CLASS with an existing file")
    mod_name = f"_bench_cmp_{zlib.crc32(str(Path(path).resolve()).encode())}"
    if mod_name not in sys.modules:
        s = importlib.util.spec_from_file_location(mod_name, path)
        mod = importlib.util.module_from_spec(s)
        sys.modules[mod_name] = mod
        s.loader.exec_module(mod)          # type: ignore[union-attr]
    mod = sys.modules[mod_name]
    base = getattr(mod, cls_name)
    own = next(f.default for f in dataclasses.fields(base) if f.name == "name")

    def _post_init(self) -> None:
        object.__setattr__(self, "name", own)
        if hasattr(base, "__post_init__"):
            base.__post_init__(self)

    sub = dataclasses.dataclass(frozen=True)(type(f"Compare_{cls_name}", (base,), {"__post_init__": _post_init}))
    setattr(mod, sub.__name__, sub)
    register(label, mod_name, sub.__name__)
    entries = [e for e in os.environ.get(COMPARE_ENV, "").split(";") if e and not e.startswith(f"{label}=")]
    os.environ[COMPARE_ENV] = ";".join(entries + [f"{label}={spec}"])


def _register_from_env() -> None:
    import os

    for entry in filter(None, os.environ.get(COMPARE_ENV, "").split(";")):
        label, _, spec = entry.partition("=")
        load_searcher_file(label, spec)


def budget_for(n_rows: int, budget: int) -> int:
    """The replay budget on a table of n_rows: ``budget``, or every row of a smaller table."""
    return int(min(budget, n_rows))


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


_register_from_env()
