"""Runs one test module for meson: exit 0 = passed, 1 = failed (a skipped
test counts as a failure: nothing here may pass by not running).

    python3 run.py test_ingest
"""

import sys
import unittest


def main(argv):
    if len(argv) != 2:
        print("usage: run.py MODULE", file=sys.stderr)
        return 2
    suite = unittest.defaultTestLoader.loadTestsFromName(argv[1])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    if not result.wasSuccessful() or result.skipped or result.testsRun == 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
