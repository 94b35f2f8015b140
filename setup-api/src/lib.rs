//! hookline setup API: channel configurations in Postgres, secrets encrypted at rest, every
//! change mirrored to the KV bucket that ingest watches. (Being written.)
