"""Local stand-ins for the outside systems tieout talks to, for tests and the demo."""
