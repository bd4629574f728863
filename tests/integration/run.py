"""Runs one test module for meson: exit 0 = passed, 1 = failed (a skipped
test counts as a failure: nothing here may pass by not running).

    python3 run.py test_ingest
"""

import importlib
import os
import sys
import unittest


def main(argv):
    if len(argv) != 2:
        print("usage: run.py MODULE", file=sys.stderr)
        return 2
    # This script's own directory comes first on sys.path: a module of the same name in
    # tests/integration would be run in place of the one in the working directory (meson's
    # workdir for the interop and bench suites). Refuse instead of running the wrong tests.
    module = importlib.import_module(argv[1])
    here = os.path.join(os.getcwd(), argv[1] + ".py")
    if os.path.exists(here) and not os.path.samefile(here, module.__file__):
        print(f"run.py: {argv[1]} resolves to {module.__file__}, not {here}", file=sys.stderr)
        return 1
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    if not result.wasSuccessful() or result.skipped or result.testsRun == 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
