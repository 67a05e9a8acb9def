//! `metrics.jsonl`, one typed line per finished epoch, appended as training goes: what the loss
//! plot, the cross-validation plot and a resume's clean-up read back.

use crate::eval::ValidationResult;
use cellspace_core::metrics::RetrievalReport;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One finished epoch. Its figures read back as written; a figure JSON could not hold (NaN,
/// written as `null`) reads as NaN, so the line still counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EpochLine {
    /// Epochs done, counting this one (1 for the first).
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    #[serde(default, deserialize_with = "figure")]
    pub loss: f64,
    /// Learning rate at the epoch's end.
    #[serde(default, deserialize_with = "figure")]
    pub lr: f64,
    #[serde(default, deserialize_with = "figure")]
    pub images_per_s: f64,
    #[serde(default, deserialize_with = "figure")]
    pub seconds: f64,
    /// The held-out measurement, on the epochs `--validate-every` measures.
    #[serde(default)]
    pub validation: Option<ValidationResult>,
}

impl EpochLine {
    /// The learned backbone's held-out figures, where measured.
    pub fn backbone(&self) -> Option<&RetrievalReport> {
        self.validation.as_ref().map(|v| &v.backbone)
    }

    /// The held-out kNN-200 of the in-graph colour histogram alone, where measured.
    pub fn histogram_knn200(&self) -> Option<f64> {
        self.validation.as_ref().and_then(|v| {
            v.candidates
                .iter()
                .find(|c| c.colour_weight >= 1.0)
                .map(|c| c.report.knn200_acc)
        })
    }

    /// The line as written to the file (one JSON object, no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("an epoch line serialises")
    }
}

/// A number, or NaN for `null`.
fn figure<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One line's epoch, or None for a line that is not one (a killed run's torn last line).
pub fn parse(line: &str) -> Option<EpochLine> {
    serde_json::from_str(line).ok()
}

/// One line's epoch number alone: what a resume's clean-up keeps or drops a line by, whatever
/// else the line holds.
pub fn epoch_of(line: &str) -> Option<usize> {
    #[derive(Deserialize)]
    struct Epoch {
        epoch: usize,
    }
    serde_json::from_str::<Epoch>(line).ok().map(|e| e.epoch)
}

/// Every line of `path` that reads as an epoch, in file order; none when it does not exist.
pub fn read(path: &Path) -> Vec<EpochLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_written_and_an_old_short_line_still_reads() {
        let line = EpochLine {
            epoch: 3,
            loss: 2.5,
            lr: 1e-3,
            images_per_s: 80.0,
            seconds: 12.0,
            validation: None,
        };
        let back = parse(&line.to_line()).unwrap();
        assert_eq!(back.to_line(), line.to_line());
        assert_eq!((back.epoch, back.loss, back.seconds), (3, 2.5, 12.0));
        let old = parse(r#"{"epoch":2,"loss":2.4,"validation":null}"#).unwrap();
        assert_eq!(
            (old.epoch, old.loss, old.validation.is_none()),
            (2, 2.4, true)
        );
        assert!(
            parse(r#"{"epoch":2,"lo"#).is_none(),
            "a torn line is not an epoch"
        );
        assert!(
            parse(r#"{"loss":2.4}"#).is_none(),
            "a line without its epoch is not one"
        );
        // NaN is written as null: the line still reads, and still counts for a resume
        let nan = EpochLine {
            epoch: 4,
            loss: f64::NAN,
            ..Default::default()
        };
        let back = parse(&nan.to_line()).expect("a line with a NaN figure reads back");
        assert!(back.loss.is_nan() && back.epoch == 4);
        assert_eq!(epoch_of(r#"{"epoch":5,"validation":{"odd":1}}"#), Some(5));
    }
}
