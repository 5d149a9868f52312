"""Citations of docs/reference.md point at sections that exist; nothing cites a file outside the repository."""

import os
import re

from tests import REPO_ROOT

REFERENCE = os.path.join(REPO_ROOT, "docs", "reference.md")
CITATION = re.compile(r"docs/reference\.md#([A-Za-z0-9_-]+)")
SKIPPED_DIRS = {".git", "__pycache__", "build", "work_dirs", "results"}


def slug(heading):
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors():
    with open(REFERENCE) as handle:
        return {slug(line.lstrip("#")) for line in handle if line.startswith("#")}


def repository_texts():
    for directory, subdirs, files in os.walk(REPO_ROOT):
        subdirs[:] = [name for name in subdirs if name not in SKIPPED_DIRS and not name.endswith(".egg-info")]
        for name in files:
            if name.endswith((".py", ".md", ".yaml", ".yml", ".toml")):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as handle:
                    yield os.path.relpath(path, REPO_ROOT), handle.read()


def test_slug_follows_github():
    assert slug("benchmark_model output") == "benchmark_model-output"
    assert slug("FLOPs and parameters") == "flops-and-parameters"


def test_every_citation_names_an_existing_section():
    known = anchors()
    cited = {}
    for path, text in repository_texts():
        for anchor in CITATION.findall(text):
            cited.setdefault(anchor, []).append(path)
    assert cited, "no file cites docs/reference.md"
    missing = {anchor: paths for anchor, paths in cited.items() if anchor not in known}
    assert not missing, f"citations of sections docs/reference.md does not have: {missing}"


def test_no_file_cites_the_outside_reference_notes():
    outside = "REFERENCE" + ".md"  # spelled in two parts so this file does not match itself
    citing = [path for path, text in repository_texts() if outside in text]
    assert not citing, citing
