"""Client screen: a client whose runs sit consistently off what other clients measured for the
same architectures is not trusted.

Feedback is attributed to the token it carried (:attr:`placement.serve.storage.store.StoredFeedback.client`).
A client that lies consistently -- every GPU run reported 3-10x slower, or every CPU run as much
faster -- looks, one report at a time, like an honest surprise; across its reports it does not:
compared with the runs of the same architecture signature, mode, device and target by two or
more clients (each a log residual against the performance model, so batch sizes compare), its
offset has the same sign and size run after run. A group's reference is the median of its
clients' medians -- one client, one vote, so a client flooding a group with runs does not become
its reference. Per client and device, the median offset of its compared runs from the reference
is its *bias*; a client is distrusted when, on some device, at least :data:`CLIENT_MIN_ROWS` runs
were compared, the bias exceeds :data:`CLIENT_BIAS_MAX` (2x) in either direction, and it is
outvoted: two or more other clients ran those architectures, or (with one other client, whose
vote and its own meet halfway, so each shows half the disagreement) its runs are the fewer. A
drifted device moves every client's runs alike and shows in no bias; honest clients on the same
target differ by the run-to-run and batch-size spread, a median far below 2x.

Distrusted clients' feedback is left out of the learner's training and gate (reason
``excluded_client_bias``, :func:`placement.serve.learning.rewards.screen_feedback`), of the target
offsets, and of the history the placer decides on (:class:`placement.serve.placer.Placer`): there
every run of the client's, by its name, older ones than the window that judged it too.
Feedback without a client (a service run without tokens) is one client, ``None``, compared like
the others.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CLIENT_MIN_ROWS = 5
"""Runs of a client on one device that must have been compared before its bias can distrust it."""
CLIENT_BIAS_MAX = math.log(2.0)
"""Largest median log offset (either direction) of a client's runs from the other clients' runs of
the same architectures: 2x. Honest clients differ by the batch-size spread (sd ~0.25)."""


@dataclass(frozen=True)
class ClientBias:
    """One client's runs on one device against the other clients' (see the module docstring)."""

    client: str | None
    device: str
    compared_runs: int
    """This client's runs that had another client's run of the same group to compare with."""
    other_runs: int
    """The other clients' runs in those groups."""
    other_clients: int
    """The other clients that ran those groups."""
    bias: float
    """Median log offset of its runs from the median of the others' in the same group."""

    @property
    def distrusted(self) -> bool:
        """At least :data:`CLIENT_MIN_ROWS` compared, the bias beyond :data:`CLIENT_BIAS_MAX`, and
        outnumbered in its groups."""
        outvoted = self.other_clients >= 2 or self.compared_runs < self.other_runs
        return self.compared_runs >= CLIENT_MIN_ROWS and abs(self.bias) > CLIENT_BIAS_MAX and outvoted


def client_biases(clients: Sequence[str | None], groups: Sequence[Hashable], devices: Sequence[str],
                  residuals: npt.ArrayLike) -> list[ClientBias]:
    """Per client and device, the bias of its runs (one entry per run: its client, its group --
    signature, mode, device and target --, its device, its log residual against the model; NaN
    residuals are left out). Only clients with a compared run appear."""
    res = np.asarray(residuals, dtype=np.float64).reshape(-1)
    if not (len(clients) == len(groups) == len(devices) == res.shape[0]):
        raise ValueError("clients, groups, devices and residuals must have one entry per run")
    by_group: dict[Hashable, dict[str | None, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c, g, r in zip(clients, groups, res.tolist(), strict=True):
        if math.isfinite(r):
            by_group[g][c].append(r)
    offsets: dict[tuple[str | None, str], list[float]] = defaultdict(list)
    others: dict[tuple[str | None, str], int] = defaultdict(int)
    other_clients: dict[tuple[str | None, str], set[str | None]] = defaultdict(set)
    device_of = {g: d for g, d in zip(groups, devices, strict=True)}
    for g, per_client in by_group.items():
        if len(per_client) < 2:
            continue
        ref = float(np.median([float(np.median(rs)) for rs in per_client.values()]))  # one client, one vote
        for c, mine in per_client.items():
            key = (c, device_of[g])
            offsets[key].extend(r - ref for r in mine)
            others[key] += sum(len(rs) for other, rs in per_client.items() if other != c)
            other_clients[key].update(other for other in per_client if other != c)
    return [ClientBias(client=c, device=d, compared_runs=len(v), other_runs=others[(c, d)],
                       other_clients=len(other_clients[(c, d)]), bias=float(np.median(v)))
            for (c, d), v in sorted(offsets.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))]


def distrusted_clients(biases: Sequence[ClientBias]) -> set[str | None]:
    """The clients distrusted on any device."""
    return {b.client for b in biases if b.distrusted}
