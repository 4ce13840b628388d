//! `fleetctl decode FILE [--hex]`: a CBOR payload (a file, or `-` for
//! stdin) in its JSON form. Needs no controller.

use std::path::Path;

use fleet_protocol::Envelope;
use serde_json::Value;

use super::{read_input, CommandError};
use crate::render::{Report, View};

pub fn run(file: &Path, hex: bool) -> Result<Decoded, CommandError> {
    let raw = read_input(file)?;
    decode(&raw, hex)
}

/// `hex`: the input is hexadecimal text (as `mosquitto_sub -F %x` prints),
/// whitespace allowed.
pub fn decode(raw: &[u8], hex: bool) -> Result<Decoded, CommandError> {
    let bytes = if hex {
        let text: String = String::from_utf8_lossy(raw).split_whitespace().collect();
        ::hex::decode(text).map_err(CommandError::NotHex)?
    } else {
        raw.to_vec()
    };
    Envelope::from_cbor(&bytes)
        .map(Decoded)
        .map_err(CommandError::NotAPayload)
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded(pub Envelope);

impl Report for Decoded {
    fn json(&self) -> Value {
        crate::render::to_json(&self.0)
    }

    /// The envelope's own JSON form, as the protocol prints it.
    fn table(&self) -> View {
        View::Text(self.0.to_json() + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};
    use fleet_protocol::{Health, Payload};

    fn health() -> Envelope {
        let h = Health {
            cpu_pct: 12,
            uptime_s: 60,
            ..Health::default()
        };
        Envelope::new(
            "BB-02-000001".parse().unwrap(),
            1_700_000_000_000,
            Payload::Health(h),
        )
    }

    #[test]
    fn cbor_and_its_hex_decode_to_the_envelope_json() {
        let env = health();
        let cbor = env.to_cbor().unwrap();
        let want = env.to_json() + "\n";
        assert_eq!(render(&decode(&cbor, false).unwrap(), Output::Table), want);
        let spaced: String = ::hex::encode(&cbor)
            .as_bytes()
            .chunks(8)
            .map(|c| std::str::from_utf8(c).unwrap().to_owned() + " \n")
            .collect();
        let d = decode(spaced.as_bytes(), true).unwrap();
        assert_eq!(d.0, env);
        assert!(want.contains("\"cpu_pct\": 12"), "{want}");
    }

    #[test]
    fn hex_that_is_not_hex_is_refused() {
        let e = decode(b"zz", true).unwrap_err();
        assert!(e.to_string().starts_with("not hexadecimal: "), "{e}");
    }

    #[test]
    fn bytes_that_are_no_envelope_are_refused() {
        let e = decode(&[0xff, 0x00], false).unwrap_err();
        assert!(matches!(e, CommandError::NotAPayload(_)), "{e:?}");
    }
}
