"""What the documentation points at exists: each relative link's file, each ``#anchor`` as a
heading of the linked Markdown file (GitHub's heading slugs), each ecanet module, class or
function it names in code (``ecanet.ops.triton_launch.KernelLauncher``), each option of an
``ecanet`` command it shows and each ``make`` target, so a rename that leaves the docs behind
fails here."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from ecanet.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("benchmarks/**/*.md")])

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`[^`]*`")
_HEADING = re.compile(r"#{1,6} (.+)")
_COMMAND = re.compile(r"^\s*(?:\$ )?ecanet ([a-z][a-z-]*)(.*)")
_MAKE_TARGET = re.compile(r"^\s*make ([a-z][a-z-]*)")
_NAMED_OBJECT = re.compile(r"^(ecanet(?:\.[A-Za-z_]\w*)+)(?:\(\))?$")


def heading_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def prose_lines(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    return _split_lines(page)[0]


def code_snippets(page: Path) -> list[str]:
    """The page's code: each inline code span's text and each line of its fenced blocks."""
    prose, fenced = _split_lines(page)
    return [span[1:-1] for line in prose for span in _CODE_SPAN.findall(line)] + fenced


def _split_lines(page: Path) -> tuple[list[str], list[str]]:
    prose: list[str] = []
    fenced: list[str] = []
    inside = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        else:
            (fenced if inside else prose).append(line)
    return prose, fenced


def anchors(page: Path) -> set[str]:
    """The anchors of the page's headings (a repeated heading gets ``-1``, ``-2``, ... as on GitHub)."""
    found, times_seen = set(), {}
    for line in prose_lines(page):
        match = _HEADING.match(line)
        if match:
            slug = heading_slug(match.group(1))
            repeats = times_seen.get(slug, 0)
            found.add(f"{slug}-{repeats}" if repeats else slug)
            times_seen[slug] = repeats + 1
    return found


def relative_links(page: Path) -> list[str]:
    """The page's link targets outside code that are neither web addresses nor mail links."""
    targets = [match.group(1) for line in prose_lines(page) for match in _LINK.finditer(_CODE_SPAN.sub("", line))]
    return [target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_slugs_follow_githubs_rules() -> None:
    assert heading_slug("GPU: where compiled inference's +7.9% goes") == "gpu-where-compiled-inferences-79-goes"
    code_in_heading = heading_slug("An AVX2 CPU: AMD EPYC (`benchmarks/cpu-epyc-avx2/`)")
    assert code_in_heading == "an-avx2-cpu-amd-epyc-benchmarkscpu-epyc-avx2"


def test_repeated_headings_get_numbered_anchors(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Results\n\n## Results\n\n```\n# not a heading\n```\n## Notes\n")
    assert anchors(page) == {"results", "results-1", "notes"}


def test_links_inside_code_are_not_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("`kernel[grid](...)` and [the notes](notes.md#top)\n```\n[x](fenced.md)\nmake up\n```\nmake up\n")
    assert relative_links(page) == ["notes.md#top"]
    assert code_snippets(page) == ["kernel[grid](...)", "[x](fenced.md)", "make up"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path) if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def resolve(dotted: str) -> object:
    """The module, or the attribute of the longest importable module prefix, that ``dotted`` names.

    Raises:
        ImportError, AttributeError: nothing by that name.
    """
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            found = getattr(found, name)
        return found
    raise ImportError(f"no module in {dotted!r}")


def test_resolving_a_name_that_is_gone_fails() -> None:
    assert resolve("ecanet.ops.triton_launch.KernelLauncher").__name__ == "KernelLauncher"
    with pytest.raises(AttributeError):
        resolve("ecanet.ops.triton_launch.KernelLauncherGone")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_named_ecanet_objects_exist(page: Path) -> None:
    missing = []
    for name in sorted({match[1] for code in code_snippets(page) if (match := _NAMED_OBJECT.match(code))}):
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            missing.append(f"{name} ({type(error).__name__}: {error})")
    assert not missing, f"{page.relative_to(ROOT)} names what does not exist: " + "; ".join(missing)


def documented_options() -> dict[str, set[str]]:
    """Per ``ecanet`` subcommand, the ``--options`` that the pages show it with."""
    options: dict[str, set[str]] = {}
    for page in PAGES:
        for match in filter(None, map(_COMMAND.match, code_snippets(page))):
            command, words = match[1], match[2].split()
            options.setdefault(command, set()).update(word.split("=")[0] for word in words if word.startswith("--"))
    return options


def help_text(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``ecanet COMMAND --help`` prints."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0, f"ecanet {command} --help failed: no such command?"
    return capsys.readouterr().out


def test_documented_commands_take_their_options(capsys: pytest.CaptureFixture[str]) -> None:
    commands = documented_options()
    assert {"train", "compare", "bench"} <= commands.keys()
    for command, options in sorted(commands.items()):
        accepted = set(re.findall(r"--[a-z][a-z0-9-]*", help_text(command, capsys)))
        assert options <= accepted, f"ecanet {command} has no {sorted(options - accepted)}"


def test_documented_make_targets_exist() -> None:
    targets = set(re.findall(r"(?m)^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(encoding="utf-8")))
    named = {match[1] for page in PAGES for match in filter(None, map(_MAKE_TARGET.match, code_snippets(page)))}
    assert {"demo", "test"} <= named, "README.md's two set-up commands are gone"
    assert named <= targets, f"no Makefile target {sorted(named - targets)}"
