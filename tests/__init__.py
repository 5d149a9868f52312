"""The test tree mirrors the package: `tests/<area>/` holds the tests of `tsm_keras/<area>/`
(`tests/bench/` those of `bench/`), top-level modules are tested at the top.

Paths that tests compute from the repository live here, so moving a test
module never changes what it points at.
"""

import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
