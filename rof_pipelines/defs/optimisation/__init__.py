"""Optimisation: the GA population, the nightly job and schedule, and the `tasks` queue (assets, jobs,
schedules, sensors, definitions)."""
