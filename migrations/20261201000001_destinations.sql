-- Destinations: where events are delivered (DESIGN.md, "Destinations"). Postgres is the truth;
-- every change is mirrored through `destination_outbox` to the KV bucket hookline_destinations,
-- which the forwarders watch. A row is the bucket's `DestinationRecord`
-- (shared/src/destination.rs) column by column.
--
-- Every secret column holds sealed values, {"kid","nonce","ct"}: AES-256-GCM under secrets.key,
-- bound to the destination id and to the value's place in the record (signing secret, or one
-- header). `key_id` records the key that sealed every secret of the row (a write re-seals them
-- all), so `hookline secrets rotate-key` finds the rows an older key sealed.
CREATE TABLE destinations (
    id                          TEXT        COLLATE "C" PRIMARY KEY,
    -- NULL: every tenant (only an admin may create such a destination).
    tenant_id                   TEXT        COLLATE "C",
    name                        TEXT,
    url                         TEXT        NOT NULL,
    signing_secret              JSONB       NOT NULL,
    -- The signing secret before the last rotation; it keeps signing until previous_valid_until.
    previous_signing_secret     JSONB,
    previous_valid_until        TIMESTAMPTZ,
    -- Extra request headers: {"<name as given>": <sealed value>}. Their names are repeated in
    -- header_names so that answers list them without reading the sealed column.
    headers                     JSONB       NOT NULL DEFAULT '{}'::jsonb,
    header_names                TEXT[]      NOT NULL DEFAULT '{}',
    -- The filter as written (checked by Filter::parse before it is stored).
    filter                      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    ordering                    TEXT        NOT NULL DEFAULT 'none',
    -- Per-destination settings; NULL: the forwarder.* default.
    max_in_flight               INTEGER,
    rate_limit_per_s            DOUBLE PRECISION,
    timeout_ms                  BIGINT,
    retry_schedule_s            BIGINT[],
    max_age_s                   BIGINT,
    paused                      BOOLEAN     NOT NULL DEFAULT FALSE,
    key_id                      TEXT        NOT NULL,
    created_at                  TIMESTAMPTZ NOT NULL,
    updated_at                  TIMESTAMPTZ NOT NULL,
    CONSTRAINT destinations_previous_secret_has_expiry
        CHECK ((previous_signing_secret IS NULL) = (previous_valid_until IS NULL)),
    CONSTRAINT destinations_ordering_known CHECK (ordering IN ('none', 'conversation')),
    CONSTRAINT destinations_headers_object CHECK (jsonb_typeof(headers) = 'object'),
    CONSTRAINT destinations_filter_object CHECK (jsonb_typeof(filter) = 'object')
);

CREATE INDEX destinations_tenant_id ON destinations (tenant_id, id);
CREATE INDEX destinations_key_id ON destinations (key_id);

-- The mirror's outbox for destinations, as channel_outbox is for channels (which has no column
-- saying what kind of row changed, and whose relay should not wait on another bucket): one row
-- per change, written in the transaction of the change, deleted once the bucket acknowledged
-- the destination's current state (or its deletion).
CREATE TABLE destination_outbox (
    seq             BIGSERIAL   PRIMARY KEY,
    destination_id  TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
