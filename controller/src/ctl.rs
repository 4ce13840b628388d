//! fleetctl: the operators' command line. It talks to the HTTP API only.
//! Every command prints a table for people, and JSON or CSV for scripts.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use fleet_protocol::Envelope;
use serde_json::{json, Value};

use crate::domain::readiness::Reason;
use crate::http::api::readiness::ReadinessRow;

#[derive(Parser)]
#[command(
    name = "fleetctl",
    version,
    about = "Sandogh operators' CLI (talks to the controller's HTTP API)"
)]
pub struct Cli {
    /// Controller base URL.
    #[arg(
        long,
        env = "FLEETCTL_CONTROLLER",
        default_value = "https://127.0.0.1:8080",
        global = true
    )]
    pub controller: String,
    /// Bearer token (`fleet-controller init` printed the first admin token
    /// and wrote it to DATA/admin.token).
    #[arg(long, env = "FLEETCTL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The fleet CA (DATA/pki/ca.crt): the controller's HTTPS certificate
    /// is checked against it and nothing else.
    #[arg(long, env = "FLEETCTL_CA", global = true)]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum By {
    Province,
    County,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Readiness per province (or per county): how many are ready and why the others are not.
    Readiness {
        #[arg(long, value_enum, default_value = "province")]
        by: By,
        /// Only this province (e.g. IR-23).
        #[arg(long)]
        province: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// List devices, filtered and paged.
    Devices {
        #[arg(long)]
        province: Option<String>,
        #[arg(long)]
        county: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// `ready` or a reason: not-enrolled, never-seen, offline, update-failed, updating, outdated, unhealthy.
        #[arg(long)]
        readiness: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 100)]
        per_page: usize,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One device: registration, last state and health, recent events;
    /// or move it through its life (`device ship|deploy|retire ID`).
    #[command(args_conflicts_with_subcommands = true)]
    Device {
        id: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
        #[command(subcommand)]
        command: Option<DeviceCmd>,
    },
    /// Counties and polling stations.
    Registry {
        #[command(subcommand)]
        command: RegistryCmd,
    },
    /// Target firmware per model (what `outdated` is measured against).
    Baseline {
        #[command(subcommand)]
        command: BaselineCmd,
    },
    /// Warehouse enrolment: a shipment of scanned serials, and its status.
    Enrol {
        #[command(subcommand)]
        command: EnrolCmd,
    },
    /// Operator tokens: create (shown once), list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// The hash-chained audit log of every change made through the API.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Decode a CBOR payload (a file, or - for stdin) into its JSON form.
    Decode {
        file: PathBuf,
        /// The input is hexadecimal text (as `mosquitto_sub -F %x` prints).
        #[arg(long)]
        hex: bool,
    },
}

#[derive(Subcommand)]
pub enum DeviceCmd {
    /// Mark an enrolled device as shipped to its polling station.
    Ship { id: String },
    /// Mark a shipped device as deployed at its polling station.
    Deploy { id: String },
    /// Retire a device (lost, stolen, broken): its certificate is revoked and
    /// the broker refuses it from then on.
    Retire { id: String },
}

