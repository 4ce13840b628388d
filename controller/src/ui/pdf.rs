//! The readiness report as a PDF, made by the controller (no browser):
//! A4 pages, the embedded Vazirmatn font (subset by krilla), Persian text
//! shaped by rustybuzz and its runs ordered by the Unicode bidirectional
//! algorithm (unicode-bidi), so that Persian reads right to left with its
//! numbers and device ids left to right inside it. Pure: a report and a
//! language in, bytes out.

use std::ops::Range;

use fleet_api::types::Reason;
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::Fill;
use krilla::surface::Surface;
use krilla::text::{Font, GlyphId, KrillaGlyph};
use krilla::Document;
use unicode_bidi::{BidiInfo, Level};

use super::i18n::{Lang, Msg};
use super::report::Report;

const FONT: &[u8] = include_bytes!("../../ui/fonts/Vazirmatn-Regular.ttf");

const W: f32 = 595.28;
const H: f32 = 841.89;
const MARGIN: f32 = 36.0;

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the embedded font cannot be read")]
    Font,
    #[error("{0}")]
    Krilla(String),
}

/// One line of text shaped into glyph runs, in visual order.
struct Shaped {
    runs: Vec<(Vec<KrillaGlyph>, Range<usize>)>,
    /// In font-size units.
    width: f32,
}

struct Writer<'a> {
    font: Font,
    face: rustybuzz::Face<'a>,
    upem: f32,
    lang: Lang,
}

impl<'a> Writer<'a> {
    fn shape(&self, text: &str) -> Shaped {
        let base = match self.lang {
            Lang::Fa => Level::rtl(),
            Lang::En => Level::ltr(),
        };
        let info = BidiInfo::new(text, Some(base));
        let mut runs = Vec::new();
        let mut width = 0.0;
        for para in &info.paragraphs {
            let (levels, visual) = info.visual_runs(para, para.range.clone());
            for range in visual {
                let rtl = levels[range.start].is_rtl();
                let mut buf = rustybuzz::UnicodeBuffer::new();
                buf.push_str(&text[range.clone()]);
                buf.guess_segment_properties();
                buf.set_direction(if rtl {
                    rustybuzz::Direction::RightToLeft
                } else {
                    rustybuzz::Direction::LeftToRight
                });
                let out = rustybuzz::shape(&self.face, &[], buf);
                let glyphs: Vec<KrillaGlyph> = out
                    .glyph_infos()
                    .iter()
                    .zip(out.glyph_positions())
                    .map(|(info, pos)| {
                        let start = range.start + info.cluster as usize;
                        // The cluster's text: up to the next character.
                        let end = text[start..]
                            .chars()
                            .next()
                            .map_or(start, |c| start + c.len_utf8())
                            .min(range.end);
                        KrillaGlyph::new(
                            GlyphId::new(info.glyph_id),
                            pos.x_advance as f32 / self.upem,
                            pos.x_offset as f32 / self.upem,
                            pos.y_offset as f32 / self.upem,
                            pos.y_advance as f32 / self.upem,
                            start..end,
                            None,
                        )
                    })
                    .collect();
                width += glyphs.iter().map(|g| g.x_advance).sum::<f32>();
                runs.push((glyphs, range));
            }
        }
        Shaped { runs, width }
    }

    /// Draw `text` with its left edge at `x` (its baseline at `y`).
    fn draw_at(&self, s: &mut Surface, text: &str, x: f32, y: f32, size: f32) {
        let shaped = self.shape(text);
        let mut cur = x;
        for (glyphs, _) in &shaped.runs {
            s.draw_glyphs(
                Point::from_xy(cur, y),
                glyphs,
                self.font.clone(),
                text,
                size,
                false,
            );
            cur += glyphs.iter().map(|g| g.x_advance).sum::<f32>() * size;
        }
    }

    fn width(&self, text: &str, size: f32) -> f32 {
        self.shape(text).width * size
    }

