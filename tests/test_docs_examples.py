"""Every Python and shell example of README.md and docs/*.md runs as written.

Issue 14 item 2. The blocks are found generically (every ```python and ```bash
block of ``README.md`` and of every ``docs/*.md``, pages added later included) and
run in a temporary folder laid out like a checkout's neighbourhood: the current
directory is ``<tmp>/work`` and ``../shared/data`` is the verified data folder, so
the examples' ``../shared/data`` resolves. Nothing is written into the checkout.

How they run:

- All runnable Python blocks of a page run in order in one fresh interpreter, in one
  namespace, as a reader pastes them one after the other (a later block may use the
  names of an earlier one).
- Every shell block runs on its own with ``bash -e``, with ``SHIELDSPLIT_SMOKE=1``
  (see :mod:`shieldsplit.experiments.smoke`: the command line's small budgets), and with a
  ``w.pt`` in the folder: the state_dict of an untrained ``pgsl-net`` for BreastMNIST,
  standing for "your trained weights".
- Lines that install packages (``pip install ...``) are left out: the package under
  test is installed already, and a test must not download. The line that runs the
  test suite itself (``python -m pytest``) is left out too: it is this run.
- A block preceded by ``<!-- not run: REASON -->`` is skipped with that reason: the
  marker is for examples that train for minutes. Even those are checked for names
  that no earlier block of the page defines (the undefined ``x`` and ``loader`` of
  issue 14).
- A block that needs ``../shared/data`` is skipped, with the reason, when the data
  folder is absent.
- Every block that starts processes (:data:`SPAWNS`: ``multiprocessing``, Flower, the
  split learning's ``run_local``, DataLoader workers...) also runs as users run a saved
  example (issue 26): written to a ``.py`` file, together with the page's runnable blocks
  before it, and run with ``python file.py``, at torch's default thread count. A pasted
  run cannot show what *spawn* does to a script: the child imports the script again, so
  code without an ``if __name__ == "__main__":`` guard starts processes from the child.
  Every page's runnable Python blocks are also saved as one file and run that way
  (:data:`PAGE_SCRIPTS`: the page's last block with those before it), so every Python
  block runs as a script too (about 35 s on 2 cores, 2026-12-06).
- A line ``print(...)  # True`` (or ``# False``) is a claim: the booleans the run prints,
  in order, must be the ones its lines claim.
- The runs import the ``shieldsplit`` this test imports (``PYTHONPATH``), so a checkout
  tests its own code whichever copy is installed.
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Seconds one page's Python or one shell block may take on 2 loaded cores.
BLOCK_TIMEOUT = 600
LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>.*?)\s*-->")
#: Code that starts processes, directly or through shieldsplit or Flower.
SPAWNS = re.compile(r"multiprocessing|\bspawn\b|\bProcess\(|ProcessPool|\brun_local\(|"
                    r"\bserver_process\(|\bflwr\b|adapters import flower|adapters\.flower|"
                    r"\bnum_workers\s*=\s*[1-9]")
#: ``print(...)  # True``: a line that claims what it prints.
CLAIM = re.compile(r"^\s*print\(.*\)\s*#\s*(?P<value>True|False)\s*$")
#: Shell lines (or ``&&`` parts) that are not run, and why.
LEFT_OUT = (
    (re.compile(r"^\s*(python -m )?pip install\b"), "installs packages"),
    (re.compile(r"^\s*python -m pytest\s*$"), "runs the test suite: this run"),
)


def doc_pages() -> list[Path]:
    """README.md and every docs/*.md, whoever added it."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str  # python | bash
    code: str
    not_run: str | None  # the marker's reason

    @property
    def label(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def needs_data(self) -> bool:
        return "shared/data" in self.code or "--data breastmnist" in self.code

    @property
    def spawns(self) -> bool:
        return self.lang == "python" and SPAWNS.search(self.code) is not None

    @property
    def claims(self) -> list[str]:
        """What its ``print(...)  # True`` / ``# False`` lines claim, in order."""
        return [m["value"] for line in self.code.splitlines() if (m := CLAIM.match(line))]


def parse_blocks(page: Path) -> list[Block]:
    """The fenced Python and shell blocks of ``page``, with their not-run markers."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m["lang"]:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        i += 1
        lang = LANGS.get(m["lang"].lower())
        if lang is None:
            continue
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        marker = NOT_RUN.search(lines[j]) if j >= 0 else None
        blocks.append(Block(page, start + 1, lang, textwrap.dedent("\n".join(body)) + "\n",
                            marker["reason"] if marker else None))
    return blocks


ALL_BLOCKS = [b for page in doc_pages() for b in parse_blocks(page)]
PY_PAGES = sorted({b.page for b in ALL_BLOCKS if b.lang == "python"})
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "bash"]
SPAWNING_BLOCKS = [b for b in ALL_BLOCKS if b.spawns]
#: Each page's last runnable Python block: saved with the page's earlier blocks, it is the
#: whole page as one script file (pages whose last block spawns are run that way above).
PAGE_SCRIPTS = [
    max(runnable, key=lambda b: b.line) for page in PY_PAGES
    if (runnable := [b for b in ALL_BLOCKS if b.page == page and b.lang == "python"
                     and b.not_run is None])
    and not max(runnable, key=lambda b: b.line).spawns]


def test_the_examples_are_found_and_every_marker_gives_a_reason() -> None:
    readme = [b for b in ALL_BLOCKS if b.page.name == "README.md"]
    assert {b.lang for b in readme} == {"python", "bash"}
    assert len(readme) >= 6
    assert all(b.not_run for b in ALL_BLOCKS if b.not_run is not None)
    assert {p.name for p in doc_pages()} >= {"README.md", "audit.md", "defenses.md", "pgsl.md"}


def test_parse_blocks_reads_markers_and_indented_fences(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("text\n\n<!-- not run: trains for an hour -->\n\n```python\nx = 1\n```\n"
                    "- item:\n\n  ```bash\n  echo hi\n  ```\n```text\nignored\n```\n")
    py, sh = parse_blocks(page)
    assert (py.lang, py.code, py.not_run, py.line) == ("python", "x = 1\n",
                                                       "trains for an hour", 5)
    assert (sh.lang, sh.code, sh.not_run) == ("bash", "echo hi\n", None)


def shell_script(code: str) -> tuple[str, list[str]]:
    """``code`` without the left-out lines/parts, and what was left out, with why."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)  # continuation lines
    kept, dropped = [], []
    for line in joined.splitlines():
        keep = []
        for part in line.split("&&"):
            reason = next((why for rx, why in LEFT_OUT if rx.search(part)), None)
            if reason:
                dropped.append(f"{part.strip()} ({reason})")
            else:
                keep.append(part)
        if any(k.strip() for k in keep):
            kept.append(" && ".join(k.strip() for k in keep))
    return "\n".join(kept) + "\n", dropped


def test_shell_script_leaves_out_installs_and_the_suite() -> None:
    script, dropped = shell_script('pip install -e ".[test]" && shieldsplit demo\n'
                                   "python -m pytest\nshieldsplit audit --model m \\\n"
                                   "    --quiet\n")
    assert script.split("\n")[0].strip() == "shieldsplit demo"
    assert "shieldsplit audit --model m --quiet" in script
    assert len(dropped) == 2 and "pytest" not in script


def undefined_names(blocks: list[tuple[str, str]]) -> list[str]:
    """Names that a block reads but neither it, an earlier block, nor builtins define.

    A simple static check (no tools needed): every name bound anywhere in a block
    (assignment, import, ``for``, ``with ... as``, ``def``, parameters...) counts as
    defined for it and the blocks after it.

    Args:
        blocks: (label, code) in page order.

    Returns:
        ``"label: name"`` for each undefined name.
    """
    defined = set(dir(builtins))
    problems = []
    for label, code in blocks:
        tree = ast.parse(code, filename=label)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                defined.add(node.id)
            elif isinstance(node, ast.alias):
                defined.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
        problems += [f"{label}: {node.id}" for node in ast.walk(tree)
                     if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
                     and node.id not in defined]
    return sorted(set(problems))


def test_undefined_names_finds_what_issue_14_found() -> None:
    blocks = [("a", "import shieldsplit as ss\nds = ss.load()\n"),
              ("b", "probs = shield.predict(x)\nfor i in range(2):\n    print(i, ds)\n")]
    assert undefined_names(blocks) == ["b: shield", "b: x"]


@pytest.mark.parametrize("page", PY_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_python_examples_define_every_name_they_use(page: Path) -> None:
    blocks = [(b.label, b.code) for b in ALL_BLOCKS if b.page == page and b.lang == "python"]
    assert undefined_names(blocks) == []


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """``<tmp>/work``, with ``../shared/data`` the data folder when there is one."""
    from shieldsplit.data import default_data_root

    work = tmp_path / "work"
    work.mkdir()
    root = default_data_root()
    if root is not None:
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "data").symlink_to(Path(root).resolve(), target_is_directory=True)
    return work


def environment() -> dict[str, str]:
    import shieldsplit

    here = str(Path(shieldsplit.__file__).resolve().parents[1])  # the shieldsplit under test
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "SHIELDSPLIT_SMOKE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SHIELDSPLIT_DATA_ROOT", None)  # the examples name ../shared/data themselves
    return env


def skip_without_data(blocks: list[Block], sandbox: Path) -> None:
    if any(b.needs_data for b in blocks) and not (sandbox.parent / "shared" / "data").exists():
        pytest.skip("the verified data folder is absent (../shared/data or "
                    "SHIELDSPLIT_DATA_ROOT): see shared/data/README.md")


DRIVER = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    namespace = {"__name__": "__main__"}
    for label, code in BLOCKS:
        print(f"--- {label}", flush=True)
        exec(compile(code, label, "exec"), namespace)
""")


@pytest.mark.parametrize("page", PY_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_python_examples_run(page: Path, sandbox: Path) -> None:
    blocks = [b for b in ALL_BLOCKS if b.page == page and b.lang == "python"]
    runnable = [b for b in blocks if b.not_run is None]
    if not runnable:
        pytest.skip("every Python block of the page is marked not run: "
                    + "; ".join(f"{b.label}: {b.not_run}" for b in blocks))
    skip_without_data(runnable, sandbox)
    script = f"BLOCKS = {[(b.label, b.code) for b in runnable]!r}\n{DRIVER}"
    done = subprocess.run([sys.executable, "-c", script], cwd=sandbox, env=environment(),
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert printed_booleans(done.stdout) == [c for b in runnable for c in b.claims], done.stdout


def printed_booleans(stdout: str) -> list[str]:
    """The lines of ``stdout`` that are ``True`` or ``False``, in order."""
    return [line.strip() for line in stdout.splitlines() if line.strip() in ("True", "False")]


def saved_with(block: Block) -> list[Block]:
    """The page's runnable Python blocks up to ``block``: what a reader saves to run it."""
    return [b for b in ALL_BLOCKS if b.page == block.page and b.lang == "python"
            and b.not_run is None and b.line <= block.line]


def run_as_script(code: str, folder: Path, name: str = "example.py",
                  ) -> subprocess.CompletedProcess[str]:
    """``python name`` in ``folder`` with ``code`` in it, as a user runs a saved example:
    torch's default thread count (no ``OMP_NUM_THREADS``), the shieldsplit under test."""
    (folder / name).write_text(code, encoding="utf-8")
    env = environment()
    env.pop("OMP_NUM_THREADS")
    return subprocess.run([sys.executable, name], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=BLOCK_TIMEOUT)


#: Starts a process with spawn and claims that it ran; a builtin target pickles by name.
SPAWN = textwrap.dedent("""\
    child = multiprocessing.get_context("spawn").Process(target=abs, args=(0,))
    child.start()
    child.join()
    print(child.exitcode == 0)  # True
""")


def test_a_script_run_shows_what_a_pasted_run_hides(tmp_path: Path) -> None:
    """Without the ``__main__`` guard the spawned child runs the script's top level again
    and fails; pasted (``python -c``) there is no script to import again and it passes."""
    unguarded = f"import multiprocessing\n{SPAWN}"
    guarded = ('import multiprocessing\nif __name__ == "__main__":\n'
               + textwrap.indent(SPAWN, "    "))
    block = Block(tmp_path, 1, "python", guarded, None)
    claims = block.claims
    assert claims == ["True"] and block.spawns
    pasted = subprocess.run([sys.executable, "-c", unguarded], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert printed_booleans(pasted.stdout) == claims, pasted.stderr
    assert printed_booleans(run_as_script(unguarded, tmp_path).stdout) == ["False"]
    done = run_as_script(guarded, tmp_path, "guarded.py")
    assert printed_booleans(done.stdout) == claims, done.stderr


def test_the_spawning_examples_are_found() -> None:
    labels = {b.label for b in SPAWNING_BLOCKS}
    assert "docs/federated.md:37" in labels  # Flower's simulation, not run (Ray, a minute)
    assert any(label.startswith("docs/federated.md:") and label != "docs/federated.md:37"
               for label in labels)  # run_local
    assert not any(b.spawns for b in ALL_BLOCKS if b.page.name == "membership.md")


@pytest.mark.parametrize("block", SPAWNING_BLOCKS + PAGE_SCRIPTS, ids=lambda b: b.label)
def test_examples_run_as_scripts(block: Block, sandbox: Path) -> None:
    """Every page's Python blocks saved as one file and run with ``python file.py`` (a
    block that starts processes also on its own, with the blocks before it)."""
    if block.not_run is not None:
        pytest.skip(f"marked not run: {block.not_run}")
    saved = saved_with(block)
    skip_without_data(saved, sandbox)
    code = "\n".join(f"# --- {b.label}\n{b.code}" for b in saved)
    done = run_as_script(code, sandbox)
    assert done.returncode == 0, code + done.stdout[-3000:] + done.stderr[-5000:]
    assert printed_booleans(done.stdout) == [c for b in saved for c in b.claims], code + done.stdout


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.label)
def test_shell_examples_run(block: Block, sandbox: Path) -> None:
    if block.not_run is not None:
        pytest.skip(f"marked not run: {block.not_run}")
    skip_without_data([block], sandbox)
    script, _ = shell_script(block.code)
    if not script.strip():
        pytest.skip("only installs packages or runs the suite")
    if "w.pt" in script:
        subprocess.run([sys.executable, "-c", WEIGHTS], cwd=sandbox, check=True, timeout=300,
                       env=environment())
    done = subprocess.run(["bash", "-e", "-c", script], cwd=sandbox, env=environment(),
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    assert done.returncode == 0, f"{script}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"


#: Stands for "your trained weights": a pgsl-net for BreastMNIST (1 channel, 2 classes).
WEIGHTS = textwrap.dedent("""
    import torch
    from shieldsplit.models import PGSLNet
    torch.manual_seed(0)
    torch.save(PGSLNet(in_channels=1, num_classes=2, image_size=28).state_dict(), "w.pt")
""")
