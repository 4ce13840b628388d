//! End to end against the controller's managed Mosquitto with mutual TLS:
//! who gets in, and what a device with a valid certificate still cannot do.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use fleet_tests::builders::{mqtt_connect, mqtt_drive, mqtt_tls, now_ms, publish, state};
use fleet_tests::{eventually, metric, within, Controller, EnrolledDevice};
use rumqttc::MqttOptions;

fn identity(d: &EnrolledDevice) -> (&[u8], &[u8]) {
    (&d.cert, &d.key)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_admits_only_fleet_certificates_and_confines_each_device() {
    fleet_tests::install_crypto();
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    ctl.import_registry("province,county,station_id\nIR-23,IR-23-TEH,ST-1\n")
        .unwrap();
    let a = ctl.enrol("BB-A", "IR-23", "IR-23-TEH", "").unwrap();
    let b = ctl.enrol("BB-B", "IR-23", "IR-23-TEH", "").unwrap();
    let port = ctl.mqtt_port;

    // A, with its own certificate, is admitted.
    let (ca_client, el) = mqtt_connect(mqtt_tls(port, "BB-A", &a.ca, Some(identity(&a))))
        .await
        .unwrap();
    mqtt_drive(el);

    // A publishes a state on B's topic: the ACL drops it before the controller.
    publish(&ca_client, &state("BB-B", "6.6.6", now_ms()), true).await;
    // ...and a client claiming B's client id with A's certificate is A to the
    // broker (the certificate name replaces the client id): same result.
    let (claimer, el) = mqtt_connect(mqtt_tls(port, "BB-B", &a.ca, Some(identity(&a))))
        .await
        .unwrap();
    mqtt_drive(el);
    publish(&claimer, &state("BB-B", "7.7.7", now_ms()), true).await;
    // A reporting on its own topic goes through: the path works.
    publish(&claimer, &state("BB-A", "2.4.0", now_ms()), true).await;
    let api = ctl.client();
    eventually(Duration::from_secs(30), "A's own state", || async {
        let d = api.device("BB-A").await.map_err(|e| e.to_string())?;
        (d.device.firmware.as_ref().map(|v| v.as_str()) == Some("2.4.0"))
            .then_some(())
            .ok_or(format!("{d:?}"))
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = within(20, "B's detail", api.device("BB-B")).await.unwrap();
    assert!(v.state.is_none(), "B's topic was written by A: {v:?}");
    let m = within(20, "GET /metrics", api.metrics()).await.unwrap();
    assert_eq!(
        metric(&m, "fleet_ingest_rejected_total", "forged"),
        0.0,
        "it never reached the controller"
    );
    // The claimed client id never became a session of its own.
    let log = std::fs::read_to_string(data.path().join("mosquitto/state/mosquitto.log")).unwrap();
    assert!(!log.contains(" as BB-B ("), "{log}");

    // No client certificate, a certificate of another CA, an expired one: refused.
    assert!(
        mqtt_connect(mqtt_tls(port, "BB-X", &a.ca, None))
            .await
            .is_err(),
        "no client certificate"
    );
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other_ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_issuer = rcgen::Issuer::from_params(&other_ca, &other_key);
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "BB-A");
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let foreign = leaf.signed_by(&leaf_key, &other_issuer).unwrap();
    let r = mqtt_connect(mqtt_tls(
        port,
        "BB-A",
        &a.ca,
        Some((
            foreign.pem().as_bytes(),
            leaf_key.serialize_pem().as_bytes(),
        )),
    ))
    .await;
    assert!(r.is_err(), "a certificate from another CA was admitted");

    let ca_pem = std::fs::read_to_string(data.path().join("pki/ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(data.path().join("pki/ca.key")).unwrap())
            .unwrap();
    let fleet_issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, &ca_key).unwrap();
    let mut old = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    old.distinguished_name
        .push(rcgen::DnType::CommonName, "BB-A");
    old.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    old.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let old_key = rcgen::KeyPair::generate().unwrap();
    let expired = old.signed_by(&old_key, &fleet_issuer).unwrap();
    let r = mqtt_connect(mqtt_tls(
        port,
        "BB-A",
        &a.ca,
        Some((expired.pem().as_bytes(), old_key.serialize_pem().as_bytes())),
    ))
    .await;
    assert!(r.is_err(), "an expired certificate was admitted");

    // Plain MQTT on the TLS port: refused.
    let mut plain = MqttOptions::new("BB-A", "127.0.0.1", port);
    plain.set_keep_alive(Duration::from_secs(5));
    assert!(mqtt_connect(plain).await.is_err(), "plaintext was admitted");

    // Retire A: its certificate is revoked, the broker reloads the new
    // CRL, and A is refused from then on while B still gets in.
    let (ok, out, err) = ctl.fleetctl(&["device", "retire", "BB-A"]).unwrap();
    assert!(ok && out.contains("retired"), "{out}{err}");
    // B first: once B is admitted, the broker is up, so A's refusal is its
    // certificate's and not a broker still restarting.
    let (c, el) = eventually(Duration::from_secs(30), "B admitted", || async {
        mqtt_connect(mqtt_tls(port, "BB-B", &b.ca, Some(identity(&b)))).await
    })
    .await
    .unwrap();
    let refused = mqtt_connect(mqtt_tls(port, "BB-A", &a.ca, Some(identity(&a))))
        .await
        .err()
        .expect("A admitted after its retirement");
    assert!(!refused.is_empty());
    drop((c, el));
    let (ok, _, err) = ctl.fleetctl(&["device", "ship", "BB-A"]).unwrap();
    assert!(
        !ok && err.contains("nothing leaves retired") && err.contains("HTTP 409"),
        "{err}"
    );
    let (ok, audit, err) = ctl
        .fleetctl(&["audit", "list", "--device", "BB-A", "--output", "json"])
        .unwrap();
    assert!(ok, "{err}");
    assert!(
        audit.contains("device.retire") && audit.contains("device.enrol"),
        "{audit}"
    );
    ctl.stop().unwrap();
}
