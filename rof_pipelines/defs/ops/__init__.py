"""Operations: state-store backups (job, schedule, `backup` queue) and config hot reload (jobs,
schedules, sensors, definitions)."""
