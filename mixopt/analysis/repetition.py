"""Repetition: epochs of each domain at the target budget and what repeating costs.

**Data-constrained scaling law** (Muennighoff et al. 2023, "Scaling Data-Constrained Language
Models", arXiv 2305.16264; release github.com/huggingface/datablations, README section
"Parametric Fit")::

    L(N, D, U_D) = E + A / N'**alpha + B / D'**beta
    D' = U_D + U_D * R_D* * (1 - exp(-R_D / R_D*)),     R_D = D / U_D - 1  (repetitions)
    N' = U_N + U_N * R_N* * (1 - exp(-R_N / R_N*)),     U_N = min(N, N_opt(U_D)),  R_N = N / U_N - 1

with the release's constants (its C4 fit, ``a, b, e, alpha, beta, rd_star, rn_star``):
A = exp(6.255414), B = exp(7.3049974), E = exp(0.6254804), alpha = beta = 0.3526596,
R_D* = 15.387756, R_N* = 5.309743; ``N_opt(D) = (D G)**(beta/alpha) G`` with
``G = (alpha A / (beta B))**(1/(alpha+beta))`` (the README's ``D_to_N``). N counts parameters
and D tokens as in the paper; absolute losses are those of C4 models: use differences.

**A mixture** of domains i with weights w_i and unique tokens U_i, trained on D tokens, sees
``D_i = w_i D`` tokens of domain i: ``epochs_i = w_i D / U_i``. We take the mixture's effective
data as the sum of its domains' (each domain repeated on its own: ``D'_i = D_i`` when
``D_i <= U_i``, else the law's ``D'`` with ``U_D = U_i``) and the unique tokens it sees as
``sum_i min(D_i, U_i)`` for the parameter term; for one domain this is exactly the law. The
**penalty** is ``L(N, D, repeated) - L(N, D, all unique)``. The paper finds that up to ~4 epochs
of repeated data change the loss negligibly and more cost fast (its abstract): a domain past
``warn_epochs`` = 4 gets a warning. The study's ``space.max_epochs`` stays the hard cap; this only reports.

Example:
    >>> round(DATA_CONSTRAINED.loss(6.34e9, 242e9, 25e9), 6)   # README, Figure 1 (right)
    2.225644
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mixopt.core.errors import UserError

WARN_EPOCHS = 4.0
SOURCE = "data-constrained scaling law (arXiv 2305.16264), constants of github.com/huggingface/datablations README"


@dataclass(frozen=True)
class DataConstrainedLaw:
    """``L(N, D, U) = E + A/N'^alpha + B/D'^beta`` with effective params N' and data D'.

    ``a, b, e`` are the logs of A, B, E (as the release writes them)."""

    a: float = 6.255414
    b: float = 7.3049974
    e: float = 0.6254804
    alpha: float = 0.3526596
    beta: float = 0.3526596
    rd_star: float = 15.387756
    rn_star: float = 5.309743

    @property
    def G(self) -> float:
        A, B = math.exp(self.a), math.exp(self.b)
        return ((self.alpha * A) / (self.beta * B)) ** (1.0 / (self.alpha + self.beta))

    def params_for_data(self, D):
        """Compute-optimal parameters for D tokens (the README's ``D_to_N``)."""
        return (np.asarray(D, float) * self.G) ** (self.beta / self.alpha) * self.G

    def effective_data(self, unique, tokens):
        """D' for ``tokens`` trained on ``unique`` unique tokens (elementwise; D' = tokens if
        tokens <= unique)."""
        U, D = np.asarray(unique, float), np.asarray(tokens, float)
        R = np.maximum(D / U - 1.0, 0.0)
        return np.minimum(U, D) + np.where(D > U, U * self.rd_star * (1.0 - np.exp(-R / self.rd_star)), 0.0)

    def effective_params(self, N, unique):
        """N' for N parameters when ``unique`` tokens make ``N_opt(unique)`` worth training."""
        N = np.asarray(N, float)
        UN = np.minimum(N, self.params_for_data(unique))
        RN = np.maximum(N / UN - 1.0, 0.0)
        return UN + UN * self.rn_star * (1.0 - np.exp(-RN / self.rn_star))

    def loss_at(self, N, D_eff, unique):
        """``E + A/N'^alpha + B/D_eff^beta``: the law with the effective data given directly."""
        A, B, E = math.exp(self.a), math.exp(self.b), math.exp(self.e)
        return E + A / self.effective_params(N, unique) ** self.alpha + B / np.asarray(D_eff, float) ** self.beta

    def loss(self, N, D, U):
        """The release's ``scaling_law(N, D, U)``: N params, D tokens of which U unique (U <= D)."""
        U = np.minimum(np.asarray(U, float), np.asarray(D, float))
        out = self.loss_at(N, self.effective_data(U, D), U)
        return float(out) if np.ndim(out) == 0 else out

    def optimal_allocation(self, C: float, U: float) -> tuple[float, float, float]:
        """(loss, tokens, params) for compute C = 6 N D and U unique tokens: the release's grid
        search around the Chinchilla optimum (``optimal_allocation``), reproduced exactly."""
        a, b = self.beta / (self.alpha + self.beta), self.alpha / (self.alpha + self.beta)
        n0, d0 = self.G * (C / 6) ** a, (1 / self.G) * (C / 6) ** b
        best = (math.inf, math.nan, math.nan)
        for i in np.linspace(1.0001, 3, 500):
            for D, N in ((d0 * i, n0 / i), (d0 / i, n0 * i)):
                loss = self.loss(N, D, min(U, D))
                if loss < best[0]:
                    best = (float(loss), float(D), float(N))
        return best


DATA_CONSTRAINED = DataConstrainedLaw()


def effective_data(unique, tokens, rd_star: float = DATA_CONSTRAINED.rd_star):
    """D' = U + U R_D* (1 - exp(-R_D/R_D*)) with R_D = tokens/U - 1 (no repetition: D' = tokens)."""
    return DataConstrainedLaw(rd_star=rd_star).effective_data(unique, tokens)


def mixture_epochs(mixture: Mapping[str, float], unique_tokens: Mapping[str, float],
                   target_tokens: float) -> dict[str, float]:
    """Epochs of each domain, ``w_i * D / U_i``, at a target budget of D tokens."""
    if not (isinstance(target_tokens, (int, float)) and math.isfinite(target_tokens) and target_tokens > 0):
        raise UserError(f"target tokens: {target_tokens!r} must be a number > 0")
    out = {}
    for d, w in mixture.items():
        if w <= 0:
            out[d] = 0.0
            continue
        if d not in unique_tokens:
            raise UserError(f"unique tokens: no count for domain {d!r} (weight {w:.3g}); "
                            f"known: {', '.join(sorted(unique_tokens)) or '(none)'}")
        u = unique_tokens[d]
        if not (isinstance(u, (int, float)) and math.isfinite(u) and u > 0):
            raise UserError(f"unique tokens.{d}: {u!r} must be a number > 0 (the domain has weight {w:.3g})")
        out[d] = float(w) * float(target_tokens) / float(u)
    return out


@dataclass(frozen=True)
class DomainRepetition:
    domain: str
    weight: float
    unique_tokens: float
    tokens: float  # w_i * D
    epochs: float  # tokens / unique_tokens
    effective_tokens: float  # D'_i


@dataclass(frozen=True)
class RepetitionReport:
    """What a mixture's repetition costs at N params and D target tokens (see the module doc).

    ``penalty`` = ``loss_repeated - loss_unique`` (nats under the law, >= 0);
    ``effective_fraction`` = D'/D; ``warnings``: one line per domain past ``warn_epochs``."""

    params: float
    target_tokens: float
    domains: tuple[DomainRepetition, ...]
    effective_tokens: float
    effective_fraction: float
    unique_tokens_seen: float
    loss_repeated: float
    loss_unique: float
    penalty: float
    max_epochs: float
    warn_epochs: float
    warnings: tuple[str, ...]
    source: str = SOURCE

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "domains"}
        d["warnings"] = list(self.warnings)
        d["domains"] = {r.domain: {k: v for k, v in r.__dict__.items() if k != "domain"} for r in self.domains}
        return d