    /// Draw `text` in the cell `[x0, x1]`: at its start (the right edge in
    /// Persian) or its end (numbers), shrunk to fit.
    fn cell(&self, s: &mut Surface, c: &Cell, y: f32) {
        let (text, x0, x1, end) = (c.text.as_str(), c.x0, c.x1, c.end);
        let room = (x1 - x0 - 4.0).max(1.0);
        let mut size = c.size;
        let w = self.width(text, size);
        if w > room {
            size *= room / w;
        }
        let w = self.width(text, size);
        let at_right = (self.lang == Lang::Fa) != end;
        let x = if at_right { x1 - 2.0 - w } else { x0 + 2.0 };
        self.draw_at(s, text, x, y, size);
    }

    /// A line across the text block at `y`.
    fn rule(&self, s: &mut Surface, y: f32, grey: u8) {
        let mut pb = PathBuilder::new();
        pb.move_to(MARGIN, y);
        pb.line_to(W - MARGIN, y);
        pb.line_to(W - MARGIN, y + 0.5);
        pb.line_to(MARGIN, y + 0.5);
        pb.close();
        if let Some(path) = pb.finish() {
            s.set_fill(Some(Fill {
                paint: rgb::Color::new(grey, grey, grey).into(),
                opacity: NormalizedF32::ONE,
                rule: Default::default(),
            }));
            s.draw_path(&path);
            s.set_fill(None);
        }
    }

    /// Column edges `[x0, x1]` from widths in reading order: left to right
    /// in English, right to left in Persian.
    fn columns(&self, widths: &[f32]) -> Vec<(f32, f32)> {
        let total: f32 = widths.iter().sum();
        let scale = (W - 2.0 * MARGIN) / total;
        let mut at = 0.0;
        widths
            .iter()
            .map(|w| {
                let (a, b) = (at, at + w * scale);
                at = b;
                match self.lang {
                    Lang::En => (MARGIN + a, MARGIN + b),
                    Lang::Fa => (W - MARGIN - b, W - MARGIN - a),
                }
            })
            .collect()
    }
}

