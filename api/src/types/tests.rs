//! Each answer type round-trips a sample of what the controller's handler
//! sends today (built by reading the handler), and each request type reads
//! what today's callers send.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::*;
use crate::roles::Role;

/// Reads `sample` and writes it back unchanged.
fn round_trips<T: Serialize + DeserializeOwned>(sample: Value) -> T {
    let typed: T = serde_json::from_value(sample.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), sample);
    typed
}

#[test]
fn health_round_trips() {
    let h: ControllerHealth = round_trips(json!({ "status": "ok", "broker": "up", "devices": 3 }));
    assert_eq!(h.status, HealthStatus::Ok);
    let h: ControllerHealth =
        round_trips(json!({ "status": "degraded", "broker": "down", "devices": 0 }));
    assert_eq!(h.broker, BrokerState::Down);
}

#[test]
fn provinces_round_trip() {
    round_trips::<Vec<ProvinceRow>>(json!([
        { "code": "IR-23", "name_en": "Tehran", "name_fa": "تهران" },
        { "code": "IR-02", "name_en": "Mazandaran", "name_fa": "مازندران" },
    ]));
}

#[test]
fn readiness_rows_by_province_have_no_county_key() {
    let rows: Vec<ReadinessRow> = round_trips(json!([
        { "province": "IR-23", "province_name": "Tehran", "total": 10, "ready": 7,
          "reasons": { "never-seen": 1, "offline": 2 } },
        { "province": "IR-02", "province_name": "Mazandaran", "total": 0, "ready": 0, "reasons": {} },
    ]));
    assert_eq!(rows[0].county, None);
    assert_eq!(rows[0].count(Reason::Offline), 2);
    assert_eq!(rows[0].count(Reason::Unhealthy), 0);
}

#[test]
fn a_tier_province_row_carries_its_link_and_link_down_counts() {
    let rows: Vec<ReadinessRow> = round_trips(json!([
        { "province": "IR-02", "province_name": "Mazandaran", "total": 5, "ready": 1,
          "reasons": { "link-down": 3, "offline": 1 },
          "link": { "broker": "p01", "up": false, "since_ms": 1700000000000u64 } },
    ]));
    assert_eq!(rows[0].count(Reason::LinkDown), 3);
    assert_eq!(
        rows[0].link,
        Some(LinkStatus {
            broker: "p01".into(),
            up: false,
            since_ms: 1_700_000_000_000
        })
    );
    assert_eq!(
        "link-down".parse::<Readiness>().unwrap(),
        Readiness::LinkDown
    );
}

#[test]
fn readiness_rows_by_county_keep_a_null_county_for_unassigned_devices() {
    let rows: Vec<ReadinessRow> = round_trips(json!([
        { "province": "IR-23", "province_name": "Tehran", "county": null, "total": 2, "ready": 0,
          "reasons": { "not-enrolled": 2 } },
        { "province": "IR-23", "province_name": "Tehran", "county": "IR-23-TEH", "total": 1,
          "ready": 1, "reasons": {} },
    ]));
    assert_eq!(rows[0].county, Some(None));
    assert_eq!(
        rows[1].county.clone().flatten().unwrap().as_str(),
        "IR-23-TEH"
    );
}

#[test]
fn reasons_serialize_in_name_order_as_the_string_keyed_map_did() {
    let row = ReadinessRow {
        province: "IR-23".parse().unwrap(),
        province_name: None,
        county: None,
        total: 3,
        ready: 0,
        reasons: [(Reason::NotEnrolled, 1), (Reason::NeverSeen, 2)]
            .into_iter()
            .collect(),
        link: None,
    };
    assert_eq!(
        serde_json::to_string(&row).unwrap(),
        r#"{"province":"IR-23","total":3,"ready":0,"reasons":{"never-seen":2,"not-enrolled":1}}"#
    );
}

