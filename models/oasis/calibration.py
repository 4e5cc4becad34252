"""Offline head calibration for Attention Specialization Routing (ASR).

The network runs with every head ``global`` on a few calibration clips. For sampled query tokens
each head's full attention distribution ``P`` (softmax over all keys) is compared with ``P``
restricted to the query's window / own frame and renormalised, ``P_R = P * 1_R / m_R`` where
``m_R = sum_{j in R} P(j)`` is the attention mass inside ``R``. The divergence is

    KL(P_R || P) = sum_{j in R} P_R(j) log(P_R(j) / P(j)) = -log m_R,

the information a head loses when it is confined to ``R`` (0 when all its attention is already
inside; the other direction, ``KL(P || P_R)``, is infinite whenever any mass lies outside).
Per head the statistics are averaged over sampled queries and clips: ``kl_window``, ``kl_intra``
(mean of ``-log m``) and ``mass_window``, ``mass_intra`` (mean of ``m``).

Assignment (the paper publishes neither thresholds nor head counts; these are our choices):

* by thresholds: ``window`` if ``kl_window <= thresholds["window"]``, else ``intra`` if
  ``kl_intra <= thresholds["intra"]``, else ``global``;
* by ``global_budget = K``: in every layer the K heads that localise worst (largest
  ``min(kl_window, kl_intra)``) stay ``global``; each other head takes ``window`` if
  ``kl_window <= thresholds["window"]`` or ``kl_window <= kl_intra``, else ``intra``.

The statistics mean something only if the heads matter: a head whose output the network does
not use keeps near-uniform attention (nothing trains it), and would be called ``global`` for that
reason alone. So :func:`calibrate` also measures ``attention_effect``: the RMS change of the
network's output, in 8-bit grey levels, when every attention output is zeroed (the network's
output assumed in [0, 1]). Below ``NEGLIGIBLE_EFFECT`` the table is flagged (``effect_negligible``).

Capture contract with the network: each attention module has ``routing: list[str]`` (one entry per
head, settable) and ``qk_observer`` (``None`` or a callable ``(q, k, grid)``), which it calls with
the post-rotary ``q, k`` (B, heads, L, D) before attending; the softmax scale is ``D ** -0.5``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .attention import HEAD_GROUPS, group_mask_rows

STAT_KEYS = ("kl_window", "kl_intra", "mass_window", "mass_intra")
DEFAULT_THRESHOLDS = {"window": 0.2, "intra": 0.2}  # KL 0.2 nats ~ 82% of the attention mass inside
# below this RMS output change (8-bit grey levels) the attention carries no information: a change
# under half a level mostly vanishes when the output is quantised to 8 bits
NEGLIGIBLE_EFFECT = 0.5

# attention masses below this count as this (a head with no mass inside would have infinite KL)
_MIN_MASS = 1e-12


@dataclass
class RoutingTable:
    """Head groups of every attention layer, as stored in ``routing.json``.

    Attributes:
        layers: ``layers[i][h]`` is the group (one of ``HEAD_GROUPS``) of head h of attention layer
            i; layers are numbered in ``model.modules()`` order.
        window: ``(t, h, w)`` window of ``window`` heads, in tokens.
        stats: per layer and head a dict of ``STAT_KEYS`` (nats and fractions), or None.
        attention_effect: RMS change of the network output (8-bit grey levels) when every attention
            output is zeroed, on the calibration clips; None when not measured.
    """

    layers: list[list[str]]
    window: tuple[int, int, int] = (3, 5, 5)
    stats: list[list[dict]] | None = None
    attention_effect: float | None = None

    def __post_init__(self) -> None:
        self.window = tuple(int(n) for n in self.window)
        for i, heads in enumerate(self.layers):
            bad = [g for g in heads if g not in HEAD_GROUPS]
            if bad:
                raise ValueError(f"layer {i}: unknown head group(s) {bad} (expected {', '.join(HEAD_GROUPS)})")

    @classmethod
    def uniform(cls, n_layers: int, n_heads: int, group: str = "global") -> RoutingTable:
        """Every head of every layer in ``group``."""
        return cls([[group] * n_heads for _ in range(n_layers)])

    def counts(self) -> list[dict[str, int]]:
        """Per layer: number of heads in each group."""
        return [{g: heads.count(g) for g in HEAD_GROUPS} for heads in self.layers]

    @property
    def effect_negligible(self) -> bool:
        """True when the attention was measured to change the output by less than ``NEGLIGIBLE_EFFECT``."""
        return self.attention_effect is not None and self.attention_effect < NEGLIGIBLE_EFFECT

    def to_dict(self) -> dict:
        return {"window": list(self.window), "layers": self.layers, "stats": self.stats,
                "attention_effect": self.attention_effect}

    def save(self, path: str | Path) -> None:
        """Write ``routing.json`` (written to a temporary name, then renamed)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> RoutingTable:
        """Read ``routing.json``; raises ``ValueError("PATH: cause")`` on a bad file."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(layers=[list(h) for h in data["layers"]], window=tuple(data.get("window", (3, 5, 5))),
                       stats=data.get("stats"), attention_effect=data.get("attention_effect"))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a routing table ({type(exc).__name__}: {exc})") from None

    def apply(self, model: nn.Module) -> None:
        """Set ``routing`` of the attention modules of ``model`` (in ``modules()`` order)."""
        modules = attention_modules(model)
        if len(modules) != len(self.layers):
            raise ValueError(f"routing table has {len(self.layers)} layers, model has {len(modules)} attention modules")
        for i, (module, heads) in enumerate(zip(modules, self.layers)):
            if len(heads) != len(module.routing):
                raise ValueError(f"layer {i}: routing table has {len(heads)} heads, module has {len(module.routing)}")
            module.routing = list(heads)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The ASR attention modules of ``model``: those with a ``qk_observer`` attribute."""
    return [m for m in model.modules() if hasattr(m, "qk_observer")]


