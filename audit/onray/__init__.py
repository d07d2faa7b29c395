"""Running crawl and embed on a Ray cluster (``--executor ray``).

Nothing here imports Ray at module level: ``import audit`` and the CLI stay free of Ray
unless ``--executor ray`` is used (``session.require_ray`` then imports it, or says in one
line how to install it). The driver (this process) stays the one writer of the index:
workers only read and compute, results stream back and are committed by the same code as
the local executor.
"""

EXECUTORS = ("local", "ray")
