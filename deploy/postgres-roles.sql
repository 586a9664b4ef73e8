-- PostgreSQL roles for the event sink: the worker may INSERT and SELECT the events
-- table and nothing else (no UPDATE, DELETE, TRUNCATE, DROP, no DDL); operators get
-- a read-only role. Run it once per database, as a superuser (or the database owner
-- being a member of the roles), e.g.
--
--   psql "postgresql://postgres@db/coordinator" -v ON_ERROR_STOP=1 -f deploy/postgres-roles.sql
--
-- then give the login roles passwords (never written here):
--
--   ALTER ROLE coordinator_worker PASSWORD '...';   -- or \password coordinator_worker
--   ALTER ROLE coordinator_reader PASSWORD '...';
--
-- and point the worker at it: COORDINATOR_SINK_URL=postgresql://coordinator_worker:...@db/coordinator
-- It is idempotent: re-running it changes nothing. The tables live in the schema
-- "coordinator", owned by the NOLOGIN role coordinator_owner; the sink finds them
-- through the login roles' search_path in this database. Their definition is the
-- sink's own (coordinator/sinks/base.py schema_sql; tests/test_postgres_roles.py
-- checks they agree).

DO $$
BEGIN
  CREATE ROLE coordinator_owner NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
DO $$
BEGIN
  CREATE ROLE coordinator_worker LOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
DO $$
BEGIN
  CREATE ROLE coordinator_reader LOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE SCHEMA IF NOT EXISTS coordinator AUTHORIZATION coordinator_owner;
REVOKE ALL ON SCHEMA coordinator FROM PUBLIC;

SET ROLE coordinator_owner;
SET search_path = coordinator;

CREATE TABLE IF NOT EXISTS agent_project_events (
    id BIGSERIAL PRIMARY KEY,
    agent_id TEXT NOT NULL,
    session_id TEXT,
    event_type TEXT NOT NULL,
    from_project TEXT,
    to_project TEXT,
    expected_version BIGINT,
    actual_version BIGINT,
    success BOOLEAN NOT NULL,
    error_message TEXT,
    metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL,
    namespace TEXT NOT NULL,
    shard INTEGER NOT NULL,
    stream_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    stream_seq BIGINT NOT NULL,
    fencing_token BIGINT,
    UNIQUE (namespace, shard, stream_id)
);
CREATE INDEX IF NOT EXISTS agent_project_events_time ON agent_project_events (namespace, created_ms);
CREATE INDEX IF NOT EXISTS agent_project_events_agent ON agent_project_events (namespace, agent_id, created_ms);
CREATE INDEX IF NOT EXISTS agent_project_events_type ON agent_project_events (namespace, event_type, created_ms);
CREATE TABLE IF NOT EXISTS coordinator_sink_schema (version INTEGER NOT NULL);
-- The sink's schema version (SINK_SCHEMA_VERSION): recorded here, so the worker only reads it.
INSERT INTO coordinator_sink_schema (version)
SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM coordinator_sink_schema);

REVOKE ALL ON agent_project_events, coordinator_sink_schema FROM PUBLIC;
REVOKE ALL ON SEQUENCE agent_project_events_id_seq FROM PUBLIC;

RESET ROLE;
RESET search_path;

-- The worker: append and read the audit trail. USAGE of the id sequence is what an
-- INSERT needs to draw the next id; the version table is read to refuse a newer schema.
GRANT USAGE ON SCHEMA coordinator TO coordinator_worker;
GRANT SELECT, INSERT ON coordinator.agent_project_events TO coordinator_worker;
GRANT USAGE ON SEQUENCE coordinator.agent_project_events_id_seq TO coordinator_worker;
GRANT SELECT ON coordinator.coordinator_sink_schema TO coordinator_worker;

-- Operators (events queries, status, the dashboard): read only.
GRANT USAGE ON SCHEMA coordinator TO coordinator_reader;
GRANT SELECT ON coordinator.agent_project_events, coordinator.coordinator_sink_schema
  TO coordinator_reader;

-- Both log in to this database only, find the tables without a schema in the URL, and
-- may create the session-private temporary table the worker COPYs a batch into.
DO $$
BEGIN
  EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO coordinator_worker, coordinator_reader',
                 current_database());
  EXECUTE format('ALTER ROLE coordinator_worker IN DATABASE %I SET search_path = coordinator',
                 current_database());
  EXECUTE format('ALTER ROLE coordinator_reader IN DATABASE %I SET search_path = coordinator',
                 current_database());
END $$;
