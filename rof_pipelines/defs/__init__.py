"""Dagster definitions (thin glue over core and adapters), one package per domain.

Each of ``quotes``, ``indicators``, ``rl``, ``optimisation``, ``experiments`` and ``ops`` holds its
assets (with their checks), jobs, schedules and sensors, and a ``definitions.py`` whose
``domain_definitions(at_load)`` returns them as a ``Definitions``; ``rof_pipelines/definitions.py``
merges the domains with the shared resources. Shared glue sits here: ``messaging`` (the queue
sensors' tick), ``resilience`` (errors -> retries), ``load_time`` (settings fixed when the code
location loads), ``market_day`` and ``reporting``.
"""
