"""Speed/memory benchmarks of each stage against the reference formulations, and those formulations.

``salmask bench`` runs them all (:mod:`salmask.bench`); each module also runs alone, e.g.
``python -m salmask.benchmarks.bench_cam --quick``. :mod:`~salmask.benchmarks.common` holds the shared
measuring helpers and imports nothing from the other modules, so there is no import circle:
``salmask.bench`` → ``bench_*`` → ``common``. :mod:`~salmask.benchmarks.reference_walk` is the references'
dense random walk and :mod:`~salmask.benchmarks.reference_cam` IRNet's ``make_cam``, both written from the
references' definitions without salmask's code for what they check; the tests check salmask against them.
"""
