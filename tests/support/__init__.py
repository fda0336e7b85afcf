"""Test support shared by every test package: real PostgreSQL, migrated service databases,
app clients with per-test rollback or real commits, and fake model backends."""
