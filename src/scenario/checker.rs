//! The scenario's error builder: errors that name the file, the key, the value and the valid range (and the `--limit` that raises a safety limit).

use std::fmt;

use super::limits::limit_for;
use super::{OneOrMany, ScenarioError};
use crate::spec::Refusal;

pub(super) struct Checker<'a> {
    pub file: &'a str,
}

impl Checker<'_> {
    pub(super) fn err(
        &self,
        key: &str,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> ScenarioError {
        let mut expected = expected.into();
        // Upper bounds that are safety limits say how to lift them.
        if let Some(name) = limit_for(key)
            && (expected.contains("..=") || expected.contains("at most"))
        {
            expected.push_str(&format!(
                " (a safety limit: raise it with --limit {name}=N)"
            ));
        }
        ScenarioError::Invalid {
            file: self.file.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            expected,
        }
    }

    /// A run-spec rule's refusal, at `key` (default: the field's own key),
    /// naming the profile of the sweep it was met in.
    pub(super) fn refused(
        &self,
        r: Refusal,
        key: Option<&str>,
        label: Option<&str>,
    ) -> ScenarioError {
        let value = match label {
            Some(l) => format!("{} (profile {l})", r.value),
            None => r.value,
        };
        let own = r.field.toml_key();
        self.err(key.unwrap_or(&own), value, r.reason)
    }

    pub(super) fn range<T: PartialOrd + fmt::Display + Copy>(
        &self,
        key: &str,
        v: T,
        min: T,
        max: T,
    ) -> Result<T, ScenarioError> {
        if v < min || v > max {
            Err(self.err(key, v, format!("must be in {min}..={max}")))
        } else {
            Ok(v)
        }
    }

    pub(super) fn list<T: Clone + PartialOrd + fmt::Display + Copy>(
        &self,
        key: &str,
        v: &OneOrMany<T>,
        min: T,
        max: T,
    ) -> Result<Vec<T>, ScenarioError> {
        let values = v.values();
        if values.is_empty() {
            return Err(self.err(key, "[]", "a sweep list needs at least one value"));
        }
        for x in &values {
            self.range(key, *x, min, max)?;
        }
        Ok(values)
    }
}

pub(super) fn nonempty<T>(c: &Checker<'_>, key: &str, v: Vec<T>) -> Result<Vec<T>, ScenarioError> {
    if v.is_empty() {
        Err(c.err(key, "[]", "a sweep list needs at least one value"))
    } else {
        Ok(v)
    }
}