class HeadStats:
    """Accumulates per-head KL and mass statistics from sampled queries of one attention layer.

    Called as ``qk_observer(q, k, grid)``; samples ``queries`` query tokens per call and evaluates
    their softmax over all keys in chunks of ``chunk`` queries, so memory is ``B*heads*chunk*L``.
    """

    def __init__(self, window: tuple[int, int, int], queries: int, generator: torch.Generator, chunk: int = 64):
        self.window = window
        self.queries = queries
        self.generator = generator
        self.chunk = chunk
        self.sums: Tensor | None = None  # (heads, 4) float64, in STAT_KEYS order
        self.count = 0

    @torch.no_grad()
    def __call__(self, q: Tensor, k: Tensor, grid: tuple[int, int, int]) -> None:
        b, n, L, d = q.shape
        rows = torch.randperm(L, generator=self.generator)[: min(self.queries, L)].to(q.device)
        sums = torch.zeros(n, 4, dtype=torch.float64, device=q.device)
        for part in rows.split(self.chunk):
            probs = ((q[:, :, part].float() @ k.float().transpose(-1, -2)) * d**-0.5).softmax(-1)  # (B, n, S, L)
            for j, group in enumerate(("window", "intra")):
                inside = group_mask_rows(grid, group, part, self.window).to(probs.dtype)  # (S, L)
                mass = (probs * inside).sum(-1).clamp_min(_MIN_MASS).double()  # (B, n, S)
                sums[:, j] += (-mass.log()).sum((0, 2))
                sums[:, 2 + j] += mass.sum((0, 2))
        self.sums = sums.cpu() if self.sums is None else self.sums + sums.cpu()
        self.count += b * len(rows)

    def means(self) -> list[dict]:
        """Per head: ``{kl_window, kl_intra, mass_window, mass_intra}`` averaged over queries."""
        if self.sums is None:
            raise RuntimeError("attention layer never ran: did the model call its qk_observer?")
        mean = (self.sums / self.count).tolist()
        return [dict(zip(STAT_KEYS, row)) for row in mean]


