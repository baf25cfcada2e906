"""steadycast."""
