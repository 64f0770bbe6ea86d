"""Content-based routing: filter dialects, CESQL, the rule index and pushdown."""
