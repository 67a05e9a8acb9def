//! The served output chosen under the shift protocol, with the honest estimate of that choice.
//!
//! `trainer robustness` scores every candidate embedding (backbone, head, their blends with the
//! colour histogram) on every held-out fold, clean and under each shift. Picking the candidate
//! with the best figure over those same folds would grade the choice on the data it was made
//! on. So the estimate is nested: for each fold, the candidate best on the *other* folds (mean
//! over the clean row and every shift) is scored on this fold. The candidate shipped is the one
//! best on all folds; the nested figures say what that rule of choice is worth on unseen cells.
//! A candidate that wins clean and loses under shift does not win here, because every shift
//! weighs as much as the clean row. Candidates within [`TIE`] of the best tie, and the
//! cheapest to serve wins: test-time views or the colour histogram must buy more than noise.

use crate::cv::views_name;
use crate::eval::COLOUR_WEIGHTS;
use crate::model::EmbeddingOutput;
use crate::robustness::RobustnessReport;
use crate::tta::TestTimeViews;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Candidates whose score (kNN-200, mean over folds, clean row and shifts) lies within this
/// of the best one tie, and the cheapest of them to serve is chosen: a difference this small
/// is a tenth of the folds' SD, and eight test-time views cost eight times the inference.
pub const TIE: f64 = 0.005;

/// What serving a candidate costs, to break ties: encoder passes, then whether the in-graph
/// colour histogram is computed too (most of one pass's time) and widens the vectors.
fn cost(name: &str) -> (usize, bool) {
    let (_, views, w) = parse_candidate(name).expect("names are parsed");
    (views.passes(), w > 0.0)
}

/// The chosen embedding and what the nested choice scored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProtocolChoice {
    /// The candidate's name in the report (`trainer cv`'s names).
    pub name: String,
    pub output: EmbeddingOutput,
    /// Whether the embedding averages over the window's eight symmetries (reports before
    /// test-time views measured one view).
    #[serde(default)]
    pub views: TestTimeViews,
    pub colour_weight: f32,
    /// How it was chosen, in words (for the card).
    pub rule: String,
    /// Per fold: the candidate the other folds chose.
    pub chosen_per_fold: Vec<String>,
    /// kNN-200 of the nested choice, clean, per fold.
    pub clean_per_fold: Vec<f64>,
    pub clean_mean: f64,
    pub clean_sd: f64,
    /// Mean over the shifts (every row but the clean one) of the nested choice's mean over folds.
    pub shifts_mean: f64,
    /// The shift where the nested choice's mean over folds is lowest, and that mean.
    pub worst_shift: String,
    pub worst: f64,
    /// The same three figures for the colour histogram of the same windows.
    pub histogram_clean: f64,
    pub histogram_shifts_mean: f64,
    pub histogram_worst: f64,
    pub folds: usize,
    pub query_cells: Vec<usize>,
}

