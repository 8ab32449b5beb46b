"""What is compared: the pairs (peer side, medfew side), the configurations, and the issue's targets.

Pure data and pure functions (no torch, no peer imports), so the main test suite can check them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

WAYS = 5
QUERIES = 15
IMAGE_SIZE = 28
CHANNELS = 3
META_BATCH = 4  # gradient-based methods; metric methods are timed per training episode
SHOTS = (1, 5)
INNER_STEPS = (1, 5)
INNER_LR = 0.01
OUTER_LR = 1e-3


@dataclass(frozen=True)
class Pair:
    """One comparison: a peer's implementation against medfew's of the same algorithm.

    Attributes:
        label: Human-readable name (``"learn2learn MAML (2nd order)"``).
        peer: Peer side id, ``"<library>:<algorithm>"``.
        medfew: medfew side id, ``"medfew:<registered method name>"``.
        gradient_based: Has an inner loop (timed per meta-batch of :data:`META_BATCH` tasks with
            1 and 5 inner steps) rather than being a metric method (timed per training episode).
    """

    label: str
    peer: str
    medfew: str
    gradient_based: bool


PAIRS: tuple[Pair, ...] = (
    Pair("learn2learn MAML (2nd order)", "learn2learn:maml", "medfew:maml", True),
    Pair("learn2learn FOMAML", "learn2learn:fomaml", "medfew:fomaml", True),
    Pair("learn2learn Meta-SGD", "learn2learn:metasgd", "medfew:metasgd", True),
    Pair("higher MAML (2nd order)", "higher:maml", "medfew:maml", True),
    Pair("easyfsl PrototypicalNetworks", "easyfsl:protonet", "medfew:protonet", False),
    Pair("easyfsl MatchingNetworks", "easyfsl:matchingnet", "medfew:matchingnet", False),
)


@dataclass(frozen=True)
class Case:
    """One measured configuration of one pair.

    Attributes:
        pair: Label of the :class:`Pair`.
        peer: Peer side id.
        medfew: medfew side id.
        shots: Support images per class ``K``.
        inner_steps: Inner-loop steps (0 for metric methods).
        meta_batch: Tasks per meta-iteration.
        ways: Classes per task ``N``.
        queries: Query images per class ``Q``.
    """

    pair: str
    peer: str
    medfew: str
    shots: int
    inner_steps: int
    meta_batch: int
    ways: int = WAYS
    queries: int = QUERIES

    @property
    def key(self) -> str:
        """Unique id, e.g. ``"learn2learn:maml|5-shot|5-steps|mb4"``."""
        return f"{self.peer}|{self.shots}-shot|{self.inner_steps}-steps|mb{self.meta_batch}"

    @property
    def setting(self) -> str:
        """Short description of the configuration, e.g. ``"5-shot, 5 steps"``."""
        steps = f", {self.inner_steps} step{'s' if self.inner_steps != 1 else ''}" if self.inner_steps else ""
        return f"{self.shots}-shot{steps}"

    def to_dict(self) -> dict:
        """JSON-serialisable fields."""
        return asdict(self)


def build_cases(pairs: tuple[Pair, ...] = PAIRS, shots: tuple[int, ...] = SHOTS,
                inner_steps: tuple[int, ...] = INNER_STEPS) -> list[Case]:
    """Every (pair, shots, inner steps) configuration, pair by pair."""
    cases = []
    for pair in pairs:
        for k in shots:
            if pair.gradient_based:
                cases += [Case(pair.label, pair.peer, pair.medfew, k, s, META_BATCH) for s in inner_steps]
            else:
                cases.append(Case(pair.label, pair.peer, pair.medfew, k, 0, 1))
    return cases


def select_cases(cases: list[Case], only: list[str] | None) -> list[Case]:
    """Cases whose key contains any of the substrings in ``only`` (all cases for ``None``/empty).

    Raises:
        ValueError: A substring matches no case (the message lists the keys).
    """
    if not only:
        return cases
    unmatched = [s for s in only if not any(s in c.key for c in cases)]
    if unmatched:
        raise ValueError(f"--only {unmatched} match no case; keys: {[c.key for c in cases]}")
    return [c for c in cases if any(s in c.key for s in only)]


@dataclass(frozen=True)
class Target:
    """A goal of the issue, as a minimum ratio peer / medfew over a set of cases.

    Attributes:
        label: What the issue asks.
        peers: Peer side ids it covers.
        inner_steps: Inner steps it covers (``None``: all).
        min_time_ratio: Minimum of ``peer seconds / medfew seconds`` in every covered case.
        min_memory_ratio: Minimum of ``peer peak RSS / medfew peak RSS`` (``None``: not asked).
    """

    label: str
    peers: tuple[str, ...]
    inner_steps: int | None
    min_time_ratio: float
    min_memory_ratio: float | None = None

    def covers(self, case: Case) -> bool:
        """Whether ``case`` is one this target is judged on."""
        return case.peer in self.peers and (self.inner_steps is None or case.inner_steps == self.inner_steps)


TARGETS: tuple[Target, ...] = (
    Target("2nd-order MAML, 5 inner steps, meta-batch 4: >= 2x faster than learn2learn, no more peak memory",
           ("learn2learn:maml",), 5, 2.0, 1.0),
    Target("FOMAML: >= 2x faster than learn2learn", ("learn2learn:fomaml",), None, 2.0),
    Target("Meta-SGD: >= 2x faster than learn2learn", ("learn2learn:metasgd",), None, 2.0),
    Target("Prototypical Networks: no slower than easyfsl", ("easyfsl:protonet",), None, 1.0),
    Target("Matching Networks: no slower than easyfsl", ("easyfsl:matchingnet",), None, 1.0),
)