def repetition_report(mixture: Mapping[str, float], unique_tokens: Mapping[str, float], target_tokens: float,
                      params: float, law: DataConstrainedLaw = DATA_CONSTRAINED,
                      warn_epochs: float = WARN_EPOCHS) -> RepetitionReport:
    """Per-domain epochs, effective data and the loss penalty of a mixture's repetition.

    Args: mixture: domain -> weight (a :class:`mixopt.core.mixture.Mixture` or any mapping
    summing to 1); unique_tokens: domain -> unique training tokens U_i; target_tokens: D of
    the big run; params: N of the big run (the law's parameter count).
    """
    if not (isinstance(params, (int, float)) and math.isfinite(params) and params > 0):
        raise UserError(f"params: {params!r} must be a number > 0")
    epochs = mixture_epochs(mixture, unique_tokens, target_tokens)
    rows = []
    for d, w in mixture.items():
        tok = float(w) * float(target_tokens)
        u = float(unique_tokens.get(d) or 0.0)
        eff = float(law.effective_data(u, tok)) if w > 0 else 0.0
        rows.append(DomainRepetition(d, float(w), u, tok, epochs[d], eff))
    d_eff = sum(r.effective_tokens for r in rows)
    seen = sum(min(r.tokens, r.unique_tokens) for r in rows if r.weight > 0)
    loss_rep = float(law.loss_at(params, d_eff, seen))
    loss_uni = float(law.loss(params, target_tokens, target_tokens))
    warns = tuple(f"{r.domain}: {r.epochs:.3g} epochs ({r.tokens:.3g} of {r.unique_tokens:.3g} unique tokens) is past "
                  f"{warn_epochs:g}; repeated tokens are worth {r.effective_tokens / r.tokens:.0%} of fresh ones here"
                  for r in rows if r.epochs > warn_epochs)
    return RepetitionReport(float(params), float(target_tokens), tuple(rows), d_eff, d_eff / float(target_tokens),
                            seen, loss_rep, loss_uni, loss_rep - loss_uni, max(epochs.values()), float(warn_epochs),
                            warns)


__all__ = ["DATA_CONSTRAINED", "DataConstrainedLaw", "DomainRepetition", "RepetitionReport", "WARN_EPOCHS",
           "effective_data", "mixture_epochs", "repetition_report"]
