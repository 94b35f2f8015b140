-- Channel configurations, the source of truth of the setup API.
--
-- Ids compare byte-wise (COLLATE "C") so that pagination by id is the same everywhere.
-- Every secret column holds a sealed value, {"kid","nonce","ct"}: AES-256-GCM under
-- secrets.key, bound to the channel id. `key_id` records the key that sealed every secret of
-- the row (a write re-seals them all), so `hookline secrets rotate-key` finds the rows an older
-- key sealed.
CREATE TABLE channels (
    id                          TEXT        COLLATE "C" PRIMARY KEY,
    tenant_id                   TEXT        COLLATE "C" NOT NULL,
    source                      TEXT        NOT NULL,
    platform                    TEXT        NOT NULL,
    name                        TEXT,
    is_default                  BOOLEAN     NOT NULL DEFAULT FALSE,
    settings                    JSONB       NOT NULL DEFAULT '{}'::jsonb,
    key_id                      TEXT        NOT NULL,
    secret                      JSONB       NOT NULL,
    previous_secret             JSONB,
    previous_secret_expires_at  TIMESTAMPTZ,
    verify_token                JSONB,
    -- Platform credentials (bot token, access token, auth token...) as one sealed JSON object.
    credentials                 JSONB,
    created_at                  TIMESTAMPTZ NOT NULL,
    updated_at                  TIMESTAMPTZ NOT NULL,
    CONSTRAINT channels_previous_secret_has_expiry
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);

-- At most one default channel per platform: ingest's older path /api/v1/integrations/webhooks/{platform}.
CREATE UNIQUE INDEX channels_one_default_per_platform ON channels (platform) WHERE is_default;
CREATE INDEX channels_tenant_id ON channels (tenant_id, id);
CREATE INDEX channels_key_id ON channels (key_id);

-- The mirror's outbox: one row per change, written in the same transaction as the change. The
-- relay publishes the channel's current state (or its deletion) to the KV bucket
-- hookline_channels in `seq` order and deletes the row once the bucket acknowledged the write.
CREATE TABLE channel_outbox (
    seq         BIGSERIAL   PRIMARY KEY,
    channel_id  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
