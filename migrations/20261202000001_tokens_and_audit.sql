-- API tokens with scopes, the audit log, and the egress flag of destinations (DESIGN.md, "API
-- tokens, scopes and audit"). `setup_api.tokens` stay the bootstrap admins and are not here.
--
-- A token's value is shown once, at creation; only its SHA-256 is stored (`hash`). A token is
-- high-entropy (`hlk_` + 32 random base32 characters), so an unsalted digest is safe to keep
-- and to look up. Revocation sets `revoked_at`; the row stays so that the audit log's token ids
-- keep a name.
CREATE TABLE api_tokens (
    id              TEXT        COLLATE "C" PRIMARY KEY,
    name            TEXT        NOT NULL,
    -- NULL: an admin token (every tenant, and token management).
    tenant_id       TEXT        COLLATE "C",
    read_only       BOOLEAN     NOT NULL DEFAULT FALSE,
    hash            BYTEA       NOT NULL UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by      TEXT        NOT NULL,
    last_used_at    TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ,
    CONSTRAINT api_tokens_hash_is_sha256 CHECK (octet_length(hash) = 32)
);

-- Every change made through the API: who (token id and name), what, when, which fields.
-- Never a secret's value: `fields` lists the names of the fields given, with the values of those
-- that are not secret.
CREATE TABLE audit_log (
    id              BIGSERIAL   PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    token_id        TEXT        NOT NULL,
    token_name      TEXT        NOT NULL,
    -- The tenant of the resource changed (NULL: every tenant, or not a tenant's resource).
    tenant_id       TEXT        COLLATE "C",
    action          TEXT        NOT NULL,
    resource_type   TEXT        NOT NULL,
    resource_id     TEXT        NOT NULL,
    fields          JSONB       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_resource ON audit_log (resource_id, id);
CREATE INDEX audit_log_token ON audit_log (token_id, id);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);

-- TRUE: written by a tenant token; the forwarder refuses to connect to loopback, private,
-- link-local and metadata addresses for it (shared/src/egress.rs).
ALTER TABLE destinations ADD COLUMN restrict_egress BOOLEAN NOT NULL DEFAULT FALSE;
