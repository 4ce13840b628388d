//! Validated identifiers. Every string that reaches a topic, a store key or a
//! report goes through one of these types first.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::provinces;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is longer than {max} characters")]
    TooLong {
        kind: &'static str,
        value: String,
        max: usize,
    },
    #[error("{kind} {value:?} has a character outside {allowed}")]
    BadCharacter {
        kind: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("{value:?} is not a province code of Iran (IR-00 … IR-30)")]
    UnknownProvince { value: String },
    #[error("county code {value:?} must look like IR-23-XXXX (its province code, a dash, 1-16 letters or digits)")]
    BadCounty { value: String },
    #[error("version {value:?} must look like MAJOR.MINOR.PATCH, optionally with -PRERELEASE")]
    BadVersion { value: String },
}

fn check_chars(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.chars().count() > max {
        return Err(IdError::TooLong {
            kind,
            value: value.to_owned(),
            max,
        });
    }
    if !value.chars().all(ok) {
        return Err(IdError::BadCharacter {
            kind,
            value: value.to_owned(),
            allowed,
        });
    }
    Ok(())
}

/// Implements the traits every string newtype shares: display, parsing,
/// serde as a plain string, CBOR as a text string (validated on decode).
macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.to_string()
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl<C> minicbor::Encode<C> for $name {
            fn encode<W: minicbor::encode::Write>(
                &self,
                e: &mut minicbor::Encoder<W>,
                _ctx: &mut C,
            ) -> Result<(), minicbor::encode::Error<W::Error>> {
                e.str(&self.to_string())?;
                Ok(())
            }
        }
        impl<'b, C> minicbor::Decode<'b, C> for $name {
            fn decode(
                d: &mut minicbor::Decoder<'b>,
                _ctx: &mut C,
            ) -> Result<Self, minicbor::decode::Error> {
                let s = d.str()?;
                Self::parse(s).map_err(|e| minicbor::decode::Error::message(e.to_string()))
            }
        }
    };
}

/// A device's identity: `[A-Za-z0-9_-]{1,64}`. It is the MQTT client id, the
/// certificate name and the topic segment, so nothing else may reach a topic.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    pub const MAX_LEN: usize = 64;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_chars("device id", s, Self::MAX_LEN, "A-Z a-z 0-9 _ -", |c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-'
        })?;
        Ok(Self(s.to_owned()))
    }
}
string_newtype!(DeviceId);

/// A polling-station id from the operator's registry: `[A-Za-z0-9_-]{1,32}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StationId(String);

impl StationId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_chars("station id", s, 32, "A-Z a-z 0-9 _ -", |c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-'
        })?;
        Ok(Self(s.to_owned()))
    }
}
string_newtype!(StationId);

/// A hardware model, e.g. `ballot-box-v2`: `[a-z0-9-]{1,32}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Model(String);

impl Model {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_chars("model", s, 32, "a-z 0-9 -", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
        })?;
        Ok(Self(s.to_owned()))
    }
}
string_newtype!(Model);

/// An ISO 3166-2:IR province code, `IR-00` … `IR-30`. Only the 31 built-in
/// provinces parse.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProvinceCode(u8);

impl ProvinceCode {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let unknown = || IdError::UnknownProvince {
            value: s.to_owned(),
        };
        let digits = s
            .strip_prefix("IR-")
            .or_else(|| s.strip_prefix("ir-"))
            .ok_or_else(unknown)?;
        if digits.len() != 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let n: u8 = digits.parse().map_err(|_| unknown())?;
        if usize::from(n) >= provinces::PROVINCES.len() {
            return Err(unknown());
        }
        Ok(Self(n))
    }

    /// The number after `IR-`; also the index into [`provinces::PROVINCES`].
    pub fn number(self) -> u8 {
        self.0
    }

    pub fn from_number(n: u8) -> Option<Self> {
        (usize::from(n) < provinces::PROVINCES.len()).then_some(Self(n))
    }

    pub fn info(self) -> &'static provinces::Province {
        &provinces::PROVINCES[usize::from(self.0)]
    }

    pub fn all() -> impl Iterator<Item = ProvinceCode> {
        (0..provinces::PROVINCES.len()).map(|n| Self(u8::try_from(n).expect("31 provinces")))
    }
}

