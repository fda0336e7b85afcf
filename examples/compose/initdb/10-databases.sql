-- Run once by the PostgreSQL image's entrypoint on an empty data directory: one database per
-- service (POSTGRES_DB made azora_enrollment). A service never reads another's database.
CREATE DATABASE azora_ledger;
CREATE DATABASE azora_pricing;
CREATE DATABASE azora_orchestrator;