fn summary(id: &str) -> Value {
    json!({
        "id": id, "model": "ballot-box-v2", "province": "IR-23", "county": "IR-23-TEH",
        "station": null, "lifecycle": "enrolled", "readiness": "never-seen",
        "presence": null, "firmware": null, "last_seen_ms": null,
    })
}

#[test]
fn a_device_page_round_trips_with_nulls_kept() {
    let seen = json!({
        "id": "BB-2", "model": "ballot-box-v2", "province": "IR-02", "county": null,
        "station": "ST-1", "lifecycle": "deployed", "readiness": "ready",
        "presence": "online", "firmware": "2.4.0", "last_seen_ms": 1_700_000_000_000u64,
    });
    let page: DevicePage = round_trips(json!({
        "total": 2, "page": 1, "per_page": 100, "items": [summary("BB-1"), seen],
    }));
    assert_eq!(page.items[0].readiness, Readiness::NeverSeen);
    assert_eq!(page.items[1].lifecycle, Lifecycle::Deployed);
    assert_eq!(
        page.items[1].presence,
        Some(fleet_protocol::PresenceStatus::Online)
    );
}

#[test]
fn a_device_detail_round_trips_with_state_health_and_events() {
    let d: DeviceDetail = round_trips(json!({
        "device": summary("BB-1"),
        "state": {
            "model": "ballot-box-v2", "firmware": "2.4.0", "agent": "0.1.0", "update": "idle",
            "checks": [{ "name": "printer", "passed": true },
                       { "name": "scanner", "passed": false, "message": "no device" }],
            "config_rev": 3,
        },
        "health": { "cpu_pct": 5, "mem_used_pct": 40, "disk_free_pct": 70, "temp_c": 41,
                    "uptime_s": 100, "disk_free_mb": 1000 },
        "health_at_ms": 5,
        "events": [
            { "seq": 2, "at_ms": 20, "received_ms": 21, "kind": "check-failed",
              "event": { "check-failed": { "name": "scanner", "message": "no device" } } },
            { "seq": 1, "at_ms": 10, "received_ms": 11, "kind": "boot",
              "event": { "boot": { "firmware": "2.4.0" } } },
        ],
        "desired": { "config_rev": 4, "firmware": "2.5.0", "manifest": "targets/bb-2.5.0" },
        "gaps": [{ "boot": 77, "from_seq": 3, "to_seq": 5, "detected_ms": 30 }],
        "missing_events": 3,
        "outbox_drops": { "health_samples": 42, "other_events": 1, "reports": 2, "oldest_ms": 1, "newest_ms": 9,
                          "last_report_ms": 12 },
    }));
    assert_eq!(d.desired.firmware, Some("2.5.0".parse().unwrap()));
    assert_eq!(d.gaps[0].to_seq - d.gaps[0].from_seq + 1, d.missing_events);
    assert_eq!(
        d.events[1].decoded(),
        Some(fleet_protocol::EventKind::Boot {
            firmware: "2.4.0".parse().unwrap()
        })
    );
}

#[test]
fn a_device_that_never_reported_has_null_state_and_health() {
    let d: DeviceDetail = round_trips(json!({
        "device": summary("BB-1"), "state": null, "health": null, "health_at_ms": null, "events": [],
        "desired": { "config_rev": 0 }, "gaps": [], "missing_events": 0,
    }));
    assert!(d.state.is_none() && d.health.is_none());
    assert_eq!(d.desired, DesiredState::default());
    assert!(d.outbox_drops.is_none());
}

#[test]
fn commands_round_trip() {
    let r: CommandRequest = round_trips(json!({ "action": "reboot", "expires_in_s": 60 }));
    assert_eq!(r.expires_in_s, Some(60));
    round_trips::<CommandRequest>(json!({ "action": "run-checks" }));
    round_trips::<CommandSent>(json!({
        "id": "cmd-0011223344556677", "device": "BB-1", "action": "renew-certificate",
        "expires_at_ms": 600000,
    }));
}

