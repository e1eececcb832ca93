"""The package's layout: every module imports only from the layers below it, and nothing closes a cycle.

Imports are read from the source (``ast``), wherever they are: at the top, in
a function, or under ``TYPE_CHECKING``. A deferred import is still a
dependency, so it obeys the same order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sonify"

#: The layers, bottom first. A module may import from any layer below its own, never from its own layer or
#: above (modules of one package, such as the CLI's commands, may import each other, without a cycle: they are one layer).
LAYERS: list[tuple[str, ...]] = [
    ("_errors", "_messages", "_version", "_choices", "_progress"),  # words, names and helpers used everywhere
    ("_files", "_optional", "_tfevents"),  # safe file creation; optional imports; TensorBoard record format
    ("spikes",),  # spike detection (no norms type needed)
    ("stats",),  # run totals and their summary text
    ("norms",),  # the shared types: StepNorms, NormLog, RunDigest
    ("layers",),  # which layers sound (torch, lazily)
    ("_hooks", "capture"),  # optimizer hooks; gradients -> norms
    ("mapping",),  # norm -> pitch
    ("score",),  # the score: what a block of steps sounds like, as data
    ("synthesize",),  # score -> samples
    ("sound",),  # SoundSettings and the Sounder: the one sound path
    ("normfile", "importers"),  # the norm log's file format; TensorBoard event files
    ("sources",),  # what a path is, and opening any source of norms
    ("output", "midi", "stream"),  # samples -> file; score -> MIDI; samples -> sound card
    ("_pipelines",),  # the file pipeline and the live player
    ("rendering",),  # render(), condensed_audio()
    ("playback", "follow", "comparison", "notebook"),  # play, follow, compare, inline players
    (
        "trackers",
        "serve",
        "live_notebook",
    ),  # TensorBoard, W&B, MLflow, Lightning loggers, folders; the browser's stream; the notebook player
    ("_recorder",),  # the Sonifier's background thread and its sinks (norm log, audio file, trackers)
    ("sonifier",),  # the Sonifier: the parts above attached to a training loop
    ("integrations", "experiment"),  # Lightning / Hugging Face callbacks; the 2019 experiment
    ("cli",),  # the command line
    ("__init__",),  # the public surface re-exports everything
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
#: Layers that are packages: capture (its kernels, host queue, early and sharded parts), the CLI, integrations.
PACKAGES = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name under ``sonify`` (``cli.render``, ``integrations._holder``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def _unit(module: str) -> str:
    """The layer unit a module belongs to: its top-level name (``cli.render`` -> ``cli``)."""
    if module == "__init__":
        return "__init__"
    return module.split(".")[0]


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported sonify module, line) for every import of the package's own modules in ``path``."""
    package_parts = module.split(".")[:-1]  # the package a relative import starts from
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)] if node.level > 1 else package_parts
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module == "sonify" or node.module.startswith("sonify.")):
                target = node.module.removeprefix("sonify").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import notebook` imports a module
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.append((candidate if candidate in _modules() else target or "__init__", node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sonify" or alias.name.startswith("sonify."):
                    found.append((alias.name.removeprefix("sonify").lstrip(".") or "__init__", node.lineno))
    return found


def test_every_module_has_a_layer():
    units = {_unit(name) for name in _modules()}
    assert units <= set(RANK), f"modules without a layer in LAYERS: {sorted(units - set(RANK))}"
    assert set(RANK) <= units, f"layers naming no module: {sorted(set(RANK) - units)}"


def test_no_module_imports_upwards():
    upward = []
    for module, path in _modules().items():
        own = _unit(module)
        for target, line in _imports(module, path):
            other = _unit(target)
            if other == own and own in PACKAGES:
                continue  # one package's modules may import each other (cycles are checked below)
            if RANK[other] >= RANK[own]:
                upward.append(
                    f"sonify/{path.relative_to(PACKAGE)}:{line} imports {target} (layer {RANK[other]} >= {RANK[own]})"
                )
    assert not upward, "imports that go up the layers:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = {
        module: {target for target, _ in _imports(module, path) if target != module}
        for module, path in _modules().items()
    }
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target in graph and target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .norms import NormLog\n", [("norms", 1)]),
        ("from . import notebook\n", [("notebook", 1)]),
        ("def f():\n    from .sonifier import Sonifier\n", [("sonifier", 2)]),
        ("import sonify.sources\n", [("sources", 1)]),
    ],
)
def test_the_import_reader_sees_every_form(tmp_path, source, expected):
    """The checks above are only as good as the reader: deferred and absolute imports count too."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert _imports("rendering", path) == expected