pub fn render(report: &Report, lang: Lang) -> Result<Vec<u8>, PdfError> {
    let font = Font::new(FONT.to_vec().into(), 0).ok_or(PdfError::Font)?;
    let face = rustybuzz::Face::from_slice(FONT, 0).ok_or(PdfError::Font)?;
    let w = Writer {
        upem: f32::from(face.units_per_em() as u16),
        font,
        face,
        lang,
    };
    // Lay out every line first (text, x0, x1, size, at the end), page by
    // page, then draw.
    let mut layout = Layout {
        pages: vec![Vec::new()],
        y: MARGIN,
    };
    let t = |m: Msg| lang.t(m);
    let full = (MARGIN, W - MARGIN);
    layout.line(&w, vec![Cell::new(t(Msg::Report), full, 18.0, false)], 26.0);
    layout.line(
        &w,
        vec![Cell::new(
            format!(
                "{} · {}",
                lang.both_dates(report.at_ms),
                lang.datetime(report.at_ms)
            ),
            full,
            11.0,
            false,
        )],
        18.0,
    );
    let total = &report.total;
    layout.line(
        &w,
        vec![Cell::new(
            format!(
                "{} {} {} {} {} ({})",
                lang.count(u64::from(total.ready)),
                t(Msg::Of),
                lang.count(u64::from(total.total)),
                t(Msg::DevicesWord),
                t(Msg::Ready),
                lang.percent(u64::from(total.ready), u64::from(total.total)),
            ),
            full,
            13.0,
            false,
        )],
        24.0,
    );
    // The table by province.
    let mut widths = vec![2.2, 1.0, 1.0, 1.1];
    widths.extend(std::iter::repeat_n(1.0, Reason::ALL.len()));
    let cols = w.columns(&widths);
    let mut header: Vec<String> = vec![
        t(Msg::Province).into(),
        t(Msg::Total).into(),
        t(Msg::ReadyCount).into(),
        t(Msg::ReadyPct).into(),
    ];
    header.extend(Reason::ALL.iter().map(|r| lang.reason(*r).to_owned()));
    let header_line: Vec<_> = header
        .iter()
        .zip(&cols)
        .enumerate()
        .map(|(i, (h, (a, b)))| Cell::new(h.clone(), (*a, *b), 7.5, i > 0))
        .collect();
    layout.rule(16.0);
    layout.line(&w, header_line.clone(), 13.0);
    layout.rule(2.0);
    for (p, c) in &report.provinces {
        let mut cells = vec![
            lang.province(*p).to_owned(),
            lang.count(u64::from(c.total)),
            lang.count(u64::from(c.ready)),
            lang.percent(u64::from(c.ready), u64::from(c.total)),
        ];
        cells.extend(
            Reason::ALL
                .iter()
                .map(|r| lang.count(u64::from(c.reason(*r)))),
        );
        let line = cells
            .into_iter()
            .zip(&cols)
            .enumerate()
            .map(|(i, (text, (a, b)))| Cell::new(text, (*a, *b), 8.5, i > 0))
            .collect();
        layout.line_or_new_page(&w, line, 13.0, Some(&header_line));
    }
    layout.rule(4.0);
    // The devices that are not ready.
    layout.line_or_new_page(
        &w,
        vec![Cell::new(t(Msg::NotReadyDevices), full, 13.0, false)],
        28.0,
        None,
    );
    if report.groups.is_empty() {
        layout.line(
            &w,
            vec![Cell::new(t(Msg::AllReady), full, 10.0, false)],
            16.0,
        );
    }
    let dcols = w.columns(&[1.6, 1.4, 1.0, 1.4]);
    let dheader: Vec<_> = [Msg::Device, Msg::County, Msg::Station, Msg::LastSeen]
        .iter()
        .zip(&dcols)
        .map(|(m, (a, b))| Cell::new(t(*m).to_owned(), (*a, *b), 7.5, false))
        .collect();
    for g in &report.groups {
        let title = format!(
            "{} · {} ({})",
            lang.reason(g.reason),
            lang.province(g.province),
            lang.count((g.lines.len() + g.more) as u64)
        );
        layout.line_or_new_page(&w, vec![Cell::new(title, full, 10.5, false)], 22.0, None);
        layout.line_or_new_page(&w, dheader.clone(), 12.0, None);
        for l in &g.lines {
            let seen = l
                .last_seen_ms
                .map_or_else(|| t(Msg::Never).to_owned(), |ms| lang.datetime(ms));
            let line = [l.device.clone(), l.county.clone(), l.station.clone(), seen]
                .into_iter()
                .zip(&dcols)
                .map(|(text, (a, b))| Cell::new(text, (*a, *b), 8.0, false))
                .collect();
            layout.line_or_new_page(&w, line, 11.0, Some(&dheader));
        }
        if g.more > 0 {
            layout.line_or_new_page(
                &w,
                vec![Cell::new(
                    format!("+ {} {}", lang.count(g.more as u64), t(Msg::MoreInList)),
                    full,
                    8.0,
                    false,
                )],
                11.0,
                None,
            );
        }
    }
    draw(&w, layout)
}

/// One cell of a line: text between `x0` and `x1`, at its start or
/// (numbers) its end.
#[derive(Debug, Clone)]
struct Cell {
    text: String,
    x0: f32,
    x1: f32,
    size: f32,
    end: bool,
}

impl Cell {
    fn new(text: impl Into<String>, (x0, x1): (f32, f32), size: f32, end: bool) -> Cell {
        Cell {
            text: text.into(),
            x0,
            x1,
            size,
            end,
        }
    }
}

/// A laid-out item: a line of cells at a baseline, or a rule.
enum Item {
    Cells(f32, Vec<Cell>),
    Rule(f32),
}

struct Layout {
    pages: Vec<Vec<Item>>,
    y: f32,
}

impl Layout {
    fn push(&mut self, item: Item) {
        if let Some(p) = self.pages.last_mut() {
            p.push(item);
        }
    }

    fn line(&mut self, _w: &Writer<'_>, cells: Vec<Cell>, height: f32) {
        self.y += height;
        let y = self.y;
        self.push(Item::Cells(y, cells));
    }

    fn rule(&mut self, gap: f32) {
        self.y += gap;
        let y = self.y;
        self.push(Item::Rule(y));
    }

    /// A line, on a new page (with `header` first) when it does not fit.
    fn line_or_new_page(
        &mut self,
        w: &Writer<'_>,
        cells: Vec<Cell>,
        height: f32,
        header: Option<&Vec<Cell>>,
    ) {
        if self.y + height > H - MARGIN {
            self.pages.push(Vec::new());
            self.y = MARGIN;
            if let Some(h) = header {
                self.line(w, h.clone(), 12.0);
                self.rule(2.0);
            }
        }
        self.line(w, cells, height);
    }
}