def assign_groups(
    stats: list[dict], thresholds: dict[str, float] = DEFAULT_THRESHOLDS, global_budget: int | None = None
) -> list[str]:
    """Groups of one layer's heads from their statistics (rules in the module docstring)."""
    t_window, t_intra = thresholds["window"], thresholds["intra"]
    if global_budget is None:
        return [
            "window" if s["kl_window"] <= t_window else "intra" if s["kl_intra"] <= t_intra else "global"
            for s in stats
        ]
    if global_budget < 0:
        raise ValueError(f"global_budget must be >= 0, got {global_budget}")
    worst = sorted(range(len(stats)), key=lambda h: -min(stats[h]["kl_window"], stats[h]["kl_intra"]))
    keep_global = set(worst[:global_budget])
    return [
        "global" if h in keep_global
        else "window" if s["kl_window"] <= t_window or s["kl_window"] <= s["kl_intra"] else "intra"
        for h, s in enumerate(stats)
    ]


@torch.no_grad()
def calibrate(
    model: nn.Module,
    clips: Iterable[Tensor],
    *,
    queries_per_clip: int = 256,
    thresholds: dict[str, float] = DEFAULT_THRESHOLDS,
    global_budget: int | None = None,
    seed: int = 0,
    window: tuple[int, int, int] | None = None,
) -> RoutingTable:
    """Assign a group to every attention head of ``model`` from its attention on ``clips``.

    Args:
        model: network whose attention modules follow the capture contract (module docstring).
        clips: inputs of ``model``, e.g. (B, T, C, H, W) floats in [0, 1], on the model's device.
        queries_per_clip: query tokens sampled per layer and call (never an (L, L) map).
        thresholds: KL thresholds in nats, keys ``window`` and ``intra``.
        global_budget: if set, exactly this many ``global`` heads per layer (capped at the count).
        seed: seed of the query sampling.
        window: ``(t, h, w)`` window of ``window`` heads, in tokens; default: the first attention
            module's ``window`` attribute, else (3, 5, 5).

    Returns:
        The routing table, with per-head ``stats``. The model's routing and observers are restored.
    """
    modules = attention_modules(model)
    if not modules:
        raise ValueError("model has no attention module with a qk_observer attribute")
    window = tuple(window or getattr(modules[0], "window", (3, 5, 5)))
    generator = torch.Generator().manual_seed(seed)
    saved = [(list(m.routing), m.qk_observer) for m in modules]
    observers = [HeadStats(window, queries_per_clip, generator) for _ in modules]
    squared, count = 0.0, 0
    try:
        for m, obs in zip(modules, observers):
            m.routing = ["global"] * len(m.routing)
            m.qk_observer = obs
        for clip in clips:
            with torch.no_grad():
                out = model(clip).float()
                for m in modules:
                    m.qk_observer = None
                without = _without_attention(model, modules, clip).float()
                for m, obs in zip(modules, observers):
                    m.qk_observer = obs
            squared += float(((out - without) * 255.0).pow(2).sum())
            count += out.numel()
    finally:
        for m, (routing, observer) in zip(modules, saved):
            m.routing, m.qk_observer = routing, observer
    stats = [obs.means() for obs in observers]
    layers = [assign_groups(s, thresholds, global_budget) for s in stats]
    effect = math.sqrt(squared / count) if count else None
    return RoutingTable(layers=layers, window=window, stats=stats, attention_effect=effect)


def _without_attention(model: nn.Module, modules: list[nn.Module], clip: Tensor) -> Tensor:
    """``model(clip)`` with the output of every attention module replaced by zeros."""
    hooks = [m.register_forward_hook(lambda module, args, output: torch.zeros_like(output)) for m in modules]
    try:
        return model(clip)
    finally:
        for hook in hooks:
            hook.remove()


def flop_fraction(table: RoutingTable, grid: tuple[int, int, int]) -> float:
    """Attention FLOPs of ``table`` on ``grid`` as a fraction of all-global (FLOP-ideal cost)."""
    L = math.prod(grid)
    keys = {"global": L, "intra": grid[1] * grid[2], "window": math.prod(min(w, n) for w, n in zip(table.window, grid))}
    total = sum(len(h) for h in table.layers)
    return sum(keys[g] for heads in table.layers for g in heads) / (total * L)