#[test]
fn selector_commands_logs_and_a_devices_commands_round_trip() {
    let r: CommandsRequest = round_trips(json!({
        "action": "upload-logs",
        "selector": { "provinces": ["IR-02"], "counties": ["IR-02-SARI"], "model": "ballot-box-v2",
                      "readiness": "offline", "devices": ["BB-1"] },
        "expires_in_s": 60,
    }));
    assert_eq!(r.selector.readiness, Some(Readiness::Offline));
    let r: CommandsRequest =
        round_trips(json!({ "action": "reboot", "selector": { "provinces": ["IR-23"] } }));
    assert!(r.selector.devices.is_empty() && r.expires_in_s.is_none());
    assert!(
        serde_json::from_value::<CommandsRequest>(
            json!({ "action": "reboot", "selector": { "provinces": ["XX"] } })
        )
        .is_err(),
        "a province that does not parse is refused"
    );
    round_trips::<CommandsSent>(json!({
        "sent": [{ "id": "cmd-0011223344556677", "device": "BB-1", "action": "reboot", "expires_at_ms": 1 }],
        "skipped": [{ "device": "BB-2", "reason": "device BB-2 is retired, not in service: it cannot be sent commands" }],
    }));
    round_trips::<CommandView>(json!({
        "id": "cmd-0011223344556677", "action": "upload-logs", "issued_ms": 1, "expires_ms": 2,
        "issued_by": "ops (t1)", "state": "ok", "result_ms": 2, "message": "uploaded 10 bytes of logs",
        "upload_bytes": 10,
    }));
    round_trips::<LogsUploaded>(
        json!({ "device": "BB-1", "command": "cmd-0011223344556677", "bytes": 10 }),
    );
}

#[test]
fn an_event_of_an_unknown_kind_is_kept_but_not_decoded() {
    let e: DeviceEvent = round_trips(json!({
        "seq": 1, "at_ms": 1, "received_ms": 2, "kind": "from-the-future", "event": { "from-the-future": 1 },
    }));
    assert_eq!(e.decoded(), None);
}

#[test]
fn registration_answers_round_trip() {
    round_trips::<RegisterResponse>(json!({ "registered": 2, "fleet_size": 10 }));
    let m: LifecycleMoved = round_trips(json!({ "device": "BB-1", "lifecycle": "shipped" }));
    assert_eq!(m.lifecycle, Lifecycle::Shipped);
}

#[test]
fn registry_answers_round_trip() {
    round_trips::<RegistryImported>(json!({ "counties": 3, "stations": 12 }));
    round_trips::<Vec<CountyRow>>(json!([
        { "code": "IR-23-TEH", "province": "IR-23", "name_en": "Tehran", "name_fa": "تهران", "stations": 4 },
    ]));
}

#[test]
fn baselines_round_trip() {
    let b: Baselines = round_trips(json!({ "ballot-box-v2": "2.4.0", "id-laptop": "1.0.0" }));
    assert_eq!(b.0.len(), 2);
    round_trips::<Baseline>(json!({ "model": "ballot-box-v2", "version": "2.4.0" }));
}

#[test]
fn broker_round_trips() {
    round_trips::<BrokerInfo>(json!({ "host": "127.0.0.1", "port": 8883, "tls": true }));
    let tier: BrokerTier = round_trips(json!({
        "central": { "host": "127.0.0.1", "port": 8883, "tls": true },
        "provincial": [{
            "name": "p01", "provinces": ["IR-02", "IR-27"], "host": "10.0.2.1",
            "port": 8883, "tls": true, "managed": false, "bridge": "bridge.p01"
        }]
    }));
    assert_eq!(tier.provincial[0].provinces[1].to_string(), "IR-27");
}