impl fmt::Display for ProvinceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IR-{:02}", self.0)
    }
}
impl fmt::Debug for ProvinceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProvinceCode(IR-{:02})", self.0)
    }
}
impl FromStr for ProvinceCode {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}
impl TryFrom<String> for ProvinceCode {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<ProvinceCode> for String {
    fn from(v: ProvinceCode) -> String {
        v.to_string()
    }
}
impl serde::Serialize for ProvinceCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> serde::Deserialize<'de> for ProvinceCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A county (shahrestan) code: its province code, a dash and 1-16 upper-case
/// letters or digits, e.g. `IR-23-TEH`. The province is part of the code, so
/// a county can never be filed under the wrong province.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountyCode(String);

impl CountyCode {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::BadCounty {
            value: s.to_owned(),
        };
        let upper = s.to_ascii_uppercase();
        if upper.len() < 7 || upper.as_bytes()[5] != b'-' {
            return Err(bad());
        }
        ProvinceCode::parse(&upper[..5]).map_err(|_| bad())?;
        let local = &upper[6..];
        if local.is_empty()
            || local.len() > 16
            || !local
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(bad());
        }
        Ok(Self(upper))
    }

    pub fn province(&self) -> ProvinceCode {
        ProvinceCode::parse(&self.0[..5]).expect("checked in parse")
    }
}
string_newtype!(CountyCode);

/// A software version, `MAJOR.MINOR.PATCH[-PRERELEASE]`, ordered like semver
/// (a pre-release sorts before its release).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::parts(s).ok_or_else(|| IdError::BadVersion {
            value: s.to_owned(),
        })?;
        Ok(Self(s.to_owned()))
    }

    fn parts(s: &str) -> Option<([u64; 3], Option<&str>)> {
        if s.len() > 48 {
            return None;
        }
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (s, None),
        };
        if let Some(p) = pre {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                return None;
            }
        }
        let mut nums = [0u64; 3];
        let mut it = core.split('.');
        for n in &mut nums {
            let part = it.next()?;
            if part.is_empty() || part.len() > 9 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *n = part.parse().ok()?;
        }
        if it.next().is_some() {
            return None;
        }
        Some((nums, pre))
    }

    fn key(&self) -> ([u64; 3], Option<&str>) {
        Self::parts(&self.0).expect("checked in parse")
    }
}
string_newtype!(Version);

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, ap) = self.key();
        let (b, bp) = other.key();
        a.cmp(&b).then_with(|| match (ap, bp) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => x.cmp(y),
        })
    }
}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        assert!(DeviceId::parse("BB-23-000123").is_ok());
        assert!(DeviceId::parse(&"a".repeat(64)).is_ok());
        assert!(matches!(
            DeviceId::parse(&"a".repeat(65)),
            Err(IdError::TooLong { .. })
        ));
        for bad in ["", "a/b", "a+b", "a#", "dev 1", "ب"] {
            assert!(DeviceId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn provinces_parse_and_print() {
        let p = ProvinceCode::parse("IR-23").unwrap();
        assert_eq!(p.to_string(), "IR-23");
        assert_eq!(p.info().name_en, "Tehran");
        assert!(ProvinceCode::parse("IR-00").is_ok());
        assert!(ProvinceCode::parse("IR-30").is_ok());
        for bad in ["IR-31", "IR-3", "IR-003", "TEH", "IR-x1", ""] {
            assert!(ProvinceCode::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(ProvinceCode::all().count(), 31);
    }

    #[test]
    fn counties_carry_their_province() {
        let c = CountyCode::parse("ir-02-sari").unwrap();
        assert_eq!(c.as_str(), "IR-02-SARI");
        assert_eq!(c.province().to_string(), "IR-02");
        for bad in ["IR-02", "IR-02-", "IR-99-X", "IR-02_X", "IR-02-a b"] {
            assert!(CountyCode::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn versions_order_like_semver() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("1.2.3") < v("1.2.10"));
        assert!(v("1.10.0") > v("1.9.9"));
        assert!(v("2.0.0-rc.1") < v("2.0.0"));
        assert!(v("2.0.0-rc.1") < v("2.0.0-rc.2"));
        for bad in ["1.2", "1.2.3.4", "a.b.c", "1..3", "1.2.3-", "", "1.2.3-x y"] {
            assert!(Version::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_validates() {
        let ok: DeviceId = serde_json::from_str("\"BB-1\"").unwrap();
        assert_eq!(ok.as_str(), "BB-1");
        assert!(serde_json::from_str::<DeviceId>("\"a/b\"").is_err());
        assert!(serde_json::from_str::<ProvinceCode>("\"IR-45\"").is_err());
    }
}
