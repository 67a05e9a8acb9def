//! The robustness report as markdown: kNN-200 per shift, each embedding's clean, mean and
//! worst figure, and the few-label accuracy clean and under shift.

use crate::robustness::{FEW_LABELS, HISTOGRAM, RobustnessReport, ShiftRow, mean_sd};

/// The report as markdown: kNN-200 mean ± SD over folds per shift for the served embedding,
/// the learned backbone and head alone and the histogram of the same windows; then the clean,
/// mean and worst figure over the shifts of every embedding measured.
pub fn table(r: &RobustnessReport) -> String {
    let f = |xs: Option<&Vec<f64>>| match xs {
        Some(xs) if !xs.is_empty() => {
            let (m, s) = mean_sd(xs);
            format!("{m:.3} ± {s:.3}")
        }
        _ => "-".to_string(),
    };
    let mut shown: Vec<String> = Vec::new();
    for n in r
        .served
        .iter()
        .cloned()
        .chain(["learned backbone".into(), "learned head".into()])
    {
        if !shown.contains(&n)
            && r.rows
                .first()
                .is_some_and(|row| row.learned.contains_key(&n))
        {
            shown.push(n);
        }
    }
    let mut t = String::from("| shift |");
    for n in &shown {
        let mark = if r.served.as_ref() == Some(n) {
            " (served)"
        } else {
            ""
        };
        t.push_str(&format!(" {n}{mark} |"));
    }
    t.push_str(&format!(
        " {HISTOGRAM} | flagged |\n|{}\n",
        " --- |".repeat(shown.len() + 3)
    ));
    for row in &r.rows {
        t.push_str(&format!("| {} |", row.shift));
        for n in &shown {
            t.push_str(&format!(" {} |", f(row.learned.get(n))));
        }
        let flagged = 100.0 * mean_sd(&row.flagged).0;
        t.push_str(&format!(" {} | {flagged:.0}% |\n", f(Some(&row.histogram))));
    }
    t.push('\n');
    t.push_str(&summary(r));
    t.push_str(&few_label(r));
    t
}

/// Clean, mean over the shifts and worst shift of every embedding (markdown).
fn summary(r: &RobustnessReport) -> String {
    let shifted = &r.rows[1.min(r.rows.len())..];
    let mut names: Vec<String> = r
        .rows
        .first()
        .map(|row| row.learned.keys().cloned().collect())
        .unwrap_or_default();
    names.push(HISTOGRAM.into());
    let mut t = String::from(
        "| embedding | clean | mean over the shifts | worst shift |\n| --- | --- | --- | --- |\n",
    );
    for name in names {
        let pick = |row: &ShiftRow| -> Option<f64> {
            let xs = if name == HISTOGRAM {
                Some(&row.histogram)
            } else {
                row.learned.get(&name)
            };
            xs.filter(|x| !x.is_empty()).map(|x| mean_sd(x).0)
        };
        let means: Vec<(f64, &str)> = shifted
            .iter()
            .filter_map(|row| pick(row).map(|m| (m, row.shift.as_str())))
            .collect();
        let Some(worst) = means.iter().min_by(|a, b| a.0.total_cmp(&b.0)) else {
            continue;
        };
        let mean = means.iter().map(|m| m.0).sum::<f64>() / means.len() as f64;
        let clean = r.rows.first().and_then(pick).unwrap_or(f64::NAN);
        t.push_str(&format!(
            "| {name} | {clean:.3} | {mean:.3} | {:.3} ({}) |\n",
            worst.0, worst.1
        ));
    }
    t
}

/// Few-label accuracy (N labelled originals per class, one copy each) of the served embedding
/// and the histogram: clean, mean over the shifts, worst shift (markdown; empty without).
fn few_label(r: &RobustnessReport) -> String {
    let Some(clean) = r.rows.first() else {
        return String::new();
    };
    if clean.few_label.is_empty() {
        return String::new();
    }
    let served = r.served.as_deref().unwrap_or(HISTOGRAM);
    let shifted = &r.rows[1..];
    let mut t = format!(
        "\n| labelled per class | {served}: clean | mean over the shifts | worst shift | {HISTOGRAM}: clean | mean over the shifts |\n| --- | --- | --- | --- | --- | --- |\n"
    );
    let at = |row: &ShiftRow, name: &str, n: usize| {
        row.few_label
            .get(name)
            .and_then(|m| m.get(&n))
            .filter(|x| !x.is_empty())
            .map(|x| mean_sd(x))
    };
    let cell = |x: Option<(f64, f64)>| x.map_or("-".into(), |(m, s)| format!("{m:.3} ± {s:.3}"));
    let num = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
    for n in FEW_LABELS {
        let over = |name: &str| {
            let means: Vec<f64> = shifted
                .iter()
                .filter_map(|row| at(row, name, n).map(|x| x.0))
                .collect();
            let mean = (!means.is_empty()).then(|| means.iter().sum::<f64>() / means.len() as f64);
            (mean, means.iter().copied().min_by(f64::total_cmp))
        };
        let ((sm, sw), (hm, _)) = (over(served), over(HISTOGRAM));
        t.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} |\n",
            cell(at(clean, served, n)),
            num(sm),
            num(sw),
            cell(at(clean, HISTOGRAM, n)),
            num(hm)
        ));
    }
    t
}
