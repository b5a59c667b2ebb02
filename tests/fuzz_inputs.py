"""Shared pieces of the hypothesis fuzz tests: bounded settings, JSON/YAML-like values
(including path tricks and out-of-range numbers) and mutations of a nested document."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Bounded so the whole fuzz suite stays within seconds; no example database in the tree.
# The deadline catches hangs, not slowness (shared 2-core machines); under CI the examples
# are derandomized so a submission's test run is reproducible.
FUZZ = settings(
    max_examples=120,
    deadline=30_000,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

TRICKY_STRINGS = ["off", "cut", "..", "../..", "/etc", "a/../../b", "job\x00", "", " ", "local"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(TRICKY_STRINGS)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


def mutations(paths: list[tuple[str, ...]], max_size: int = 4):
    """Lists of ``(path, "set" | "delete", value)`` for :func:`mutate`."""
    return st.lists(
        st.tuples(st.sampled_from(paths), st.sampled_from(["set", "delete"]), values),
        min_size=1,
        max_size=max_size,
    )


def mutate(data: dict, path: tuple[str, ...], action: str, value) -> None:
    """Set or delete ``data[path[0]][path[1]]...``, creating sections that are missing."""
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if action == "delete":
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
