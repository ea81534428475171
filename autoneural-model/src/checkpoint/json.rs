//! Typed reads from a JSON config object, with errors that name the file and the field.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{ModelError, Result};

/// `dir/config.json`, or an error saying the directory is not a checkpoint.
pub fn config_path(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("config.json");
    if !path.exists() {
        return Err(ModelError::io(
            &path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no config.json (is this a checkpoint directory?)"),
        ));
    }
    Ok(path)
}

/// Reads a JSON file that must hold an object.
pub fn read_object(path: &Path) -> Result<Map<String, Value>> {
    let text = autoneural_io::read::read_to_string(path, autoneural_io::read::CONFIG)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ModelError::config(path, "<root>", format!("expected a JSON object, found {}", kind(&other)))),
        Err(source) => Err(ModelError::Json { path: path.to_path_buf(), source }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A config object and the file it came from.
pub struct Fields<'a> {
    pub path: PathBuf,
    pub map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn new(path: impl Into<PathBuf>, map: &'a Map<String, Value>) -> Self {
        Self { path: path.into(), map }
    }

    fn err(&self, field: &str, message: String) -> ModelError {
        ModelError::config(&self.path, field, message)
    }

    /// The first of `names` that is present and not null.
    pub fn get(&self, names: &[&str]) -> Option<(&'a str, &'a Value)> {
        names
            .iter()
            .find_map(|n| self.map.get_key_value(*n).filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.as_str(), v)))
    }

    pub fn usize_opt(&self, names: &[&str]) -> Result<Option<usize>> {
        match self.get(names) {
            None => Ok(None),
            Some((name, v)) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.err(name, format!("expected a non-negative integer, found {v}"))),
        }
    }

    pub fn usize_req(&self, names: &[&str]) -> Result<usize> {
        self.usize_opt(names)?.ok_or_else(|| self.err(names[0], "missing (expected a non-negative integer)".into()))
    }

    pub fn f64_opt(&self, names: &[&str]) -> Result<Option<f64>> {
        match self.get(names) {
            None => Ok(None),
            Some((name, v)) => {
                v.as_f64().map(Some).ok_or_else(|| self.err(name, format!("expected a number, found {v}")))
            }
        }
    }

    pub fn bool_opt(&self, names: &[&str]) -> Result<Option<bool>> {
        match self.get(names) {
            None => Ok(None),
            Some((name, v)) => {
                v.as_bool().map(Some).ok_or_else(|| self.err(name, format!("expected true or false, found {v}")))
            }
        }
    }

    pub fn str_opt(&self, names: &[&str]) -> Result<Option<&'a str>> {
        match self.get(names) {
            None => Ok(None),
            Some((name, v)) => {
                v.as_str().map(Some).ok_or_else(|| self.err(name, format!("expected a string, found {v}")))
            }
        }
    }

    /// An integer or a list of integers (as `eos_token_id` may be).
    pub fn ids_opt(&self, names: &[&str]) -> Result<Option<Vec<u32>>> {
        match self.get(names) {
            None => Ok(None),
            Some((name, Value::Array(items))) => items
                .iter()
                .map(|v| {
                    v.as_u64().map(|x| x as u32).ok_or_else(|| self.err(name, format!("expected token ids, found {v}")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some((name, v)) => v
                .as_u64()
                .map(|x| Some(vec![x as u32]))
                .ok_or_else(|| self.err(name, format!("expected a token id, found {v}"))),
        }
    }

    pub fn usize_list_opt(&self, names: &[&str]) -> Result<Option<Vec<usize>>> {
        match self.get(names) {
            None => Ok(None),
            Some((name, Value::Array(items))) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(|x| x as usize)
                        .ok_or_else(|| self.err(name, format!("expected integers, found {v}")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some((name, v)) => Err(self.err(name, format!("expected a list of integers, found {v}"))),
        }
    }

    pub fn str_list_opt(&self, names: &[&str]) -> Result<Option<Vec<&'a str>>> {
        match self.get(names) {
            None => Ok(None),
            Some((name, Value::Array(items))) => items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| self.err(name, format!("expected strings, found {v}"))))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some((name, v)) => Err(self.err(name, format!("expected a list of strings, found {v}"))),
        }
    }

    /// A nested object, read with the same file for its errors.
    pub fn object_opt(&self, name: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(self.err(name, format!("expected an object, found {}", kind(v)))),
        }
    }

    pub fn invalid(&self, field: &str, message: impl Into<String>) -> ModelError {
        self.err(field, message.into())
    }
}
