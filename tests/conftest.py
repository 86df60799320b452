"""Shared pytest set-up: hypothesis profiles and the mmspec plugin.

The hypothesis profile comes from the environment variable
``HYPOTHESIS_PROFILE`` (default ``dev``; ``.ci/run`` uses ``ci``,
``mmspec verify`` uses ``quick``/``default``/``thorough``); see
:mod:`mmspec.profiles`. The plugin (:mod:`mmspec.pytest_plugin`) resets the
counters of :mod:`mmspec.tally` for each test and reports them.
"""

from mmspec import profiles

profiles.load()

pytest_plugins = ["mmspec.pytest_plugin"]
