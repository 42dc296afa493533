"""The bibliography: no citation of the internal lecture notes ("seed 00N"), every citation key
used in the code, tests and README has an entry in REFERENCES.md, and every entry is complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CITING = ("auditor", "dashboards", "plugins", "benchmarks", "migrations", "deploy", "tests")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".ini", ".cfg", ".sh"}
SEED_CITATION = re.compile(r"\bseeds?\s+00\d", re.IGNORECASE)
KEY = r"[A-Z][A-Za-z]+\d{4}[a-z]?"
CITATION = re.compile(rf"\[({KEY})([^\]\n]*)\]")
FIELDS = ("Authors", "Title", "Venue", "Year", "Link")
LINKS = ("https://doi.org/", "https://arxiv.org/abs/", "https://www.jmlr.org/papers/")


def citing_files() -> list[Path]:
    """README.md and the text files of the code, test and deployment folders."""
    files = [ROOT / "README.md"]
    for folder in CITING:
        files += sorted(
            p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in SUFFIXES
        )
    return files


def cited_keys(text: str) -> set[str]:
    """Keys of `[Key]`, `[Key, part]` and `[Key1, Key2]` citations in `text`."""
    keys = set()
    for first, rest in CITATION.findall(text):
        keys.add(first)
        keys.update(re.findall(rf"\b{KEY}\b", rest))
    return keys


def references() -> dict[str, dict[str, str]]:
    """REFERENCES.md entries: `### Key` headings followed by `- Field: value` lines."""
    entries: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in (ROOT / "REFERENCES.md").read_text(encoding="utf-8").splitlines():
        if heading := re.fullmatch(r"### (\S+)", line.strip()):
            assert heading.group(1) not in entries, f"duplicate entry {heading.group(1)}"
            current = entries[heading.group(1)] = {}
        elif current is not None and (field := re.fullmatch(r"- (\w[\w ]*): (.+)", line.strip())):
            current[field.group(1)] = field.group(2).strip()
    return entries


def test_no_file_cites_the_lecture_notes_by_seed_number():
    hits = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)!r}"
        for path in citing_files()
        for text in [path.read_text(encoding="utf-8", errors="replace")]
        for m in SEED_CITATION.finditer(text)
    ]
    assert not hits, "cite the original publication by key instead:\n" + "\n".join(hits)


def test_every_cited_key_has_an_entry():
    entries = references()
    missing = {
        f"{key} ({path.relative_to(ROOT)})"
        for path in citing_files()
        for key in cited_keys(path.read_text(encoding="utf-8", errors="replace"))
        if key not in entries
    }
    assert not missing, f"keys without an entry in REFERENCES.md: {sorted(missing)}"


def test_the_code_cites_by_key():
    cited = set().union(*(cited_keys(p.read_text(encoding="utf-8")) for p in citing_files()))
    assert {"Bach2015", "Chandrasegaran2022", "Han2024", "Lapuschkin2019"} <= cited


@pytest.mark.parametrize("key", sorted(references()))
def test_every_entry_is_complete(key: str):
    entry = references()[key]
    assert re.fullmatch(KEY, key), f"{key} is not of the form AuthorYYYY"
    missing = [field for field in FIELDS if not entry.get(field)]
    assert not missing, f"{key} lacks {missing}"
    assert re.fullmatch(r"(1[89]|20)\d\d", entry["Year"]), entry["Year"]
    assert entry["Year"] == re.search(r"\d{4}", key).group(0), f"{key} vs year {entry['Year']}"
    assert entry["Link"].startswith(LINKS), f"{key}: link {entry['Link']} is no DOI or arXiv"


def test_cited_keys_parse_parts_and_lists():
    text = "x [Han2024, Table 1] y [Bach2015, Montavon2019] z [0, 1] `[Foo]` [Samek2017]."
    assert cited_keys(text) == {"Han2024", "Bach2015", "Montavon2019", "Samek2017"}