/// Choose the served embedding from `report` (see the module docs). Errors when the report
/// holds no learned candidates (a histogram-only run) or no clean row.
pub fn choose_under_shift(report: &RobustnessReport) -> Result<ProtocolChoice> {
    let bad = |why: &str| Err(Error::Config(format!("robustness report: {why}")));
    let Some(clean) = report.rows.iter().position(|r| r.shift == "clean") else {
        return bad("no clean row");
    };
    let names: Vec<&String> = report.rows[clean]
        .learned
        .keys()
        .filter(|n| parse_candidate(n).is_some())
        .collect();
    if names.is_empty() {
        return bad("no learned embedding was measured (run it on a trainer cv folder)");
    }
    let folds = report.folds;
    let best_over = |keep: &dyn Fn(usize) -> bool| best_candidate(report, &names, keep);
    let chosen_per_fold: Vec<String> = (0..folds).map(|k| best_over(&|f| f != k).clone()).collect();
    // the nested choice's kNN-200 on fold k under row r
    let nested = |r: &crate::robustness::ShiftRow| -> Vec<f64> {
        (0..folds)
            .map(|k| {
                r.learned[&chosen_per_fold[k]]
                    .get(k)
                    .copied()
                    .unwrap_or(f64::NAN)
            })
            .collect()
    };
    let clean_per_fold = nested(&report.rows[clean]);
    let (clean_mean, clean_sd) = crate::robustness::mean_sd(&clean_per_fold);
    let shifted: Vec<(String, f64)> = report
        .rows
        .iter()
        .filter(|r| r.shift != "clean")
        .map(|r| (r.shift.clone(), crate::robustness::mean_sd(&nested(r)).0))
        .collect();
    let (worst_shift, worst) = worst_of(&shifted);
    let hist: Vec<(String, f64)> = report
        .rows
        .iter()
        .filter(|r| r.shift != "clean")
        .map(|r| (r.shift.clone(), crate::robustness::mean_sd(&r.histogram).0))
        .collect();
    let name = best_over(&|_| true).clone();
    let (output, views, colour_weight) = parse_candidate(&name).expect("names are parsed");
    Ok(ProtocolChoice {
        rule: format!(
            "the candidate with the best kNN-200 over the folds, mean of the clean row and every shift (within {TIE} of the best, the cheapest to serve: fewest encoder passes, then no colour histogram); figures: nested (each fold scored with the candidate best on the other folds)"
        ),
        name,
        output,
        views,
        colour_weight,
        chosen_per_fold,
        clean_mean,
        clean_sd,
        clean_per_fold,
        shifts_mean: mean(shifted.iter().map(|s| s.1)),
        worst_shift,
        worst,
        histogram_clean: crate::robustness::mean_sd(&report.rows[clean].histogram).0,
        histogram_shifts_mean: mean(hist.iter().map(|s| s.1)),
        histogram_worst: worst_of(&hist).1,
        folds,
        query_cells: report.query_cells.clone(),
    })
}

/// The candidate among `names` best over the folds `keep` accepts (kNN-200, mean of every
/// row of `report`); within [`TIE`] of the best, the cheapest to serve.
fn best_candidate<'a>(
    report: &RobustnessReport,
    names: &[&'a String],
    keep: &dyn Fn(usize) -> bool,
) -> &'a String {
    let score = |name: &str, fold: usize| -> f64 {
        let xs: Vec<f64> = report
            .rows
            .iter()
            .filter_map(|r| r.learned.get(name).and_then(|v| v.get(fold)).copied())
            .collect();
        xs.iter().sum::<f64>() / xs.len().max(1) as f64
    };
    let f: Vec<usize> = (0..report.folds).filter(|&f| keep(f)).collect();
    let mean = |n: &str| f.iter().map(|&k| score(n, k)).sum::<f64>() / f.len().max(1) as f64;
    let top = names.iter().map(|n| mean(n)).fold(f64::MIN, f64::max);
    names
        .iter()
        .filter(|n| mean(n) >= top - TIE)
        .min_by(|a, b| cost(a).cmp(&cost(b)).then(mean(b).total_cmp(&mean(a))))
        .or(names.first())
        .expect("names is not empty")
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn worst_of(rows: &[(String, f64)]) -> (String, f64) {
    rows.iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .cloned()
        .unwrap_or_else(|| ("none".into(), f64::NAN))
}

