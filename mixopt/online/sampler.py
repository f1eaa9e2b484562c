"""For your own training loop: draw examples by a mixer's weights, and report the losses back.

:class:`DomainSampler` draws each example's domain by the current weights (seeded; its
``state_dict`` resumes the same draws), then the next example of that domain's dataset (any
indexable dataset: list, numpy array, map-style torch Dataset, shuffled per epoch; or any
re-iterable: cycled in its own order). :class:`MixerCallback` does the mixer's side of a step:
``on_step_begin`` runs the evaluation the method asks for, ``on_step_end`` turns per-example
losses into per-domain means and reports them. Neither imports torch: tensors are read through
``.detach().cpu()`` and ``float()``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixopt.core.errors import OnlineMixerError
from mixopt.online.base import OnlineMixer, StepPlan, as_number


@dataclass(frozen=True)
class Batch:
    """``examples[i]`` came from domain ``domains[i]``."""

    examples: list[Any]
    domains: list[str]


class _Stream:
    """One domain's examples, endlessly: indexable data by (shuffled) epochs, iterables cycled."""

    def __init__(self, name: str, data: Any, seed: int, shuffle: bool) -> None:
        if isinstance(data, (str, bytes, Mapping)) or not (hasattr(data, "__iter__") or hasattr(data, "__getitem__")):
            raise OnlineMixerError(f"sampler: domain {name!r}: dataset must be indexable or iterable, got "
                                   f"{type(data).__name__}")
        self.name, self.data, self.shuffle = name, data, shuffle
        self.indexable = hasattr(data, "__len__") and hasattr(data, "__getitem__")
        if self.indexable and len(data) == 0:
            raise OnlineMixerError(f"sampler: domain {name!r}: dataset is empty")
        self.key = [seed, zlib.crc32(name.encode())]
        self.epoch, self.pos = 0, 0
        self._it: Iterator[Any] | None = None
        self._perm: tuple[int, np.ndarray | None] = (-1, None)

    def next(self) -> Any:
        if self.indexable:
            n = len(self.data)
            if self.pos >= n:
                self.epoch, self.pos = self.epoch + 1, 0
            i = self.pos
            if self.shuffle:
                if self._perm[0] != self.epoch:
                    self._perm = (self.epoch, np.random.default_rng([*self.key, self.epoch]).permutation(n))
                i = int(self._perm[1][i])
            self.pos += 1
            return self.data[i]
        if self._it is None:
            self._it = iter(self.data)
            for _ in range(self.pos):  # resume: the same iterable yields the same sequence
                if next(self._it, _END) is _END:
                    raise OnlineMixerError(f"sampler: domain {self.name!r} yields fewer than the {self.pos} examples "
                                           "the saved state has drawn this epoch; cannot resume")
        x = next(self._it, _END)
        if x is _END:
            self._it = iter(self.data)
            x = next(self._it, _END)
            if x is _END:
                raise OnlineMixerError(f"sampler: domain {self.name!r} yields no more examples (an exhausted one-shot "
                                       "iterator?); pass a list, a Dataset or another re-iterable to cycle through epochs")
            self.epoch, self.pos = self.epoch + 1, 0
        self.pos += 1
        return x


_END = object()


