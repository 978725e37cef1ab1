"""From a stage DAG to a series-parallel plan: the shape of the Celery canvas.

A series split is taken only where it costs no parallelism: everything before it is an
ancestor of everything after it. Independent parts become parallel branches. A DAG that is
not series-parallel (rare: an "N" shape) falls back to running its sources first, which is
correct but may wait a little longer than strictly needed; ``Plan.exact`` says which.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    stage: str


@dataclass(frozen=True)
class Series:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Parallel:
    parts: tuple[Node, ...]


Node = Step | Series | Parallel


@dataclass(frozen=True)
class Plan:
    root: Node
    exact: bool

    def stages(self) -> list[str]:
        return list(_stages(self.root))


def _stages(node: Node) -> Iterable[str]:
    if isinstance(node, Step):
        yield node.stage
    else:
        for part in node.parts:
            yield from _stages(part)


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Stages so that each comes after its dependencies; ties keep the given order."""
    remaining = {stage: set(d for d in ds if d in deps) for stage, ds in deps.items()}
    order: list[str] = []
    placed: set[str] = set()
    while remaining:
        ready = [s for s, ds in remaining.items() if ds <= placed]
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(remaining)}")
        for stage in ready:
            order.append(stage)
            placed.add(stage)
            del remaining[stage]
    return order


def plan(deps: Mapping[str, Sequence[str]]) -> Plan:
    """``deps`` maps each stage to the stages it depends on (template order kept).

    Plans are immutable and depend on ``deps`` alone, so each shape is planned once per
    process: every launch of a template after the first costs one pass to build the key."""
    return _plan(tuple((stage, tuple(ds)) for stage, ds in deps.items()))


@functools.lru_cache(maxsize=256)
def _plan(shape: tuple[tuple[str, tuple[str, ...]], ...]) -> Plan:
    deps = dict(shape)
    order = topological_order(deps)
    ancestors: dict[str, frozenset[str]] = {}
    for stage in order:
        found: set[str] = set()
        for dep in deps[stage]:
            found.add(dep)
            found |= ancestors[dep]
        ancestors[stage] = frozenset(found)
    position = {stage: i for i, stage in enumerate(order)}
    builder = _Builder(deps, ancestors, position)
    root = builder.decompose(order)
    return Plan(root, builder.exact)


class _Builder:
    def __init__(
        self,
        deps: Mapping[str, Sequence[str]],
        ancestors: Mapping[str, frozenset[str]],
        position: Mapping[str, int],
    ) -> None:
        self.deps = deps
        self.ancestors = ancestors
        self.position = position
        self.exact = True

    def decompose(self, nodes: list[str]) -> Node:
        # Series cuts are taken in a loop, not by recursing on the rest: a chain of 1,000
        # stages would otherwise nest 1,000 calls deep.
        parts: list[Node] = []
        while True:
            if len(nodes) == 1:
                parts.append(Step(nodes[0]))
                break
            components = [nodes] if self._one_source(nodes) else self._components(nodes)
            if len(components) > 1:
                parts.append(Parallel(tuple(self.decompose(c) for c in components)))
                break
            cut = self._series_cut(nodes)
            if cut is None:
                # Not series-parallel: run this part's sources first, then the rest.
                self.exact = False
                members = set(nodes)
                heads = [n for n in nodes if not (set(self.deps[n]) & members)]
                cut_off = set(heads)
                parts.append(self.decompose(heads))
                nodes = [n for n in nodes if n not in cut_off]
                continue
            parts.append(self.decompose(nodes[:cut]))
            nodes = nodes[cut:]
        return parts[0] if len(parts) == 1 else _series(*parts)

    def _series_cut(self, nodes: list[str]) -> int | None:
        """The shortest prefix that every later source depends on entirely, if any."""
        members = set(nodes)
        prefix: set[str] = set()
        for k in range(1, len(nodes)):
            prefix.add(nodes[k - 1])
            sources = (
                y for y in nodes[k:] if all(d in prefix or d not in members for d in self.deps[y])
            )
            if all(prefix <= self.ancestors[y] for y in sources):
                return k
        return None

    def _one_source(self, nodes: list[str]) -> bool:
        """One node without dependencies among ``nodes``: every node leads back to it, so
        they are one component (the common case, found without building the graph)."""
        members = set(nodes)
        sources = 0
        for node in nodes:
            if not any(d in members for d in self.deps[node]):
                sources += 1
                if sources > 1:
                    return False
        return sources == 1

    def _components(self, nodes: list[str]) -> list[list[str]]:
        """Weakly connected components, each in topological order."""
        members = set(nodes)
        neighbours: dict[str, set[str]] = {n: set() for n in nodes}
        for node in nodes:
            for dep in self.deps[node]:
                if dep in members:
                    neighbours[node].add(dep)
                    neighbours[dep].add(node)
        seen: set[str] = set()
        components: list[list[str]] = []
        for node in nodes:
            if node in seen:
                continue
            stack, component = [node], []
            seen.add(node)
            while stack:
                current = stack.pop()
                component.append(current)
                for other in neighbours[current] - seen:
                    seen.add(other)
                    stack.append(other)
            components.append(sorted(component, key=self.position.__getitem__))
        return components


def _series(*parts: Node) -> Series:
    flat: list[Node] = []
    for part in parts:
        flat.extend(part.parts if isinstance(part, Series) else (part,))
    return Series(tuple(flat))
