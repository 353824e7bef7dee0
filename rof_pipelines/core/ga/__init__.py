"""The genetic optimiser: search space, fitness and the resumable NSGA-II driver.

Kept free of eager imports on purpose: ``rof_pipelines.settings`` validates gene ranges against
:mod:`rof_pipelines.core.ga.space` and must not pay for numba and pygad to do so. Import the
submodules (``space``, ``fitness``, ``engine``) directly.
"""
