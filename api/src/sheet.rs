//! The printable enrolment sheet for a shipment (pure): one QR code per
//! device carrying its serial, its enrolment token and the controller's
//! address, for the bench scanner. HTML (self-contained, inline SVG) and PDF
//! (hand-written, built-in Helvetica, no external assets). Tokens are known
//! only when the batch is made, so fleetctl writes the sheet then.

use std::fmt::Write as _;

use qrcode::{Color, EcLevel, QrCode};

/// One device of the sheet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SheetDevice {
    pub device: String,
    pub token: String,
}

/// What a device's QR code says.
pub fn qr_payload(controller: &str, d: &SheetDevice) -> String {
    format!("SANDOGH-ENROL:1:{}:{}:{}", d.device, d.token, controller)
}

/// The QR code's modules (row by row, true is dark) and its width.
pub fn qr_modules(payload: &str) -> (usize, Vec<bool>) {
    let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
        .or_else(|_| QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::L))
        .expect("a serial, a token and a URL fit in a QR code");
    let w = code.width();
    (
        w,
        code.to_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect(),
    )
}

fn utc(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(ms / 1000).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A QR code as inline SVG, `size_px` wide.
pub fn svg(payload: &str, size_px: usize) -> String {
    let (w, dark) = qr_modules(payload);
    let quiet = 4;
    let n = w + 2 * quiet;
    let mut path = String::new();
    for (i, d) in dark.iter().enumerate() {
        if *d {
            let _ = write!(path, "M{} {}h1v1h-1z", i % w + quiet, i / w + quiet);
        }
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{size_px}" height="{size_px}" viewBox="0 0 {n} {n}" shape-rendering="crispEdges"><rect width="{n}" height="{n}" fill="#fff"/><path d="{path}" fill="#000"/></svg>"##
    )
}

pub fn render_html(
    shipment: &str,
    controller: &str,
    expires_at_ms: u64,
    devices: &[SheetDevice],
) -> String {
    let mut cards = String::new();
    for d in devices {
        let _ = write!(
            cards,
            r#"<div class="card"><div class="qr">{}</div><div class="text"><div class="serial">{}</div><div>token <code>{}</code></div><div>fleet-agent enrol --controller {} --token {}</div></div></div>"#,
            svg(&qr_payload(controller, d), 180),
            html_escape(&d.device),
            html_escape(&d.token),
            html_escape(controller),
            html_escape(&d.token),
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandogh enrolment sheet {shipment}</title>
<style>
body{{font-family:sans-serif;margin:1cm}} h1{{font-size:16pt}} .meta{{margin-bottom:1em}}
.card{{display:flex;gap:1em;align-items:center;border:1px solid #999;padding:.5em;margin:.4em 0;break-inside:avoid}}
.serial{{font-size:18pt;font-weight:bold}} code{{font-size:11pt}} .text div{{margin:.2em 0}}
@media print{{.card:nth-of-type(4n){{break-after:page}}}}
</style></head><body>
<h1>Sandogh enrolment sheet &middot; برگه ثبت دستگاه</h1>
<div class="meta">shipment <b>{}</b> &middot; {} devices &middot; controller {} &middot; tokens expire {} &middot; each token works once</div>
{cards}
</body></html>
"#,
        html_escape(shipment),
        devices.len(),
        html_escape(controller),
        utc(expires_at_ms),
    )
}

fn pdf_text(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .collect::<String>()
        .replace('\\', "\\\\")
        .replace('(', "\\(")
        .replace(')', "\\)")
}

const PER_PAGE: usize = 4;

/// A4 pages, four devices a page.
pub fn render_pdf(
    shipment: &str,
    controller: &str,
    expires_at_ms: u64,
    devices: &[SheetDevice],
) -> Vec<u8> {
    let pages: Vec<&[SheetDevice]> = if devices.is_empty() {
        vec![&[]]
    } else {
        devices.chunks(PER_PAGE).collect()
    };
    let n_pages = pages.len();
    // objects: 1 catalog, 2 pages, 3 font, then (page, contents) pairs
    let mut objects: Vec<Vec<u8>> = Vec::new();
    let kids: Vec<String> = (0..n_pages).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {n_pages} >>",
            kids.join(" ")
        )
        .into_bytes(),
    );
    objects.push(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    );
    for (p, chunk) in pages.iter().enumerate() {
        let mut c = String::new();
        let _ = write!(
            c,
            "BT /F1 13 Tf 40 805 Td (Sandogh enrolment sheet - {} - page {} of {}) Tj ET\n\
             BT /F1 9 Tf 40 790 Td (controller {} - tokens expire {} - each token works once) Tj ET\n",
            pdf_text(shipment),
            p + 1,
            n_pages,
            pdf_text(controller),
            utc(expires_at_ms)
        );
        for (k, d) in chunk.iter().enumerate() {
            let top = 770.0 - (k as f64) * 185.0;
            let (w, dark) = qr_modules(&qr_payload(controller, d));
            let quiet = 4usize;
            let size = 160.0;
            let s = size / (w + 2 * quiet) as f64;
            let x0 = 40.0 + quiet as f64 * s;
            let y_top = top - quiet as f64 * s;
            c.push_str("0 g\n");
            for (i, dk) in dark.iter().enumerate() {
                if *dk {
                    let (row, col) = (i / w, i % w);
                    let _ = writeln!(
                        c,
                        "{:.3} {:.3} {:.3} {:.3} re",
                        x0 + col as f64 * s,
                        y_top - (row + 1) as f64 * s,
                        s,
                        s
                    );
                }
            }
            c.push_str("f\n");
            let _ = write!(
                c,
                "BT /F1 18 Tf 220 {:.1} Td ({}) Tj ET\n\
                 BT /F1 11 Tf 220 {:.1} Td (token {}) Tj ET\n\
                 BT /F1 7 Tf 220 {:.1} Td (fleet-agent enrol --controller {} --token {}) Tj ET\n\
                 0.5 w 35 {:.1} 525 {:.1} re S\n",
                top - 40.0,
                pdf_text(&d.device),
                top - 65.0,
                pdf_text(&d.token),
                top - 85.0,
                pdf_text(controller),
                pdf_text(&d.token),
                top - 172.0,
                172.0
            );
        }
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                5 + 2 * p
            )
            .into_bytes(),
        );
        let mut stream = format!("<< /Length {} >>\nstream\n", c.len()).into_bytes();
        stream.extend_from_slice(c.as_bytes());
        stream.extend_from_slice(b"\nendstream");
        objects.push(stream);
    }
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in &offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(n: usize) -> Vec<SheetDevice> {
        (0..n)
            .map(|i| SheetDevice {
                device: format!("BB-02-{i:06}"),
                token: format!("enr-0000000{}-11111111-22222222-33333333", i % 10),
            })
            .collect()
    }

    /// The QR code, drawn as the sheets draw it, decodes to the payload.
    #[test]
    fn qr_codes_decode_back() {
        let d = &devices(1)[0];
        let payload = qr_payload("https://10.0.0.5:8443", d);
        let (w, dark) = qr_modules(&payload);
        let scale = 4;
        let quiet = 4;
        let n = (w + 2 * quiet) * scale;
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(n, n, |x, y| {
            let (c, r) = (x / scale, y / scale);
            if c < quiet || r < quiet || c >= w + quiet || r >= w + quiet {
                255
            } else if dark[(r - quiet) * w + (c - quiet)] {
                0
            } else {
                255
            }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, text) = grids[0].decode().unwrap();
        assert_eq!(text, payload);
        assert!(text.contains(&d.token) && text.contains(&d.device));
    }

    #[test]
    fn html_has_a_card_per_device() {
        let html = render_html("shipment-1", "https://127.0.0.1:8080", 0, &devices(5));
        assert_eq!(html.matches("<svg").count(), 5);
        for d in devices(5) {
            assert!(html.contains(&d.device) && html.contains(&d.token));
        }
        assert!(!html.contains("src=\"http"), "no external assets");
    }

    #[test]
    fn pdf_is_well_formed() {
        let pdf = render_pdf("shipment-1", "https://127.0.0.1:8080", 0, &devices(9));
        let text = String::from_utf8_lossy(&pdf);
        assert!(pdf.starts_with(b"%PDF-1.4"));
        assert!(text.trim_end().ends_with("%%EOF"));
        assert_eq!(
            text.matches("/Type /Page ").count(),
            3,
            "nine devices, four a page"
        );
        // every xref offset points at its object (offsets are in bytes)
        let tail = String::from_utf8(pdf[pdf.len() - 40..].to_vec()).unwrap();
        let start: usize = tail
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let xref = std::str::from_utf8(&pdf[start..]).unwrap();
        let entries: Vec<usize> = xref
            .lines()
            .skip(3)
            .take_while(|l| l.ends_with(" n "))
            .map(|l| l[..10].parse().unwrap())
            .collect();
        assert_eq!(entries.len(), 3 + 2 * 3);
        for (i, off) in entries.iter().enumerate() {
            let want = format!("{} 0 obj", i + 1);
            assert!(pdf[*off..].starts_with(want.as_bytes()), "object {}", i + 1);
        }
        for d in devices(9) {
            assert!(text.contains(&d.device));
        }
    }
}
