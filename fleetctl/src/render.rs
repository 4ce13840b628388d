//! The one renderer: every command's typed result becomes a table for
//! people, or JSON or CSV for scripts, here and nowhere else.
//!
//! A result says what it is through [`Report`]: its JSON (the API's JSON for
//! the resource), and a [`View`] for the table and the CSV: a [`Grid`] of
//! named columns, or text as it is (a device's detail, a confirmation).
//!
//! Much of what is shown was reported by devices (event and check messages,
//! firmware strings), so nothing reaches the terminal raw: control
//! characters (C0, DEL, C1; ESC among them) are shown escaped, `\u{1b}`,
//! in tables, text and CSV; JSON escapes them too. A CSV cell that a
//! spreadsheet would run as a formula (`=`, `+`, `-`, `@` first, and not a
//! plain number) gets a leading `'`. The JSON output carries the exact text.

use std::borrow::Cow;
use std::fmt::Write as _;

use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;

/// `--output`: what a command prints.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Csv,
}

/// Rows of cells under named columns. Names are lower case, as CSV heads
/// them; the table upper-cases them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Grid {
    pub fn new(columns: &[&str]) -> Self {
        Self {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }
}

/// How a result looks as a table or CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Aligned columns; `footer` follows the table (never the CSV).
    Grid { grid: Grid, footer: String },
    /// Lines of text (a headline), then the grid; the CSV has the grid only.
    Titled {
        title: String,
        grid: Grid,
        footer: String,
    },
    /// Printed as it is.
    Text(String),
}

impl View {
    pub fn grid(grid: Grid) -> Self {
        View::Grid {
            grid,
            footer: String::new(),
        }
    }
}

/// A command's typed result, as the renderer sees it.
pub trait Report {
    /// `--output json`: the API's JSON for the resource.
    fn json(&self) -> Value;
    /// `--output table` (and what commands without `--output` print).
    fn table(&self) -> View;
    /// `--output csv`: the table's columns, cells uncut, unless the result
    /// has columns of its own for scripts.
    fn csv(&self) -> View {
        self.table()
    }
    /// A line for stderr beside the output (what was written where, that a
    /// secret is shown once).
    fn note(&self) -> Option<String> {
        None
    }
}

/// The one place results become text.
pub fn render(report: &dyn Report, output: Output) -> String {
    match output {
        Output::Json => pretty(&report.json()),
        Output::Table => match report.table() {
            View::Grid { grid, footer } => table(&grid) + &escape(&footer, true),
            View::Titled {
                title,
                grid,
                footer,
            } => escape(&title, true).into_owned() + &table(&grid) + &escape(&footer, true),
            View::Text(text) => escape(&text, true).into_owned(),
        },
        Output::Csv => match report.csv() {
            View::Grid { grid, .. } | View::Titled { grid, .. } => csv(&grid),
            View::Text(text) => escape(&text, true).into_owned(),
        },
    }
}

/// Text as it may safely reach a terminal on one line: every control
/// character shown as its escape (`\u{1b}`, `\n`). For values a command puts
/// into a text view (a device's check message), so that none can end the
/// line and forge another.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