#[derive(Subcommand)]
pub enum EnrolCmd {
    /// Register a shipment (CSV: serial,model,province[,county][,station])
    /// and print one single-use enrolment token per device.
    Batch {
        file: PathBuf,
        /// How long the tokens stay valid.
        #[arg(long, default_value_t = 168)]
        expires_hours: u64,
        /// Where the printable sheets go (SHIPMENT.html and SHIPMENT.pdf,
        /// a QR code per device; readable by you only: they hold the tokens).
        #[arg(long, default_value = ".")]
        sheet_dir: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Which devices of a shipment are enrolled, passed their self-test and are ready to ship.
    Status {
        shipment: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token; it is printed once and cannot be shown again.
    Create {
        /// admin, central-ops, province-tech, warehouse or viewer.
        #[arg(long)]
        role: String,
        /// For province-tech: the provinces it may see (IR-02,IR-27).
        #[arg(long, value_delimiter = ',')]
        province: Vec<String>,
        /// Who or what the token is for.
        #[arg(long)]
        name: Option<String>,
    },
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Revoke a token at once.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Entries, newest first.
    List {
        /// Part of the actor's name or token id.
        #[arg(long)]
        actor: Option<String>,
        /// The device (or other target) changed.
        #[arg(long)]
        device: Option<String>,
        /// Unix milliseconds.
        #[arg(long)]
        since_ms: Option<u64>,
        #[arg(long)]
        until_ms: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Check the whole chain; exit status 1 names the first broken entry.
    Verify,
}

#[derive(Subcommand)]
pub enum RegistryCmd {
    /// Import counties and stations from a CSV (province,county,station_id[,county_name_en,county_name_fa,station_name]).
    Import { file: PathBuf },
    /// List counties with their station counts.
    Counties {
        #[arg(long)]
        province: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum BaselineCmd {
    /// Set the baseline firmware of a model.
    Set { model: String, version: String },
    /// Show every model's baseline.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the controller at {url}: {reason}\n(is `fleet-controller serve` running? set --controller or FLEETCTL_CONTROLLER)")]
    Connect { url: String, reason: String },
    #[error("{message}{details}")]
    Api { message: String, details: String },
    #[error("unexpected answer from the controller: {0}")]
    Decode(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
    #[error("the controller speaks HTTPS with the fleet's own CA: pass --ca DATA/pki/ca.crt or set FLEETCTL_CA")]
    NoCa,
    #[error("no token: pass --token or set FLEETCTL_TOKEN (fleet-controller init printed the first admin token and wrote it to DATA/admin.token)")]
    NoToken,
    #[error("the audit log is broken at entry #{seq}: {reason}")]
    AuditBroken { seq: u64, reason: String },
}

pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    pub fn new(
        base: &str,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, CtlError> {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if base.starts_with("https://") {
            let path = ca.ok_or(CtlError::NoCa)?;
            let pem = std::fs::read(path).map_err(|source| CtlError::Read {
                path: path.to_owned(),
                source,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| CtlError::Input(format!("{}: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| CtlError::Connect {
            url: base.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            token: token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
        })
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<RequestBody>,
    ) -> Result<Value, CtlError> {
        let url = format!("{}{}", self.base, path);
        let token = self.token.as_deref().ok_or(CtlError::NoToken)?;
        let mut req = self.http.request(method, &url).bearer_auth(token);
        req = match body {
            Some(RequestBody::Json(v)) => req.json(&v),
            Some(RequestBody::Text(t)) => req.header("content-type", "text/csv").body(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| {
            // The innermost cause says what happened ("Connection refused").
            let e = e.without_url();
            let mut reason = e.to_string();
            let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&e);
            while let Some(c) = cause {
                reason = c.to_string();
                cause = c.source();
            }
            CtlError::Connect {
                url: url.clone(),
                reason,
            }
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CtlError::Decode(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            CtlError::Decode(format!(
                "{status}: {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        if !status.is_success() {
            let message = value["error"]
                .as_str()
                .unwrap_or("request failed")
                .to_owned();
            let details = match value["errors"].as_array() {
                Some(errs) => errs
                    .iter()
                    .map(|e| match (e["line"].as_u64(), e["id"].as_str()) {
                        (Some(line), _) => {
                            format!("\n  line {line}: {}", e["message"].as_str().unwrap_or(""))
                        }
                        (_, Some(id)) => {
                            format!("\n  {id}: {}", e["message"].as_str().unwrap_or(""))
                        }
                        _ => format!("\n  {e}"),
                    })
                    .collect(),
                None => String::new(),
            };
            return Err(CtlError::Api {
                message: format!("{message} (HTTP {})", status.as_u16()),
                details,
            });
        }
        Ok(value)
    }

    pub async fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.request(reqwest::Method::GET, path, None).await
    }
}

pub enum RequestBody {
    Json(Value),
    Text(String),
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Render readiness rows as an aligned table with a total line.
pub fn readiness_table(rows: &[ReadinessRow], by_county: bool) -> String {
    let mut head = vec!["PROVINCE", "NAME"];
    if by_county {
        head.push("COUNTY");
    }
    head.extend(["TOTAL", "READY", "READY%"]);
    let reason_heads: Vec<String> = Reason::ALL
        .iter()
        .map(|r| r.as_str().to_uppercase())
        .collect();
    let mut table: Vec<Vec<String>> = vec![head
        .iter()
        .map(|s| s.to_string())
        .chain(reason_heads.iter().cloned())
        .collect()];
    let mut total = (0u64, 0u64, [0u64; 7]);
    let pct = |ready: u64, total: u64| {
        if total == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", ready as f64 * 100.0 / total as f64)
        }
    };
    for r in rows {
        let mut line = vec![
            r.province.clone(),
            r.province_name.clone().unwrap_or_default(),
        ];
        if by_county {
            line.push(
                r.county
                    .clone()
                    .flatten()
                    .unwrap_or_else(|| "(unassigned)".into()),
            );
        }
        line.extend([
            r.total.to_string(),
            r.ready.to_string(),
            pct(r.ready.into(), r.total.into()),
        ]);
        total.0 += u64::from(r.total);
        total.1 += u64::from(r.ready);
        for (i, reason) in Reason::ALL.iter().enumerate() {
            let n = r.reasons.get(reason.as_str()).copied().unwrap_or(0);
            total.2[i] += u64::from(n);
            line.push(n.to_string());
        }
        table.push(line);
    }
    let mut last = vec!["TOTAL".to_string(), String::new()];
    if by_county {
        last.push(String::new());
    }
    last.extend([
        total.0.to_string(),
        total.1.to_string(),
        pct(total.1, total.0),
    ]);
    last.extend(total.2.iter().map(|n| n.to_string()));
    table.push(last);
    align(&table)
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

pub fn readiness_csv(rows: &[ReadinessRow], by_county: bool) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut head = vec!["province".to_string()];
    if by_county {
        head.push("county".into());
    }
    head.extend(["total".into(), "ready".into()]);
    head.extend(Reason::ALL.iter().map(|r| r.as_str().to_string()));
    let _ = w.write_record(&head);
    for r in rows {
        let mut line = vec![r.province.clone()];
        if by_county {
            line.push(r.county.clone().flatten().unwrap_or_default());
        }
        line.extend([r.total.to_string(), r.ready.to_string()]);
        line.extend(
            Reason::ALL
                .iter()
                .map(|x| r.reasons.get(x.as_str()).copied().unwrap_or(0).to_string()),
        );
        let _ = w.write_record(&line);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn json_rows_to_csv(rows: &[Value], cols: &[&str]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(cols);
    for r in rows {
        let line: Vec<String> = cols.iter().map(|c| cell(&r[*c])).collect();
        let _ = w.write_record(&line);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Table cells longer than this are cut (the JSON output has everything).
const MAX_CELL: usize = 72;

fn json_rows_to_table(rows: &[Value], cols: &[&str]) -> String {
    let mut table = vec![cols.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>()];
    for r in rows {
        table.push(
            cols.iter()
                .map(|c| {
                    let s = cell(&r[*c]);
                    if s.chars().count() > MAX_CELL {
                        format!("{}…", s.chars().take(MAX_CELL - 1).collect::<String>())
                    } else {
                        s
                    }
                })
                .collect(),
        );
    }
    align(&table)
}

/// A list answer in the asked format: the whole JSON, or `cols` of `rows`.
fn rows_out(output: Output, whole: &Value, rows: &[Value], cols: &[&str]) -> String {
    match output {
        Output::Json => pretty(whole),
        Output::Csv => json_rows_to_csv(rows, cols),
        Output::Table => json_rows_to_table(rows, cols),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn read_input(path: &PathBuf) -> Result<Vec<u8>, CtlError> {
    let read = |path: &PathBuf| {
        if path.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
        } else {
            std::fs::read(path)
        }
    };
    read(path).map_err(|source| CtlError::Read {
        path: path.clone(),
        source,
    })
}

async fn move_device(client: &Client, id: &str, to: &str) -> Result<String, CtlError> {
    let v = client
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/devices/{}/lifecycle", encode(id)),
            Some(RequestBody::Json(json!({ "to": to }))),
        )
        .await?;
    Ok(format!(
        "{} is now {}\n",
        cell(&v["device"]),
        cell(&v["lifecycle"])
    ))
}

fn decode(file: &PathBuf, hex: bool) -> Result<String, CtlError> {
    let raw = read_input(file)?;
    let bytes = if hex {
        let text: String = String::from_utf8_lossy(&raw).split_whitespace().collect();
        ::hex::decode(text).map_err(|e| CtlError::Input(format!("not hexadecimal: {e}")))?
    } else {
        raw
    };
    let env = Envelope::from_cbor(&bytes).map_err(|e| CtlError::Input(e.to_string()))?;
    Ok(env.to_json() + "\n")
}

/// Run one fleetctl command; returns what to print.
pub async fn run(cli: Cli) -> Result<String, CtlError> {
    if let Cmd::Decode { file, hex } = &cli.command {
        return decode(file, *hex);
    }
    let client = Client::new(&cli.controller, cli.token, cli.ca.as_deref())?;
    match cli.command {
        Cmd::Readiness {
            by,
            province,
            output,
        } => {
            let by_county = by == By::County;
            let path = format!(
                "/api/v1/readiness{}",
                query(&[
                    ("by", Some(if by_county { "county" } else { "province" })),
                    ("province", province.as_deref()),
                ])
            );
            let value = client.get(&path).await?;
            let rows: Vec<ReadinessRow> = serde_json::from_value(value.clone())
                .map_err(|e| CtlError::Decode(e.to_string()))?;
            Ok(match output {
                Output::Json => {
                    // The contract: province, county (by county), total, ready, reasons.
                    let slim: Vec<Value> = rows
                        .iter()
                        .map(|r| {
                            let mut o = json!({ "province": r.province, "total": r.total, "ready": r.ready, "reasons": r.reasons });
                            if by_county {
                                o["county"] = json!(r.county.clone().flatten());
                            }
                            o
                        })
                        .collect();
                    pretty(&Value::Array(slim))
                }
                Output::Csv => readiness_csv(&rows, by_county),
                Output::Table => readiness_table(&rows, by_county),
            })
        }
        Cmd::Devices {
            province,
            county,
            model,
            readiness,
            page,
            per_page,
            output,
        } => {
            let page_s = page.to_string();
            let per_page_s = per_page.to_string();
            let path = format!(
                "/api/v1/devices{}",
                query(&[
                    ("province", province.as_deref()),
                    ("county", county.as_deref()),
                    ("model", model.as_deref()),
                    ("readiness", readiness.as_deref()),
                    ("page", Some(&page_s)),
                    ("per_page", Some(&per_page_s)),
                ])
            );
            let value = client.get(&path).await?;
            let items = value["items"].as_array().cloned().unwrap_or_default();
            let cols = [
                "id",
                "model",
                "province",
                "county",
                "readiness",
                "presence",
                "firmware",
                "last_seen_ms",
            ];
            Ok(match output {
                Output::Json => pretty(&value),
                Output::Csv => json_rows_to_csv(&items, &cols),
                Output::Table => format!(
                    "{}page {} of {} devices ({} per page)\n",
                    json_rows_to_table(&items, &cols),
                    value["page"],
                    value["total"],
                    value["per_page"]
                ),
            })
        }
        Cmd::Device {
            id,
            output,
            command: None,
        } => {
            let id =
                id.ok_or_else(|| CtlError::Input("which device? fleetctl device ID".into()))?;
            let value = client
                .get(&format!("/api/v1/devices/{}", encode(&id)))
                .await?;
            Ok(match output {
                Output::Table | Output::Csv => {
                    let d = &value["device"];
                    let mut out = String::new();
                    for k in [
                        "id",
                        "model",
                        "province",
                        "county",
                        "station",
                        "lifecycle",
                        "readiness",
                        "presence",
                        "firmware",
                        "last_seen_ms",
                    ] {
                        let _ = writeln!(out, "{k:<13} {}", cell(&d[k]));
                    }
                    if let Some(checks) = value["state"]["checks"].as_array() {
                        for c in checks {
                            let _ = writeln!(
                                out,
                                "check         {} {} {}",
                                cell(&c["name"]),
                                if c["passed"] == json!(true) {
                                    "ok"
                                } else {
                                    "FAIL"
                                },
                                cell(&c["message"])
                            );
                        }
                    }
                    if !value["health"].is_null() {
                        let _ = writeln!(out, "health        {}", value["health"]);
                    }
                    for e in value["events"].as_array().into_iter().flatten() {
                        let _ = writeln!(out, "event #{:<6} {}", cell(&e["seq"]), e["event"]);
                    }
                    out
                }
                Output::Json => pretty(&value),
            })
        }
        Cmd::Device {
            command: Some(cmd), ..
        } => match cmd {
            DeviceCmd::Ship { id } => move_device(&client, &id, "shipped").await,
            DeviceCmd::Deploy { id } => move_device(&client, &id, "deployed").await,
            DeviceCmd::Retire { id } => move_device(&client, &id, "retired").await,
        },
        Cmd::Registry {
            command: RegistryCmd::Import { file },
        } => {
            let text = String::from_utf8(read_input(&file)?)
                .map_err(|_| CtlError::Input(format!("{} is not UTF-8 text", file.display())))?;
            let v = client
                .request(
                    reqwest::Method::POST,
                    "/api/v1/registry/import",
                    Some(RequestBody::Text(text)),
                )
                .await?;
            Ok(format!(
                "imported {} counties and {} stations\n",
                v["counties"], v["stations"]
            ))
        }
        Cmd::Registry {
            command: RegistryCmd::Counties { province, output },
        } => {
            let v = client
                .get(&format!(
                    "/api/v1/registry/counties{}",
                    query(&[("province", province.as_deref())])
                ))
                .await?;
            let rows = v.as_array().cloned().unwrap_or_default();
            let cols = ["code", "province", "name_en", "name_fa", "stations"];
            Ok(rows_out(output, &v, &rows, &cols))
        }
        Cmd::Baseline {
            command: BaselineCmd::Set { model, version },
        } => {
            let v = client
                .request(
                    reqwest::Method::PUT,
                    &format!("/api/v1/baselines/{}", encode(&model)),
                    Some(RequestBody::Json(json!({ "version": version }))),
                )
                .await?;
            Ok(format!(
                "baseline of {} is now {}\n",
                cell(&v["model"]),
                cell(&v["version"])
            ))
        }
        Cmd::Baseline {
            command: BaselineCmd::List { output },
        } => {
            let v = client.get("/api/v1/baselines").await?;
            let rows: Vec<Value> = v
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, ver)| json!({ "model": k, "version": ver }))
                        .collect()
                })
                .unwrap_or_default();
            Ok(rows_out(output, &v, &rows, &["model", "version"]))
        }
        Cmd::Enrol {
            command:
                EnrolCmd::Batch {
                    file,
                    expires_hours,
                    sheet_dir,
                    output,
                },
        } => {
            let text = String::from_utf8(read_input(&file)?)
                .map_err(|_| CtlError::Input(format!("{} is not UTF-8 text", file.display())))?;
            let v = client
                .request(
                    reqwest::Method::POST,
                    &format!("/api/v1/enrol/batch?expires_hours={expires_hours}"),
                    Some(RequestBody::Text(text)),
                )
                .await?;
            let rows = v["devices"].as_array().cloned().unwrap_or_default();
            let shipment = cell(&v["shipment"]);
            let devices: Vec<crate::sheet::SheetDevice> = rows
                .iter()
                .map(|r| crate::sheet::SheetDevice {
                    device: cell(&r["device"]),
                    token: cell(&r["token"]),
                })
                .collect();
            let expires = v["expires_at_ms"].as_u64().unwrap_or(0);
            let controller = client.base.clone();
            let write = |ext: &str, data: &[u8]| -> Result<PathBuf, CtlError> {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt;
                let path = sheet_dir.join(format!("{shipment}.{ext}"));
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut f| f.write_all(data))
                    .map_err(|e| {
                        CtlError::Input(format!("cannot write {}: {e}", path.display()))
                    })?;
                Ok(path)
            };
            let html = write(
                "html",
                crate::sheet::render_html(&shipment, &controller, expires, &devices).as_bytes(),
            )?;
            let pdf = write(
                "pdf",
                &crate::sheet::render_pdf(&shipment, &controller, expires, &devices),
            )?;
            eprintln!("printable sheets: {} and {}", html.display(), pdf.display());
            Ok(match output {
                Output::Json => pretty(&v),
                Output::Csv => json_rows_to_csv(&rows, &["device", "token"]),
                Output::Table => format!(
                    "{}{} devices in {}; tokens expire at {} (unix ms) and are shown only now\n",
                    json_rows_to_table(&rows, &["device", "token"]),
                    rows.len(),
                    cell(&v["shipment"]),
                    v["expires_at_ms"]
                ),
            })
        }
        Cmd::Enrol {
            command: EnrolCmd::Status { shipment, output },
        } => {
            let v = client
                .get(&format!("/api/v1/enrol/shipments/{}", encode(&shipment)))
                .await?;
            let rows = v["devices"].as_array().cloned().unwrap_or_default();
            let cols = [
                "device",
                "lifecycle",
                "enrolled_at_ms",
                "self_test",
                "ready_to_ship",
            ];
            Ok(rows_out(output, &v, &rows, &cols))
        }
        Cmd::Token {
            command:
                TokenCmd::Create {
                    role,
                    province,
                    name,
                },
        } => {
            let v = client
                .request(
                    reqwest::Method::POST,
                    "/api/v1/tokens",
                    Some(RequestBody::Json(
                        json!({ "role": role, "provinces": province, "name": name }),
                    )),
                )
                .await?;
            eprintln!(
                "token {} ({}, role {}) created; it is shown once:",
                cell(&v["id"]),
                cell(&v["name"]),
                cell(&v["role"])
            );
            Ok(format!("{}\n", cell(&v["token"])))
        }
        Cmd::Token {
            command: TokenCmd::List { output },
        } => {
            let v = client.get("/api/v1/tokens").await?;
            let rows = v.as_array().cloned().unwrap_or_default();
            let cols = [
                "id",
                "name",
                "role",
                "provinces",
                "created_by",
                "created_at_ms",
                "revoked_at_ms",
            ];
            Ok(rows_out(output, &v, &rows, &cols))
        }
        Cmd::Token {
            command: TokenCmd::Revoke { id },
        } => {
            client
                .request(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/tokens/{}", encode(&id)),
                    None,
                )
                .await?;
            Ok(format!("token {id} revoked\n"))
        }
        Cmd::Audit {
            command:
                AuditCmd::List {
                    actor,
                    device,
                    since_ms,
                    until_ms,
                    limit,
                    output,
                },
        } => {
            let (since, until, lim) = (
                since_ms.map(|v| v.to_string()),
                until_ms.map(|v| v.to_string()),
                limit.to_string(),
            );
            let v = client
                .get(&format!(
                    "/api/v1/audit{}",
                    query(&[
                        ("actor", actor.as_deref()),
                        ("target", device.as_deref()),
                        ("since_ms", since.as_deref()),
                        ("until_ms", until.as_deref()),
                        ("limit", Some(&lim)),
                    ])
                ))
                .await?;
            let rows = v.as_array().cloned().unwrap_or_default();
            let cols = [
                "seq", "at_ms", "actor", "role", "action", "target", "source", "detail",
            ];
            Ok(rows_out(output, &v, &rows, &cols))
        }
        Cmd::Audit {
            command: AuditCmd::Verify,
        } => {
            let v = client.get("/api/v1/audit/verify").await?;
            if v["intact"] == json!(true) {
                Ok(format!("audit log intact: {} entries\n", v["entries"]))
            } else {
                Err(CtlError::AuditBroken {
                    seq: v["first_broken"].as_u64().unwrap_or(0),
                    reason: cell(&v["reason"]),
                })
            }
        }
        Cmd::Decode { .. } => unreachable!("handled before the client is made"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(p: &str, total: u32, ready: u32, reasons: &[(&str, u32)]) -> ReadinessRow {
        ReadinessRow {
            province: p.into(),
            province_name: Some("X".into()),
            county: None,
            total,
            ready,
            reasons: reasons
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn table_has_totals() {
        let rows = vec![
            row("IR-23", 10, 7, &[("offline", 3)]),
            row("IR-02", 5, 5, &[]),
        ];
        let t = readiness_table(&rows, false);
        let last = t.lines().last().unwrap();
        assert!(last.starts_with("TOTAL"), "{t}");
        let cells: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(&cells[1..4], ["15", "12", "80.0"], "{t}");
    }

    #[test]
    fn csv_has_every_reason_column() {
        let rows = vec![row("IR-23", 10, 7, &[("offline", 3)])];
        let c = readiness_csv(&rows, false);
        let mut lines = c.lines();
        assert_eq!(
            lines.next().unwrap(),
            "province,total,ready,not-enrolled,never-seen,offline,update-failed,updating,outdated,unhealthy"
        );
        assert_eq!(lines.next().unwrap(), "IR-23,10,7,0,0,3,0,0,0,0");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(query(&[("a", Some("IR-23")), ("b", None)]), "?a=IR-23");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
