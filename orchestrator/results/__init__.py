"""Results out: the report, exports, console tables, and `db import` of a results directory."""