fn escape(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    let raw = |c: char| c.is_control() && !(keep_newlines && c == '\n');
    if !s.chars().any(raw) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if raw(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// A CSV cell a spreadsheet shows and never runs: escaped like a table
/// cell, and `'` before what would start a formula (a plain number such as
/// `-2` stays a number).
fn csv_cell(s: &str) -> String {
    let s = printable(s);
    if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.into_owned()
    }
}

/// A typed value as JSON for [`Report::json`]. Through `Value`, so keys
/// come out in the order they always did (sorted).
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Value {
    serde_json::to_value(value).expect("API types serialize to JSON")
}

/// A value as a cell: as the JSON answer shows it, strings without quotes,
/// `null` empty.
pub fn cell<T: Serialize + ?Sized>(value: &T) -> String {
    match to_json(value) {
        Value::Null => String::new(),
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// serde_json escapes C0 control characters; DEL and C1 (U+0080–U+009F,
/// which some terminals take for ESC sequences) are escaped here. They can
/// only be inside strings, where `\u00XX` is the same character.
fn pretty(v: &Value) -> String {
    let text = serde_json::to_string_pretty(v).expect("a JSON value prints");
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if c.is_control() && !c.is_ascii_whitespace() {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out + "\n"
}

/// Table cells longer than this are cut (the JSON output has everything).
const MAX_CELL: usize = 72;

fn table(grid: &Grid) -> String {
    let mut rows = vec![grid.columns.iter().map(|c| c.to_uppercase()).collect()];
    rows.extend(grid.rows.iter().map(|r| {
        r.iter()
            .map(|s| printable(s))
            .map(|s| {
                if s.chars().count() > MAX_CELL {
                    format!("{}…", s.chars().take(MAX_CELL - 1).collect::<String>())
                } else {
                    s.into_owned()
                }
            })
            .collect()
    }));
    align(&rows)
}

fn align(table: &[Vec<String>]) -> String {
    let cols = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            table
                .iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn csv(grid: &Grid) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing to memory fails only on a record of another length, which a
    // Grid's rows never are.
    let _ = w.write_record(grid.columns.iter().map(|c| csv_cell(c)));
    for r in &grid.rows {
        let _ = w.write_record(r.iter().map(|c| csv_cell(c)));
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One typed result, two rows, a footer and a long cell.
    struct Stations(Vec<(String, u64, Option<u64>)>);

    impl Report for Stations {
        fn json(&self) -> Value {
            to_json(&self.0)
        }
        fn table(&self) -> View {
            let mut grid = Grid::new(&["code", "stations", "closed_at_ms"]);
            for (code, n, closed) in &self.0 {
                grid.rows.push(vec![cell(code), cell(n), cell(closed)]);
            }
            View::Grid {
                grid,
                footer: format!("{} counties\n", self.0.len()),
            }
        }
    }

    fn stations() -> Stations {
        Stations(vec![
            ("IR-02-SARI".into(), 12, None),
            ("IR-23-TEH, north".into(), 3, Some(5)),
        ])
    }

    #[test]
    fn table_upper_cases_heads_aligns_columns_and_ends_with_the_footer() {
        let out = render(&stations(), Output::Table);
        assert_eq!(
            out,
            "CODE              STATIONS  CLOSED_AT_MS\n\
             IR-02-SARI        12\n\
             IR-23-TEH, north  3         5\n\
             2 counties\n"
        );
    }

    #[test]
    fn csv_has_the_lower_case_heads_quotes_commas_and_no_footer() {
        let out = render(&stations(), Output::Csv);
        assert_eq!(
            out,
            "code,stations,closed_at_ms\nIR-02-SARI,12,\n\"IR-23-TEH, north\",3,5\n"
        );
    }

    #[test]
    fn json_is_the_typed_value_pretty_printed() {
        let out = render(&stations(), Output::Json);
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            back,
            json!([["IR-02-SARI", 12, null], ["IR-23-TEH, north", 3, 5]])
        );
        assert!(out.ends_with("]\n") && out.contains("\n  "), "{out}");
    }

    #[test]
    fn long_cells_are_cut_in_the_table_only() {
        let long = "x".repeat(100);
        let r = Stations(vec![(long.clone(), 1, None)]);
        let t = render(&r, Output::Table);
        let row = t.lines().nth(1).unwrap();
        assert_eq!(row.chars().count(), MAX_CELL + "  1".len());
        assert!(row.contains('…'), "{row}");
        assert!(render(&r, Output::Csv).contains(&long));
    }

    #[test]
    fn cells_show_values_as_json_without_quotes_and_null_as_empty() {
        assert_eq!(cell("a b"), "a b");
        assert_eq!(cell(&None::<u64>), "");
        assert_eq!(cell(&true), "true");
        assert_eq!(cell(&vec!["IR-02", "IR-27"]), r#"["IR-02","IR-27"]"#);
    }

    /// Text a device reported (an event, a check message, a firmware
    /// string) and a cell made to be a spreadsheet formula.
    struct Reported;

    impl Report for Reported {
        fn json(&self) -> Value {
            json!({ "message": "\u{1b}[2J \u{9b}31m \u{7f}" })
        }
        fn table(&self) -> View {
            let mut grid = Grid::new(&["device", "message"]);
            grid.rows.push(vec![
                "BB-1".into(),
                "paper \u{1b}[2J\u{1b}]0;owned\u{7}gone\r\nBB-2 ready".into(),
            ]);
            grid.rows
                .push(vec!["BB-3".into(), "=cmd|' /C calc'!A0".into()]);
            grid.rows.push(vec!["BB-4".into(), "-2".into()]);
            View::grid(grid)
        }
    }

    #[test]
    fn control_characters_are_shown_escaped_and_formula_cells_neutralised() {
        let t = render(&Reported, Output::Table);
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        assert!(
            t.contains("paper \\u{1b}[2J\\u{1b}]0;owned\\u{7}gone\\r\\nBB-2 ready"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 4, "a reported newline makes no row: {t}");
        let c = render(&Reported, Output::Csv);
        assert!(!c.chars().any(|c| c.is_control() && c != '\n'), "{c:?}");
        assert!(c.contains("BB-3,'=cmd|' /C calc'!A0\n"), "{c}");
        assert!(
            c.contains("BB-4,-2\n"),
            "a negative number stays a number: {c}"
        );
        let j = render(&Reported, Output::Json);
        assert!(!j.chars().any(|c| c.is_control() && c != '\n'), "{j:?}");
        let back: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(back, Reported.json(), "the JSON keeps the exact text");
    }

    #[test]
    fn text_views_print_as_they_are_in_table_and_csv() {
        struct Note;
        impl Report for Note {
            fn json(&self) -> Value {
                json!({"ok": true})
            }
            fn table(&self) -> View {
                View::Text("done\n".into())
            }
        }
        assert_eq!(render(&Note, Output::Table), "done\n");
        assert_eq!(render(&Note, Output::Csv), "done\n");
        assert_eq!(render(&Note, Output::Json), "{\n  \"ok\": true\n}\n");
    }
}
