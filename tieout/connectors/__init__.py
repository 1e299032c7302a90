"""Everything that talks to an outside system: the billing database, the Parquet lake."""