#[test]
fn token_answers_round_trip() {
    let t: CreatedToken = round_trips(json!({
        "token": "sdg_00ff", "id": "tok_0a1b2c3d", "name": "maz", "role": "province-tech",
        "provinces": ["IR-02", "IR-27"],
    }));
    assert_eq!(t.role, Role::ProvinceTech);
    round_trips::<Vec<TokenRow>>(json!([
        { "id": "tok_0a1b2c3d", "name": "admin", "role": "admin", "provinces": [],
          "created_at_ms": 1, "created_by": "init (-)", "revoked_at_ms": null },
        { "id": "tok_1a1b2c3d", "name": "maz", "role": "province-tech", "provinces": ["IR-02"],
          "created_at_ms": 2, "created_by": "admin (tok_0a1b2c3d)", "revoked_at_ms": 3 },
    ]));
    round_trips::<TokenRevoked>(json!({ "revoked": "tok_1a1b2c3d" }));
}

#[test]
fn audit_entries_round_trip_with_a_device_as_actor() {
    round_trips::<Vec<AuditEntry>>(json!([
        { "seq": 2, "at_ms": 5, "actor": "device BB-1 (enrolment token)", "role": "device",
          "action": "device.enrol", "target": "BB-1", "source": "10.0.0.7",
          "detail": "{\"certificate_serial\":\"7f01\",\"not_after_ms\":9}",
          "prev_hash": "ab", "hash": "cd" },
        { "seq": 1, "at_ms": 4, "actor": "admin (tok_1)", "role": "admin",
          "action": "token.create", "target": "tok_2", "source": "127.0.0.1",
          "detail": "{}", "prev_hash": "00", "hash": "ab" },
    ]));
}

#[test]
fn audit_verification_is_intact_with_a_count_or_broken_with_where_and_why() {
    let ok: AuditVerification = round_trips(json!({ "intact": true, "entries": 5 }));
    assert_eq!(ok, AuditVerification::intact(5));
    let broken: AuditVerification = round_trips(
        json!({ "intact": false, "first_broken": 3, "reason": "entry #3 was altered" }),
    );
    assert_eq!(broken, AuditVerification::broken(3, "entry #3 was altered"));
}

#[test]
fn enrolment_answers_round_trip() {
    round_trips::<EnrolBatch>(json!({
        "shipment": "shipment-0a1b2c3d", "expires_at_ms": 9,
        "devices": [{ "device": "BB-1", "token": "enr_x" }, { "device": "BB-2", "token": "enr_y" }],
    }));
    let s: ShipmentStatus = round_trips(json!({
        "shipment": "shipment-0a1b2c3d",
        "devices": [
            { "device": "BB-1", "lifecycle": "enrolled", "enrolled_at_ms": 5,
              "token_expires_at_ms": 9, "self_test": "passed", "ready_to_ship": true },
            { "device": "BB-2", "lifecycle": "registered", "enrolled_at_ms": null,
              "token_expires_at_ms": 9, "self_test": "not yet", "ready_to_ship": false },
        ],
    }));
    assert_eq!(s.devices[1].self_test, SelfTest::NotYet);
    round_trips::<EnrolResponse>(json!({
        "device": "BB-1", "certificate": "-----BEGIN CERTIFICATE-----\n…", "ca": "-----BEGIN CERTIFICATE-----\n…",
        "broker": { "host": "broker.fleet", "port": 8883, "tls": true }, "certificate_serial": "7f01",
    }));
}

#[test]
fn error_bodies_round_trip_in_each_shape() {
    round_trips::<ErrorBody>(json!({ "error": "role viewer may not do this" }));
    // POST /api/v1/devices: by index
    round_trips::<ErrorBody>(json!({
        "error": "1 of 2 devices are invalid; none was registered",
        "errors": [{ "index": 1, "id": "BB/2", "message": "invalid device id" }],
    }));
    // CSV files: by line
    round_trips::<ErrorBody>(json!({
        "error": "the registry file has 1 bad line(s); nothing was imported",
        "errors": [{ "line": 3, "message": "unknown province" }],
    }));
    // the shipment CSV: by line, with the device
    round_trips::<ErrorBody>(json!({
        "error": "1 of 1 devices are invalid; nothing was registered",
        "errors": [{ "line": 2, "id": "BB-1", "message": "device BB-1 is already enrolled" }],
    }));
}

