"""Test doubles for code that uses s5vec, shipped like aiohttp's ``test_utils``.

- :mod:`s5vec.testing.portal`: in-memory S5 portal and s5.js bridge servers with fault
  knobs (``create_test_portal``, ``create_test_bridge``, ``app[FAULTS]``); also runs
  standalone: ``python -m s5vec.testing.portal --port 5050``.
- :mod:`s5vec.testing.diskfaults`: ``DiskFaults`` makes chosen ``os`` calls fail for
  chosen paths, in process; ``checkpoint_faults`` lists where a checkpoint can fail.

Needs only s5vec's own dependencies. May import storage, index and ops; nothing in s5vec
imports it (tests and the tools in ``tools/`` do). The submodules are not imported here, so
``python -m s5vec.testing.portal`` runs the module once.
"""

__all__ = ["diskfaults", "portal"]
