"""The reference specification of Linux memory management: one module per mechanism.

Every module here is pure: frozen state, transitions ``op(state, ...) -> (state, result)``,
typed errors from :mod:`spec.errors`, named invariants ``inv_*`` and views that print what
Linux prints.
"""