class DomainSampler:
    """Draws examples from per-domain datasets by a mixer's current weights.

    Args:
        datasets: domain -> dataset (indexable or re-iterable), one per domain of the weights.
        weights: an :class:`OnlineMixer` (its ``weights()`` is read at every draw), a fixed mapping
            domain -> weight, or a callable returning one.
        seed: seeds the domain draws and the per-epoch shuffles.
        shuffle: shuffle indexable datasets afresh every epoch (iterables keep their order).

    Example:
        >>> s = DomainSampler({"a": [1, 2, 3], "b": ["x", "y"]}, {"a": 0.5, "b": 0.5}, seed=0)
        >>> batch = s.draw(4)
        >>> len(batch.examples), set(batch.domains) <= {"a", "b"}
        (4, True)
    """

    def __init__(self, datasets: Mapping[str, Any], weights: OnlineMixer | Mapping[str, float] | Callable[[], Any],
                 *, seed: int = 0, shuffle: bool = True) -> None:
        if not isinstance(datasets, Mapping) or not datasets:
            raise OnlineMixerError("sampler: datasets must be a non-empty mapping domain -> dataset")
        if isinstance(weights, OnlineMixer):
            self.domains, self._fn = weights.domains, weights.weights
        elif isinstance(weights, Mapping):
            self.domains, fixed = tuple(datasets), dict(weights)
            self._fn = lambda: fixed
        elif callable(weights):
            self.domains, self._fn = tuple(datasets), weights
        else:
            raise OnlineMixerError(f"sampler: weights must be a mixer, a mapping or a callable, got "
                                   f"{type(weights).__name__}")
        if set(self.domains) != set(datasets):
            raise OnlineMixerError(f"sampler: datasets name domains {sorted(datasets)} but the weights are over "
                                   f"{sorted(self.domains)}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise OnlineMixerError(f"sampler: seed must be an integer, got {seed!r}")
        self.seed = seed
        self._streams = [_Stream(d, datasets[d], seed, shuffle) for d in self.domains]
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self.drawn = 0
        self._weight_vector()  # a bad fixed mapping fails here, not at the first draw

    def _weight_vector(self) -> np.ndarray:
        w = self._fn()
        if not isinstance(w, Mapping) or set(w) != set(self.domains):
            raise OnlineMixerError(f"sampler: weights must map exactly the domains {', '.join(self.domains)}, got {w!r}")
        x = np.array([as_number(w[d]) for d in self.domains], dtype=float)  # None -> nan
        if not np.all(np.isfinite(x)) or np.any(x < 0) or x.sum() <= 0:
            raise OnlineMixerError(f"sampler: weights {w!r} must be finite, >= 0, and not all 0")
        return x / x.sum()

    def draw(self, n: int) -> Batch:
        """``n`` examples, each from a domain drawn by the current weights."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise OnlineMixerError(f"sampler.draw: n must be an integer >= 1, got {n!r}")
        idx = self._rng.choice(len(self.domains), size=n, p=self._weight_vector())
        examples = [self._streams[j].next() for j in idx.tolist()]
        self.drawn += n
        return Batch(examples, [self.domains[j] for j in idx.tolist()])

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self

    def __next__(self) -> tuple[str, Any]:
        b = self.draw(1)
        return b.domains[0], b.examples[0]

    def state_dict(self) -> dict[str, Any]:
        """The draw generator and each domain's (epoch, position): resumes the same sequence."""
        return {"seed": self.seed, "domains": list(self.domains), "drawn": self.drawn,
                "rng": self._rng.bit_generator.state, "streams": {s.name: [s.epoch, s.pos] for s in self._streams}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``, over the same datasets (iterables are re-read up to the saved position)."""
        if not isinstance(state, Mapping) or state.get("seed") != self.seed or state.get("domains") != list(self.domains):
            raise OnlineMixerError(f"sampler.load_state_dict: the state is from another sampler (seed and domains must "
                                   f"be {self.seed} and {list(self.domains)})")
        streams = state.get("streams")
        if not isinstance(streams, Mapping) or set(streams) != set(self.domains) or not all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and x >= 0 for x in v)
                for v in streams.values()):
            raise OnlineMixerError("sampler.load_state_dict: streams must map every domain to [epoch, position]")
        rng = np.random.Generator(np.random.PCG64())
        try:
            rng.bit_generator.state = state.get("rng")
        except (TypeError, ValueError, KeyError) as e:
            raise OnlineMixerError(f"sampler.load_state_dict: rng state is not a PCG64 state ({e})") from None
        drawn = state.get("drawn", 0)
        if isinstance(drawn, bool) or not isinstance(drawn, int) or drawn < 0:
            raise OnlineMixerError(f"sampler.load_state_dict: drawn must be an integer >= 0, got {drawn!r}")
        self._rng, self.drawn = rng, drawn
        for s in self._streams:
            s.epoch, s.pos = streams[s.name]
            s._it, s._perm = None, (-1, None)


def per_domain_means(losses: Any, domains: Sequence[str]) -> dict[str, float]:
    """Mean loss per domain from per-example losses (a list, numpy array or tensor of shape (B,))."""
    if hasattr(losses, "detach"):  # a torch tensor (any dtype, any device)
        losses = losses.detach().float().cpu().numpy()
    try:
        x = np.asarray(losses, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise OnlineMixerError(f"per_domain_means: losses must be numbers (one per example), got {losses!r:.80}") \
            from None
    if len(x) != len(domains):
        raise OnlineMixerError(f"per_domain_means: {len(x)} losses for {len(domains)} domain labels")
    names, inv = np.unique(np.asarray(domains, dtype=object).astype(str), return_inverse=True)
    sums, counts = np.bincount(inv, weights=x, minlength=len(names)), np.bincount(inv, minlength=len(names))
    return {str(d): float(s / c) for d, s, c in zip(names, sums, counts)}


class MixerCallback:
    """The mixer's side of each training step, for a hand-written loop.

    Args:
        mixer: the online mixer.
        evaluate: called with no arguments when the method asks for an evaluation; returns the
            per-domain validation losses (domain -> mean loss, every domain).

    ``on_step_begin(step)`` -> the :class:`StepPlan` to train by (evaluation done if due);
    ``on_step_end(step, losses, domains=None, reference=None)`` reports the step: ``losses`` is
    per-example (with ``domains``, the batch's domain labels) or a mapping domain -> mean loss;
    ``reference`` likewise (DoReMi's reference-model losses on the same batch).
    ``example_weights(domains)`` gives each example's loss weight when the plan has loss weights
    (DoReMi's reweight mode; use ``sum(w * l) / sum(w)``), else None.
    """

    def __init__(self, mixer: OnlineMixer, evaluate: Callable[[], Mapping[str, float]] | None = None) -> None:
        self.mixer, self.evaluate = mixer, evaluate
        self.plan: StepPlan | None = None

    def on_step_begin(self, step: int) -> StepPlan:
        plan = self.mixer.plan()
        if step != plan.step:
            raise OnlineMixerError(f"callback.on_step_begin: step {step!r}, but the mixer is at step {plan.step}; "
                                   "call on_step_end after every step")
        if plan.evaluate:
            if self.evaluate is None:
                raise OnlineMixerError(f"callback: {self.mixer.name} asks for an evaluation at step {step}; pass "
                                       "evaluate= to MixerCallback")
            self.mixer.observe(step, self.evaluate(), kind="eval")
            plan = self.mixer.plan()
        self.plan = plan
        return plan

    def on_step_end(self, step: int, losses: Any = None, domains: Sequence[str] | None = None,
                    reference: Any = None) -> None:
        if domains is not None:
            losses = per_domain_means(losses, domains) if losses is not None else {}
            reference = per_domain_means(reference, domains) if reference is not None else None
        self.mixer.observe(step, {} if losses is None else losses, reference=reference)

    def example_weights(self, domains: Sequence[str]) -> list[float] | None:
        lw = (self.plan or self.mixer.plan()).loss_weights
        if lw is None:
            return None
        unknown = sorted({str(d) for d in domains} - set(lw))
        if unknown:
            raise OnlineMixerError(f"callback.example_weights: unknown domain(s) {unknown}; allowed: {', '.join(lw)}")
        return [lw[d] for d in domains]
