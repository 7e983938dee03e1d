"""resweep's result store: tables, migrations, idempotent writes, views and the read API."""
