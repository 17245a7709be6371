//! Where an uploaded file's bytes are kept (spec §12, `ASSET_STORE_URL`): in PostgreSQL
//! (`knowledge_asset_files`, the default) or in an object store (a directory, S3).
//!
//! Each asset's row records where its own bytes went (`knowledge_assets.storage`: the
//! word `postgres`, or the object's key), so changing the setting moves only new
//! uploads: older assets are still read from where they were written.
//!
//! The order of effects is what keeps a row from ever pointing at nothing. An object is
//! written before the row that names it, and deleted only after the row's deletion has
//! committed; an object left behind by a failure in between is harmless. Object calls
//! never run inside a transaction: the store may take seconds over a large file, and a
//! pooled connection must not wait on it.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload};
use sqlx::PgConnection;
use url::Url;

use crate::db;
use crate::domain::{AssetId, OrgId};

/// The `storage` value of an asset whose bytes are in `knowledge_asset_files`.
pub const IN_POSTGRES: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error("the file store failed: {0}")]
    Object(#[from] object_store::Error),
    /// The row names an object, but this process has no object store to read it from.
    #[error("the asset's file is in object storage, but ASSET_STORE_URL is not set")]
    NotConfigured,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Db(e.into())
    }
}

/// Where new uploads' bytes go, and how any asset's bytes are reached.
#[derive(Clone)]
pub enum AssetStore {
    Postgres,
    Object {
        store: Arc<dyn ObjectStore>,
        /// The path of `ASSET_STORE_URL`; every key starts with it.
        prefix: Path,
    },
}

/// Where one asset's bytes are: its `storage` column, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Postgres,
    Object(Path),
}

impl Location {
    pub fn from_storage(storage: &str) -> Location {
        if storage == IN_POSTGRES {
            Location::Postgres
        } else {
            // Keys come from `new_location` and parse as they were written; `from` (which
            // encodes, so a stored `%` would not round-trip) only stands in for a row
            // edited by hand, whose object then reads as missing.
            Location::Object(Path::parse(storage).unwrap_or_else(|_| Path::from(storage)))
        }
    }

    pub fn as_storage(&self) -> &str {
        match self {
            Location::Postgres => IN_POSTGRES,
            Location::Object(key) => key.as_ref(),
        }
    }
}

/// An asset's bytes as read inside a transaction: at hand (PostgreSQL), or an object to
/// fetch once the transaction is over (`AssetStore::fetch`).
pub enum Stored {
    Bytes(Vec<u8>),
    Object(Path),
}

impl AssetStore {
    /// The store `ASSET_STORE_URL` names (`None`: PostgreSQL). S3 reads its credentials,
    /// region and endpoint from the standard `AWS_*` variables, as the AWS tools do. A
    /// directory is created now, so a path the process cannot write fails the start
    /// rather than the first upload.
    pub fn from_url(url: Option<&Url>) -> anyhow::Result<AssetStore> {
        let Some(url) = url else {
            return Ok(AssetStore::Postgres);
        };
        let (scheme, _) = ObjectStoreScheme::parse(url)?;
        if scheme == ObjectStoreScheme::Local {
            let dir = url
                .to_file_path()
                .map_err(|_| anyhow::anyhow!("ASSET_STORE_URL: not a local directory"))?;
            std::fs::create_dir_all(&dir).map_err(|e| {
                anyhow::anyhow!("ASSET_STORE_URL: cannot create {}: {e}", dir.display())
            })?;
        }
        let aws_env = std::env::vars().filter(|(key, _)| key.starts_with("AWS_"));
        let (store, prefix) = object_store::parse_url_opts(url, aws_env)
            .map_err(|e| anyhow::anyhow!("ASSET_STORE_URL: {e}"))?;
        Ok(AssetStore::Object {
            store: Arc::from(store),
            prefix,
        })
    }

    /// Where a new asset's bytes go: the key is made of ids only, never of anything the
    /// client named.
    pub fn new_location(&self, org_id: OrgId, asset_id: AssetId) -> Location {
        match self {
            AssetStore::Postgres => Location::Postgres,
            AssetStore::Object { prefix, .. } => Location::Object(
                prefix
                    .clone()
                    .join(org_id.to_string())
                    .join(asset_id.to_string()),
            ),
        }
    }

    /// Writes a new asset's object; call it before the transaction that records the
    /// asset. Bytes bound for PostgreSQL are written with the row instead (`put_row`).
    pub async fn put_object(&self, location: &Location, bytes: Vec<u8>) -> Result<(), StoreError> {
        if let Location::Object(key) = location {
            self.objects()?.put(key, PutPayload::from(bytes)).await?;
        }
        Ok(())
    }

    /// PostgreSQL's share of writing a new asset: its file row, in the transaction that
    /// inserted the asset (the file row references it). Nothing for an object.
    pub async fn put_row(
        &self,
        conn: &mut PgConnection,
        org_id: OrgId,
        asset_id: AssetId,
        location: &Location,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        if *location == Location::Postgres {
            db::knowledge::insert_file(conn, org_id, asset_id, bytes).await?;
        }
        Ok(())
    }

    /// Reads where the asset's bytes are, and the bytes themselves when PostgreSQL holds
    /// them. `None`: no such asset, or its file row is gone.
    pub async fn locate(
        &self,
        conn: &mut PgConnection,
        org_id: OrgId,
        asset_id: AssetId,
    ) -> Result<Option<Stored>, StoreError> {
        let Some((storage, bytes)) = db::knowledge::asset_file(conn, org_id, asset_id).await?
        else {
            return Ok(None);
        };
        Ok(match (Location::from_storage(&storage), bytes) {
            (Location::Postgres, Some(bytes)) => Some(Stored::Bytes(bytes)),
            (Location::Postgres, None) => None,
            (Location::Object(key), _) => Some(Stored::Object(key)),
        })
    }

    /// The bytes `locate` found, fetched from the object store if that is where they
    /// are. `None`: the object is missing.
    pub async fn fetch(&self, stored: Stored) -> Result<Option<Vec<u8>>, StoreError> {
        let key = match stored {
            Stored::Bytes(bytes) => return Ok(Some(bytes)),
            Stored::Object(key) => key,
        };
        let got = match self.objects()?.get(&key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(got.bytes().await?.into()))
    }

    /// `delete_object` in a task of its own, so that no request waits on the store (whose
    /// client retries for minutes) for a deletion it does not depend on.
    pub fn delete_object_later(&self, location: Location) {
        if location == Location::Postgres {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move { store.delete_object(&location).await });
    }

    /// Removes an object whose row is gone (or was never committed). Best effort: a
    /// failure is logged, and the object merely takes space.
    pub async fn delete_object(&self, location: &Location) {
        let Location::Object(key) = location else {
            return;
        };
        let deleted = match self.objects() {
            Ok(store) => store.delete(key).await.map_err(StoreError::from),
            Err(e) => Err(e),
        };
        match deleted {
            Ok(()) | Err(StoreError::Object(object_store::Error::NotFound { .. })) => {}
            Err(e) => {
                tracing::warn!(error = %e, key = %key, "could not delete an asset's object; it is left behind")
            }
        }
    }

    fn objects(&self) -> Result<&Arc<dyn ObjectStore>, StoreError> {
        match self {
            AssetStore::Object { store, .. } => Ok(store),
            AssetStore::Postgres => Err(StoreError::NotConfigured),
        }
    }
}
