//! Field-level errors of client input, and JSON values read into types with the path of
//! the field that did not fit.

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Deserializes a JSON object already parsed, naming the field on mismatch.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, FieldError> {
    if !value.is_object() {
        return Err(FieldError::new("", "the body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        data_error(&path, &e.into_inner().to_string())
    })
}

/// Deserializes a JSON array already parsed into a list, naming the item and field on
/// mismatch (`[2].stage_ids`). Only bodies that are lists by contract come here; every
/// other body must be an object (`from_value`), since a struct would also accept a tuple.
pub fn list_from_value<T: DeserializeOwned>(
    value: serde_json::Value,
) -> Result<Vec<T>, FieldError> {
    if !value.is_array() {
        return Err(FieldError::new("", "the body must be a JSON array"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        data_error(&path, &e.into_inner().to_string())
    })
}

/// serde_path_to_error names the offending field, except for a missing one, which serde
/// reports at its parent.
fn data_error(path: &str, message: &str) -> FieldError {
    let parent = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or("");
        let field = if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        };
        return FieldError::new(field, "is required");
    }
    let message = if message.starts_with("unknown field") {
        "is not a known field".to_string()
    } else {
        message.to_string()
    };
    FieldError::new(parent, message)
}