#[test]
fn requests_read_what_callers_send_today() {
    // tests/ and sim/ leave out what they do not set.
    let r: RegisterRequest = serde_json::from_value(json!({
        "devices": [{ "id": "BB-1", "model": "ballot-box-v2", "province": "IR-02", "county": "IR-02-SARI" }],
    }))
    .unwrap();
    assert_eq!(r.devices[0].station, None);
    assert_eq!(r.devices[0].lifecycle, None);
    // fleetctl sends a null name.
    let t: TokenRequest =
        serde_json::from_value(json!({ "role": "viewer", "provinces": [], "name": null })).unwrap();
    assert_eq!(t, TokenRequest::new(Role::Viewer, vec![], None));
    let t: TokenRequest = serde_json::from_value(json!({ "role": "viewer" })).unwrap();
    assert!(t.provinces.is_empty());
    let e: EnrolRequest =
        serde_json::from_value(json!({ "device": "BB-1", "token": "enr_x", "csr": "-----BEGIN" }))
            .unwrap();
    assert_eq!(e.device, "BB-1");
}

#[test]
fn typed_requests_write_what_callers_write_today() {
    assert_eq!(
        serde_json::to_value(LifecycleMove::new(Lifecycle::Retired)).unwrap(),
        json!({ "to": "retired" })
    );
    assert_eq!(
        serde_json::to_value(BaselineRequest {
            version: "2.4.0".into()
        })
        .unwrap(),
        json!({ "version": "2.4.0" })
    );
    assert_eq!(
        serde_json::to_value(TokenRequest::new(
            Role::ProvinceTech,
            vec!["IR-02".into()],
            None
        ))
        .unwrap(),
        json!({ "role": "province-tech", "provinces": ["IR-02"], "name": null })
    );
}

#[test]
fn enum_names_are_the_controllers_spellings() {
    let names = |v: Vec<Value>| {
        v.into_iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            Lifecycle::ALL
                .iter()
                .map(|l| serde_json::to_value(l).unwrap())
                .collect()
        ),
        ["registered", "enrolled", "shipped", "deployed", "retired"]
    );
    assert_eq!(
        names(
            Readiness::ALL
                .iter()
                .map(|r| serde_json::to_value(r).unwrap())
                .collect()
        ),
        [
            "ready",
            "not-enrolled",
            "never-seen",
            "link-down",
            "offline",
            "update-failed",
            "updating",
            "outdated",
            "unhealthy"
        ]
    );
    for l in Lifecycle::ALL {
        assert_eq!(l.as_str().parse::<Lifecycle>().unwrap(), l);
        assert_eq!(serde_json::to_value(l).unwrap(), l.as_str());
    }
    for r in Readiness::ALL {
        assert_eq!(r.as_str().parse::<Readiness>().unwrap(), r);
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        assert_eq!(Readiness::from(r.reason()), r);
    }
    for r in Reason::ALL {
        assert_eq!(r.as_str().parse::<Reason>().unwrap(), r);
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
    }
    assert_eq!(serde_json::to_value(SelfTest::NotYet).unwrap(), "not yet");
}

#[test]
fn unknown_names_are_refused_with_the_controllers_messages() {
    assert_eq!(
        "asleep".parse::<Readiness>().unwrap_err(),
        "unknown reason \"asleep\"; one of: not-enrolled, never-seen, link-down, offline, update-failed, updating, outdated, unhealthy"
    );
    assert_eq!(
        "lost".parse::<Lifecycle>().unwrap_err().to_string(),
        "\"lost\" is not one of registered, enrolled, shipped, deployed, retired"
    );
    assert_eq!(
        "station".parse::<Grouping>().unwrap_err(),
        "\"station\" is not one of province, county"
    );
}