/// The output and colour weight a learned candidate's name stands for (`None` for the
/// histogram alone or an unknown name).
pub fn parse_candidate(name: &str) -> Option<(EmbeddingOutput, TestTimeViews, f32)> {
    let views = [TestTimeViews::None, TestTimeViews::Dihedral8];
    [EmbeddingOutput::Backbone, EmbeddingOutput::Head]
        .into_iter()
        .flat_map(|o| views.into_iter().map(move |v| (o, v)))
        .flat_map(|(o, v)| COLOUR_WEIGHTS.iter().map(move |&w| (o, v, w)))
        .filter(|&(_, _, w)| w < 1.0)
        .find(|&(output, views, w)| views_name(output, views, w) == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::robustness::ShiftRow;
    use cellspace_core::preprocess::Preprocess;

    fn row(shift: &str, learned: &[(&str, [f64; 3])]) -> ShiftRow {
        ShiftRow {
            shift: shift.into(),
            learned: learned
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            histogram: vec![0.5; 3],
            flagged: vec![0.0; 3],
            flags: Default::default(),
            few_label: Default::default(),
        }
    }

    /// The blend wins clean, the head wins under shift by more: the head is served, and the
    /// nested estimate scores each fold with the other folds' choice.
    #[test]
    fn a_candidate_that_loses_under_shift_is_not_chosen() {
        let (head, blend) = ("learned head", "head + colour, w 0.8");
        let report = RobustnessReport {
            folds: 3,
            query_cells: vec![60; 3],
            per_group: 1,
            rows: vec![
                row(
                    "clean",
                    &[(head, [0.84, 0.85, 0.86]), (blend, [0.88, 0.88, 0.88])],
                ),
                row(
                    "lamp",
                    &[(head, [0.83, 0.84, 0.85]), (blend, [0.70, 0.72, 0.90])],
                ),
                row(
                    "mag:2",
                    &[(head, [0.80, 0.80, 0.80]), (blend, [0.75, 0.75, 0.95])],
                ),
            ],
            served: Some(blend.into()),
            preprocess: Preprocess::blood_cells(64),
            seconds: 1.0,
        };
        let c = choose_under_shift(&report).unwrap();
        // over all folds (mean of the three rows): head 0.830, blend 0.823
        assert_eq!(c.name, head);
        assert_eq!((c.output, c.colour_weight), (EmbeddingOutput::Head, 0.0));
        // folds 2+3 favour the blend (0.847 against 0.833), so do 1+3; folds 1+2 the head
        assert_eq!(c.chosen_per_fold, [blend, blend, head]);
        assert_eq!(c.clean_per_fold, [0.88, 0.88, 0.86]);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        // lamp [0.70, 0.72, 0.85], mag:2 [0.75, 0.75, 0.80]
        assert_eq!(c.worst_shift, "lamp");
        assert!(close(c.worst, (0.70 + 0.72 + 0.85) / 3.0), "{}", c.worst);
        assert!(close(
            c.shifts_mean,
            (0.7566666666666667 + 0.7666666666666667) / 2.0
        ));
        assert_eq!(c.histogram_clean, 0.5);
    }

    /// Eight views score 0.002 above one view: a tie, and the one view (an eighth of the
    /// inference) is served; 0.02 above is a win.
    #[test]
    fn a_tie_goes_to_the_cheaper_candidate() {
        let (one, eight) = ("learned head", "learned head, 8 views");
        let report = |gain: f64| RobustnessReport {
            folds: 3,
            query_cells: vec![60; 3],
            per_group: 1,
            rows: vec![
                row("clean", &[(one, [0.84; 3]), (eight, [0.84 + gain; 3])]),
                row("lamp", &[(one, [0.80; 3]), (eight, [0.80 + gain; 3])]),
            ],
            served: None,
            preprocess: Preprocess::blood_cells(64),
            seconds: 1.0,
        };
        let c = choose_under_shift(&report(0.002)).unwrap();
        assert_eq!((c.name.as_str(), c.views), (one, TestTimeViews::None));
        assert_eq!(c.chosen_per_fold, [one; 3]);
        let c = choose_under_shift(&report(0.02)).unwrap();
        assert_eq!(
            (c.name.as_str(), c.views),
            (eight, TestTimeViews::Dihedral8)
        );
    }

    #[test]
    fn names_parse_back_to_the_output_and_weight() {
        let one = TestTimeViews::None;
        assert_eq!(
            parse_candidate("head + colour, w 0.3"),
            Some((EmbeddingOutput::Head, one, 0.3))
        );
        assert_eq!(
            parse_candidate("learned backbone"),
            Some((EmbeddingOutput::Backbone, one, 0.0))
        );
        assert_eq!(
            parse_candidate("learned head, 8 views"),
            Some((EmbeddingOutput::Head, TestTimeViews::Dihedral8, 0.0))
        );
        assert_eq!(
            parse_candidate("in-graph colour histogram (model input)"),
            None
        );
    }

    #[test]
    fn a_report_without_learned_candidates_is_an_error() {
        let report = RobustnessReport {
            folds: 3,
            query_cells: vec![60; 3],
            per_group: 1,
            rows: vec![row("clean", &[])],
            served: None,
            preprocess: Preprocess::blood_cells(64),
            seconds: 1.0,
        };
        let e = choose_under_shift(&report).unwrap_err().to_string();
        assert!(e.contains("no learned embedding"), "{e}");
    }
}