fn draw(w: &Writer<'_>, layout: Layout) -> Result<Vec<u8>, PdfError> {
    let mut doc = Document::new();
    let count = layout.pages.len();
    for (i, items) in layout.pages.into_iter().enumerate() {
        let settings = PageSettings::from_wh(W, H).ok_or(PdfError::Krilla("page size".into()))?;
        let mut page = doc.start_page_with(settings);
        let mut s = page.surface();
        for item in items {
            match item {
                Item::Cells(y, cells) => {
                    for c in &cells {
                        w.cell(&mut s, c, y);
                    }
                }
                Item::Rule(y) => w.rule(&mut s, y, 120),
            }
        }
        // The page number, at the foot.
        let foot = w.lang.digits(&format!("{} / {}", i + 1, count));
        w.cell(
            &mut s,
            &Cell::new(foot, (MARGIN, W - MARGIN), 8.0, true),
            H - MARGIN / 2.0,
        );
        s.finish();
        page.finish();
    }
    doc.finish().map_err(|e| PdfError::Krilla(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::readiness::Counts;
    use crate::ui::report::{Group, Line};
    use fleet_protocol::ProvinceCode;

    fn report(devices: usize) -> Report {
        let p = ProvinceCode::parse("IR-02").unwrap();
        let mut c = Counts::default();
        c.add(None);
        for _ in 0..devices {
            c.add(Some(Reason::Offline));
        }
        Report {
            at_ms: 1_742_558_400_000, // 2025-03-21 12:00 UTC
            total: c,
            provinces: vec![(p, c)],
            groups: vec![Group {
                reason: Reason::Offline,
                province: p,
                lines: (0..devices)
                    .map(|i| Line {
                        device: format!("BB-{i:05}"),
                        county: "IR-02-SARI".into(),
                        station: "ST-3".into(),
                        last_seen_ms: Some(1_742_558_400_000),
                    })
                    .collect(),
                more: 0,
            }],
        }
    }

    #[test]
    fn a_report_is_a_pdf_in_both_languages_and_long_lists_take_more_pages() {
        for lang in [Lang::En, Lang::Fa] {
            let short = render(&report(3), lang).unwrap();
            assert!(short.starts_with(b"%PDF-"), "{lang:?}");
            let long = render(&report(300), lang).unwrap();
            assert!(long.len() > short.len());
            let pages = |b: &[u8]| {
                String::from_utf8_lossy(b).matches("/Type /Page").count()
                    - String::from_utf8_lossy(b).matches("/Type /Pages").count()
            };
            assert_eq!(pages(&short), 1, "{lang:?}");
            assert!(pages(&long) >= 5, "{lang:?}: {} pages", pages(&long));
        }
    }

    #[test]
    fn persian_is_shaped_into_joined_forms_and_laid_right_to_left() {
        let face = rustybuzz::Face::from_slice(FONT, 0).unwrap();
        let w = Writer {
            upem: f32::from(face.units_per_em() as u16),
            font: Font::new(FONT.to_vec().into(), 0).unwrap(),
            face,
            lang: Lang::Fa,
        };
        // "Mazandaran": its letters join, so the glyphs differ from the
        // isolated forms of the same letters.
        let joined = w.shape("مازندران");
        let isolated: Vec<u32> = "مازندران"
            .chars()
            .map(|c| w.shape(&c.to_string()).runs[0].0[0].glyph_id.to_u32())
            .collect();
        let glyphs: Vec<u32> = joined.runs[0]
            .0
            .iter()
            .map(|g| g.glyph_id.to_u32())
            .collect();
        assert_ne!(glyphs, isolated);
        assert_eq!(joined.runs.len(), 1);
        // A device id inside Persian text is its own left-to-right run.
        let mixed = w.shape("دستگاه BB-0001 خاموش");
        assert_eq!(
            mixed.runs.len(),
            3,
            "right-to-left, left-to-right, right-to-left"
        );
        // In visual order the last Persian word comes first (leftmost).
        let first = &mixed.runs[0].1;
        assert_eq!(&"دستگاه BB-0001 خاموش"[first.clone()].trim(), &"خاموش");
    }
}
