//! The data layer's own error: what PostgreSQL (through sqlx) said, or that the task
//! driving a statement stopped. The HTTP layer maps it to a problem (`http/error.rs`),
//! jobs to a retry; neither is decided here.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// The task that drove the connection ended (a panic), so the outcome is unknown.
    #[error("the database task stopped while {0}")]
    Aborted(&'static str),
}

pub type Result<T> = std::result::Result<T, Error>;
