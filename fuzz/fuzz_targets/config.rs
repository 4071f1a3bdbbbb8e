//! `gateway.toml`: `config::Config::parse` (TOML syntax, field types, validation), with
//! secrets read-only and relative files looked up in a folder that does not exist.
//!
//! Input: the file's text. Inputs naming device or kernel files (`/dev`, `/proc`,
//! `/sys`) are skipped: reading one would block or never end, which says nothing about
//! the parser (operators write this file).
//! Checked: never a panic; parsing is deterministic; a syntax error points at a line
//! and column inside the text; a refused field names its path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::{Config, ConfigError, Secrets};
use std::path::Path;

/// Whether any string in the document mentions a special file system.
fn names_special_files(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => ["dev", "proc", "sys", "fd"].iter().any(|w| s.contains(w)),
        toml::Value::Array(a) => a.iter().any(names_special_files),
        toml::Value::Table(t) => t
            .iter()
            .any(|(k, v)| k.contains("dev") || names_special_files(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if toml::from_str::<toml::Value>(text).is_ok_and(|v| names_special_files(&v)) {
        return;
    }
    let path = Path::new("/nonexistent-portcullis-fuzz/gateway.toml");
    let first = Config::parse(text, path, Secrets::ReadOnly);
    let again = Config::parse(text, path, Secrets::ReadOnly);
    assert_eq!(
        first
            .as_ref()
            .map(|c| c.node_id.clone())
            .map_err(ToString::to_string),
        again
            .as_ref()
            .map(|c| c.node_id.clone())
            .map_err(ToString::to_string),
    );
    match first {
        Err(ConfigError::Syntax { line, column, .. }) => {
            let lines = text.split('\n').count();
            assert!(line >= 1 && line <= lines.max(1), "line {line} of {lines}");
            assert!(column >= 1);
        }
        Err(ConfigError::Field { field, .. }) => assert!(!field.is_empty()),
        Err(ConfigError::Read { .. }) => panic!("parse read the config file"),
        Ok(c) => assert!(!c.node_id.is_empty()),
    }
});
