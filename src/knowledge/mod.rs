//! The knowledge base's own logic, below `jobs/`: what a file is (judged by its bytes),
//! its text, the chunks that text becomes and the graph facts a model finds in them
//! (`graph`), none of which touches the database or the network; and `store`, where the
//! files' bytes are kept (PostgreSQL through `db/`, or an object store).

pub mod chunk;
pub mod extract;
pub mod graph;
pub mod search;
pub mod store;

use std::sync::OnceLock;

use crate::domain::AssetFormat;
use crate::knowledge::chunk::Chunker;
use crate::knowledge::extract::Format;

/// Chunks of about 500 tokens with ~15 % overlap (spec §12).
pub const CHUNK_TOKENS: usize = 500;
pub const CHUNK_OVERLAP_TOKENS: usize = 75;

/// The chunker, built once: loading the tokenizer's tables is the expensive part.
pub fn chunker() -> &'static Chunker {
    static CHUNKER: OnceLock<Chunker> = OnceLock::new();
    CHUNKER.get_or_init(|| Chunker::new(CHUNK_TOKENS, CHUNK_OVERLAP_TOKENS))
}

impl From<Format> for AssetFormat {
    fn from(format: Format) -> AssetFormat {
        match format {
            Format::Text => AssetFormat::Text,
            Format::Markdown => AssetFormat::Markdown,
            Format::Html => AssetFormat::Html,
            Format::Pdf => AssetFormat::Pdf,
            Format::Docx => AssetFormat::Docx,
        }
    }
}

impl From<AssetFormat> for Format {
    fn from(format: AssetFormat) -> Format {
        match format {
            AssetFormat::Text => Format::Text,
            AssetFormat::Markdown => Format::Markdown,
            AssetFormat::Html => Format::Html,
            AssetFormat::Pdf => Format::Pdf,
            AssetFormat::Docx => Format::Docx,
        }
    }
}
