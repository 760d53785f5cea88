"""The review service's database: tables, engine and session setup, migrations."""
