"""Jobs, partitions and schedules."""
