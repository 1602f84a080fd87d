-- PostgreSQL version of ../sqlite/0008_network_policy.sql: the same tables, columns,
-- constraints and indexes by name (TestSchemaSameOnBothDialects).
-- 0008_network_policy: the network policy (segment isolation) the collector
-- pushes to every agent.
--
-- Same conventions as 0001_init: BIGINT nanosecond times, BYTEA becomes
-- BYTEA on PostgreSQL. Never edit this file once released: add a new
-- numbered migration instead.

-- One row at most (id 1); none until an administrator sets a policy.
-- policy: the NetworkPolicy message (marshalled protobuf, deterministic),
-- version filled, collector_addrs empty (the collector fills them from its
-- own addresses when it pushes). version: NetworkPolicy.version, what
-- SetNetworkPolicy's expected_version is compared with. The change and its
-- audit entry are written in one transaction.
CREATE TABLE network_policy (
    id         BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    policy     BYTEA   NOT NULL,
    version    TEXT   NOT NULL CHECK (version <> ''),
    updated_at BIGINT NOT NULL,
    updated_by TEXT   NOT NULL
);
