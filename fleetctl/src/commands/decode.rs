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
