"""Journal entries for the ERP and their posting (NetSuite)."""
