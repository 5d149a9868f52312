"""The test tree mirrors the package: `tests/<area>/test_<module>.py` tests `tsm_keras/<area>/<module>.py`.

Paths that tests compute from the repository live here, so moving a test
module never changes what it points at.
"""

import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
