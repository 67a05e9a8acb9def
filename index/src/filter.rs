//! Which rows a search may return. A lab asks for "cells like this one, of this class, from this
//! slide", never for a removed cell, and rarely for the copies of the query's own cell. The
//! conditions are checked *inside* the graph walk ([`crate::search_layer`]), so a selective
//! filter still yields k results; a very selective one is answered by exact search over the
//! matching rows instead ([`crate::CellIndex::search`]).

use crate::Row;
use std::collections::HashSet;

/// `key=value`: the row's field `key` (class, group, path or any sidecar field) equals `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for Condition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(Self {
                key: k.trim().to_string(),
                value: v.trim().to_string(),
            }),
            _ => Err(format!(
                "`{s}`: expected FIELD=VALUE, e.g. class=NEUTROPHIL or slide=S12"
            )),
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl Condition {
    pub fn matches(&self, row: &Row) -> bool {
        row.field(&self.key) == Some(self.value.as_str())
    }
}

/// What a search may return (qdrant's "filter"): every condition holds, the row is not
/// removed and not excluded, and with `distinct` at most one row per original cell.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// All must hold.
    pub conditions: Vec<Condition>,
    /// Row ids never returned (the query's own cell).
    pub exclude: HashSet<usize>,
    /// At most one hit per original cell ([`Row::cell_key`]).
    pub distinct: bool,
}

impl Filter {
    /// A filter with these conditions.
    pub fn matching(conditions: Vec<Condition>) -> Self {
        Self {
            conditions,
            ..Default::default()
        }
    }

    /// Whether row `id` may be returned (ignoring `distinct`).
    pub fn allows(&self, id: usize, row: &Row) -> bool {
        !row.removed
            && !self.exclude.contains(&id)
            && self.conditions.iter().all(|c| c.matches(row))
    }

    /// Whether nothing but tombstones restricts the rows.
    pub fn is_open(&self) -> bool {
        self.conditions.is_empty() && self.exclude.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_match_fields_and_metadata() {
        let c: Condition = "slide = S12".parse().unwrap();
        assert_eq!((c.key.as_str(), c.value.as_str()), ("slide", "S12"));
        assert!("=x".parse::<Condition>().is_err());
        assert!("class".parse::<Condition>().is_err());
        let mut row = Row {
            class: Some("NEUTROPHIL".into()),
            ..Default::default()
        };
        row.meta.insert("slide".into(), "S12".into());
        assert!(c.matches(&row));
        assert!(
            "class=NEUTROPHIL"
                .parse::<Condition>()
                .unwrap()
                .matches(&row)
        );
        assert!(!"class=MONOCYTE".parse::<Condition>().unwrap().matches(&row));
        assert!(!"stain=wright".parse::<Condition>().unwrap().matches(&row));
        let f = Filter::matching(vec![c]);
        assert!(f.allows(0, &row));
        row.removed = true;
        assert!(!f.allows(0, &row), "a removed row is never allowed");
    }
}
