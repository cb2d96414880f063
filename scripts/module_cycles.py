#!/usr/bin/env python3
"""Import cycles between the modules of each crate.

Every `.rs` file under a crate's `src/` is a module (`lib.rs`/`main.rs` the
root, `a/mod.rs` and `a.rs` the module `a`). A module depends on another
when it names it through `crate::`, `super::` or `self::` paths, in `use`
lines or inline. A module and its ancestors are one unit (a parent declares
its children; children use what the parent defines), so those references
do not count. Any other cycle is reported with the files on it.

Usage: scripts/module_cycles.py [crate directories...]   (default: crates/*)
Exit status 1 when a crate has a cycle.
"""

import pathlib
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*?)\}", re.S)
COMMENT = re.compile(r"//[^\n]*")


def module_of(src, path):
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def references(text, here, is_dir_module):
    """Module paths (tuples) that `text`, in module `here`, names."""
    text = COMMENT.sub("", text)
    found = []

    def resolve(head, tail):
        names = [n for n in tail.split("::") if n]
        if head == "crate":
            base = []
        elif head == "self":
            base = list(here)
        else:  # super: the parent of this module
            base = list(here[:-1])
            while names and names[0] == "super":
                base = base[:-1]
                names = names[1:]
        return tuple(base + names)

    for head, prefix, inner in GROUP.findall(text):
        for item in re.split(r"[,\s]+", inner):
            item = item.strip().split(" as ")[0].strip("{} ")
            if item and item not in ("self", "*"):
                found.append(resolve(head, prefix + "::" + item.replace("::{", "::")))
            elif item == "self":
                found.append(resolve(head, prefix))
    for head, tail in PATH.findall(text):
        found.append(resolve(head, tail))
    return found


def crate_graph(crate):
    src = crate / "src"
    modules = {}
    for path in sorted(src.rglob("*.rs")):
        modules[module_of(src, path)] = path
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        for ref in references(path.read_text(), module, path.name == "mod.rs"):
            # the deepest module the path names
            target = None
            for n in range(len(ref), -1, -1):
                if ref[:n] in modules:
                    target = ref[:n]
                    break
            if target is None or target == module:
                continue
            related = target[: len(module)] == module or module[: len(target)] == target
            if not related:
                graph[module].add(target)
    return modules, graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main(argv):
    crates = [pathlib.Path(a) for a in argv] or sorted(pathlib.Path("crates").iterdir())
    failed = False
    for crate in crates:
        if not (crate / "src").is_dir():
            continue
        modules, graph = crate_graph(crate)
        found = cycles(graph)
        edges = sum(len(v) for v in graph.values())
        if not found:
            print(f"{crate.name}: {len(modules)} modules, {edges} dependencies, no cycles")
            continue
        failed = True
        for component in found:
            files = [str(modules[m].relative_to(crate)) for m in component]
            print(f"{crate.name}: cycle between {', '.join(files)}")
            for m in component:
                inside = sorted(str(modules[t].relative_to(crate)) for t in graph[m] if t in component)
                print(f"    {modules[m].relative_to(crate)} -> {', '.join(inside)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
