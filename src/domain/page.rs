//! Keyset pagination: `?limit=1..100&cursor=…` in, `{"data":[…],"next_cursor":…}` out.
//! The cursor is the opaque encoding of the last row's key, so a page costs the same
//! however deep into the table it is.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use uuid::Uuid;

pub const DEFAULT_LIMIT: i64 = 25;
pub const MAX_LIMIT: i64 = 100;

/// Why a page request is refused: the handler answers 422 for `Limit`, 400 for `Cursor`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("must be between 1 and {MAX_LIMIT}")]
    Limit,
    #[error("The cursor is not one this API issued.")]
    Cursor,
}

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    /// Rows strictly after this key, in the listing's order.
    pub after: Option<Uuid>,
}

impl Page {
    pub fn new(limit: Option<i64>, cursor: Option<&str>) -> Result<Page, PageError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(PageError::Limit);
        }
        let after = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or(PageError::Cursor)?),
        };
        Ok(Page { limit, after })
    }

    /// One more row than shown tells whether another page exists.
    pub fn fetch_limit(&self) -> i64 {
        self.limit + 1
    }
}

fn decode_cursor(cursor: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    Uuid::from_slice(&bytes).ok()
}

fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Paginated<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Paginated<T> {
    /// `rows` were fetched with `page.fetch_limit()`; `key` gives the cursor key of a row.
    pub fn from_rows(mut rows: Vec<T>, page: Page, key: impl Fn(&T) -> Uuid) -> Paginated<T> {
        let more = rows.len() as i64 > page.limit;
        rows.truncate(page.limit as usize);
        let next_cursor = if more {
            rows.last().map(|row| encode_cursor(key(row)))
        } else {
            None
        };
        Paginated {
            data: rows,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let id = Uuid::now_v7();
        let page = Page::new(Some(10), Some(&encode_cursor(id))).expect("valid");
        assert_eq!(page.after, Some(id));
        assert!(Page::new(None, Some("not-a-cursor")).is_err());
        assert!(Page::new(Some(0), None).is_err());
        assert!(Page::new(Some(101), None).is_err());
    }

    #[test]
    fn next_cursor_only_when_more_rows_exist() {
        let page = Page::new(Some(2), None).expect("valid");
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let listed = Paginated::from_rows(ids.clone(), page, |id| *id);
        assert_eq!(listed.data.len(), 2);
        assert_eq!(listed.next_cursor, Some(encode_cursor(ids[1])));
        let last = Paginated::from_rows(ids[..2].to_vec(), page, |id| *id);
        assert_eq!(last.next_cursor, None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            // Any cursor text: a page or a 400, never a panic.
            #[test]
            fn any_cursor_is_a_page_or_a_bad_request(cursor in "\\PC{0,200}", limit in any::<i64>()) {
                match Page::new(Some(limit), Some(&cursor)) {
                    Ok(page) => prop_assert!((1..=MAX_LIMIT).contains(&page.limit)),
                    Err(PageError::Limit) => prop_assert!(!(1..=MAX_LIMIT).contains(&limit)),
                    Err(PageError::Cursor) => {}
                }
            }

            // Every cursor we issue decodes to the id it was made from.
            #[test]
            fn issued_cursors_round_trip(bytes in any::<[u8; 16]>()) {
                let id = Uuid::from_bytes(bytes);
                let page = Page::new(None, Some(&encode_cursor(id))).expect("our cursor");
                prop_assert_eq!(page.after, Some(id));
            }
        }
    }
}
