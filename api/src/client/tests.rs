use super::*;
use crate::endpoints::{DEVICE, DEVICES, ENROL, HEALTHZ, READINESS, SET_BASELINE};

fn dev_client() -> Client {
    Client::new("http://127.0.0.1:8080", None).unwrap()
}

#[test]
fn a_path_argument_is_one_percent_encoded_segment() {
    let url = dev_client().url(&DEVICE, &["a b/c?d#e%f"]);
    assert_eq!(
        url.as_str(),
        "http://127.0.0.1:8080/api/v1/devices/a%20b%2Fc%3Fd%23e%25f"
    );
}

#[test]
fn a_plain_id_is_left_as_it_is() {
    let url = dev_client().url(&SET_BASELINE, &["ballot-box-v2"]);
    assert_eq!(
        url.as_str(),
        "http://127.0.0.1:8080/api/v1/baselines/ballot-box-v2"
    );
}

#[test]
fn a_base_url_with_a_path_keeps_it_and_its_trailing_slash_does_not_double() {
    let c = Client::new("http://10.0.0.1:8080/fleet/", None).unwrap();
    assert_eq!(
        c.url(&DEVICES, &[]).as_str(),
        "http://10.0.0.1:8080/fleet/api/v1/devices"
    );
}

#[test]
fn query_values_are_encoded_and_absent_filters_left_out() {
    let c = dev_client().with_token(Some("t".into()));
    let q = ReadinessQuery::new(Grouping::County, Some("IR 23&x=1".into()));
    let req = c
        .request(&READINESS, &[], Some(&q))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(req.url().query(), Some("by=county&province=IR+23%26x%3D1"));

    let req = c
        .request(&DEVICES, &[], Some(&DeviceQuery::default()))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(req.url().query(), None, "{}", req.url());

    let q = DeviceQuery {
        readiness: Some("never-seen".into()),
        page: Some(2),
        ..Default::default()
    };
    let req = c.request(&DEVICES, &[], Some(&q)).unwrap().build().unwrap();
    assert_eq!(req.url().query(), Some("readiness=never-seen&page=2"));
}

#[test]
fn bearer_endpoints_send_the_token_and_refuse_without_one() {
    let c = dev_client().with_token(Some("  sdg_abc \n".into()));
    let req = c
        .request(&DEVICE, &["BB-1"], NO_QUERY)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(req.headers()["authorization"], "Bearer sdg_abc");

    let none = dev_client().with_token(Some("   ".into()));
    let err = none.request(&DEVICE, &["BB-1"], NO_QUERY).unwrap_err();
    assert!(matches!(err, ClientError::NoToken), "{err}");
    assert!(err.to_string().contains("FLEETCTL_TOKEN"), "{err}");
}

#[test]
fn public_and_enrolment_endpoints_need_no_token_and_send_none() {
    let c = dev_client();
    for e in [&HEALTHZ, &ENROL] {
        let req = c.request(e, &[], NO_QUERY).unwrap().build().unwrap();
        assert!(req.headers().get("authorization").is_none(), "{}", e.path);
    }
}

#[test]
fn https_without_the_fleet_ca_is_refused_with_the_hint() {
    let err = Client::new("https://127.0.0.1:8080", None).unwrap_err();
    assert!(matches!(err, ClientError::NoCa), "{err}");
    assert!(err.to_string().contains("--ca DATA/pki/ca.crt"), "{err}");
}

#[test]
fn a_ca_file_without_a_certificate_is_refused() {
    let err = Client::new("https://127.0.0.1:8080", Some(b"not a pem")).unwrap_err();
    assert!(matches!(err, ClientError::CaInvalid { .. }), "{err}");
    let err = Client::with_ca_file(
        "https://127.0.0.1:8080",
        Some(Path::new("/nonexistent/ca.crt")),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/ca.crt"),
        "{err}"
    );
}

#[test]
fn only_http_and_https_urls_are_controllers() {
    for bad in ["ftp://x", "127.0.0.1:8080", "http://x/?a=1", "not a url"] {
        let err = Client::new(bad, None).unwrap_err();
        assert!(matches!(err, ClientError::BadUrl { .. }), "{bad}: {err}");
    }
}

#[test]
fn a_422_lists_each_bad_item_like_fleetctl_did() {
    let body = br#"{"error":"2 of 3 devices are invalid; none was registered","errors":[{"index":0,"id":"BB/1","message":"bad id"},{"line":4,"message":"bad county"}]}"#;
    let err = refusal(422, body);
    assert_eq!(err.status(), Some(422));
    assert_eq!(
        err.to_string(),
        "2 of 3 devices are invalid; none was registered (HTTP 422)\n  BB/1: bad id\n  line 4: bad county"
    );
}

#[test]
fn a_refusal_that_is_not_an_error_body_shows_its_text() {
    let err = refusal(
        415,
        b"Expected request with `Content-Type: application/json`",
    );
    assert_eq!(
        err.to_string(),
        "Expected request with `Content-Type: application/json` (HTTP 415)"
    );
    assert_eq!(refusal(502, b"").to_string(), "request failed (HTTP 502)");
}

#[test]
fn a_plain_refusal_has_no_items() {
    match refusal(403, br#"{"error":"role viewer may not do this"}"#) {
        ClientError::Http {
            status,
            message,
            errors,
        } => {
            assert_eq!(
                (status, message.as_str()),
                (403, "role viewer may not do this")
            );
            assert!(errors.is_empty());
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_token_never_travels_over_plain_http_beyond_this_machine() {
    for remote in ["http://10.0.0.5:8080", "http://controller.example:8080"] {
        let c = Client::new(remote, None)
            .unwrap()
            .with_token(Some("sdg_abc".into()));
        for e in [&DEVICE, &ENROL] {
            let err = c.request(e, &["BB-1"], NO_QUERY).unwrap_err();
            assert!(
                matches!(err, ClientError::PlaintextSecret { .. }),
                "{remote} {}: {err}",
                e.path
            );
        }
        // Nothing secret goes with /healthz, so it may.
        assert!(c.request(&HEALTHZ, &[], NO_QUERY).is_ok());
    }
    for local in [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    ] {
        let c = Client::new(local, None)
            .unwrap()
            .with_token(Some("sdg_abc".into()));
        assert!(c.request(&DEVICE, &["BB-1"], NO_QUERY).is_ok(), "{local}");
    }
}
