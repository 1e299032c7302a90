"""Revenue recognition (ASC 606): schedules that spread billed revenue over accounting months."""
