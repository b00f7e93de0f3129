"""modules.dep of a subset of the kernel's modules, in the order depmod writes it, from modules.dep.

    subset_dep(full, order, subset, direct_deps) -> {relpath: dependencies} | None

depmod lists each module's dependencies (all of them, transitively) sorted by a topological index:
Kahn's algorithm with a stack over the direct dependencies, users before what they use, roots
pushed in modules.order order, and a module's dependencies pushed in the order its undefined
symbols first name them (tools/depmod.c, depmod_calculate_dependencies). For a subset the index
differs from the full kernel's: modules outside it no longer hold back what they use.

What modules.dep says is enough to replay that for the subset, with two facts about the algorithm:
a dependency is pushed when its last user is popped, and an edge implied by others (A uses B and C,
B uses C) never is that last one, so only the transitive reduction of modules.dep's sets counts; and
the dependencies one module pushes at once get consecutive stack slots, so their order in the
kernel's own line for that module is the reverse of the push order. Replaying the whole kernel
must give the kernel's modules.dep back (checked: otherwise None). Where the subset makes a module
push a set of dependencies that the whole kernel never pushed together at it, their order is its
symbol order, which only its ELF symbol table has: `direct_deps(relpath)` reads it (the caller
decodes that one module), None when it cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

Deps = Mapping[str, Sequence[str]]


def _reduction(full: Deps) -> dict[str, list[str]]:
    """The direct dependencies that are not implied by others, in modules.dep's order."""
    sets = {rel: set(deps) for rel, deps in full.items()}
    out = {}
    for rel, deps in full.items():
        if len(deps) < 2:
            out[rel] = list(deps)
            continue
        implied: set[str] = set()
        for d in deps:
            implied |= sets[d]
        out[rel] = [d for d in deps if d not in implied]
    return out


def _replay(
    mods: Sequence[str],
    children: Mapping[str, Sequence[str]],
    push_order: Callable[[str, list[str]], list[str] | None],
) -> tuple[dict[str, int], dict[str, frozenset[str]]] | None:
    """depmod's stack walk over `mods` (in modules.order order): the topological index of each,
    and what each pushed. `push_order(module, ready)` orders what it pushes at once."""
    users = dict.fromkeys(mods, 0)
    for rel in mods:
        for c in children[rel]:
            users[c] += 1
    stack = [rel for rel in mods if users[rel] == 0]
    index: dict[str, int] = {}
    pushed: dict[str, frozenset[str]] = {}
    while stack:
        rel = stack.pop()
        index[rel] = len(index)
        ready = []
        for c in children[rel]:
            users[c] -= 1
            if users[c] == 0:
                ready.append(c)
        if len(ready) > 1:
            ordered = push_order(rel, ready)
            if ordered is None:
                return None
            ready = ordered
        pushed[rel] = frozenset(ready)
        stack.extend(ready)
    if len(index) != len(mods):
        return None  # a cycle: depmod fails on it
    return index, pushed


def subset_dep(
    full: Deps,
    order: Sequence[str],
    subset: Sequence[str],
    direct_deps: Callable[[str], list[str] | None],
) -> dict[str, list[str]] | None:
    """`full`: the kernel's modules.dep (relpath → dependencies as listed); `order`: its modules in
    modules.order order; `subset`: the same for the subset (closed under dependencies)."""
    children = _reduction(full)
    position = {}  # relpath → {dependency: its place in the kernel's line}

    def line_pos(rel: str) -> dict[str, int]:
        if rel not in position:
            position[rel] = {d: i for i, d in enumerate(full[rel])}
        return position[rel]

    def kernel_push(rel: str, ready: list[str]) -> list[str]:
        pos = line_pos(rel)
        return sorted(ready, key=lambda d: -pos[d])

    replayed = _replay(order, children, kernel_push)
    if replayed is None:
        return None
    index, pushed = replayed
    at = index.__getitem__
    for deps in full.values():
        if len(deps) > 1:
            placed = list(map(at, deps))
            if placed != sorted(placed):
                return None  # the replay is not what this kernel's depmod did

    def subset_push(rel: str, ready: list[str]) -> list[str] | None:
        if pushed[rel].issuperset(ready):
            return kernel_push(rel, ready)
        symbol_order = direct_deps(rel)
        if symbol_order is None:
            return None
        place = {d: i for i, d in reversed(list(enumerate(symbol_order)))}
        if any(d not in place for d in ready):
            return None
        return sorted(ready, key=place.__getitem__)

    replayed = _replay(subset, children, subset_push)
    if replayed is None:
        return None
    sub_index = replayed[0]
    return {rel: sorted(full[rel], key=sub_index.__getitem__) for rel in subset}
