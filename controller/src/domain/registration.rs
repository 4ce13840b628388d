//! What an operator may say about a device when registering it (pure). The
//! checks that need the registry or the fleet take their answers as
//! arguments; the HTTP edge looks them up.

use fleet_protocol::{CountyCode, DeviceId, IdError, ProvinceCode, StationId};

use crate::domain::fleet::Registration;
use crate::domain::lifecycle::{Lifecycle, UnknownLifecycle};

/// Why one device of a registration request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0}")]
    BadId(#[from] IdError),
    #[error("lifecycle: {0}")]
    BadLifecycle(#[from] UnknownLifecycle),
    #[error("province {0} is outside your token's scope")]
    ProvinceOutOfScope(ProvinceCode),
    #[error("device {0} is registered in a province outside your token's scope")]
    DeviceOutOfScope(DeviceId),
    #[error("station {0} is not in the registry (fleetctl registry import)")]
    UnknownStation(StationId),
    #[error("station {station} is in county {of}, not {given}")]
    StationElsewhere {
        station: StationId,
        of: CountyCode,
        given: CountyCode,
    },
    #[error("county {county} is not in province {province}")]
    CountyElsewhere {
        county: CountyCode,
        province: ProvinceCode,
    },
    #[error("county {0} is not in the registry (fleetctl registry import)")]
    UnknownCounty(CountyCode),
    #[error("device {id} is {now}; its lifecycle changes only through enrolment or fleetctl device ship|deploy|retire, not to {asked} by registration")]
    LifecycleFixed {
        id: DeviceId,
        now: Lifecycle,
        asked: Lifecycle,
    },
    #[error("a new device starts registered (or enrolled), not {0}")]
    NewDeviceLifecycle(Lifecycle),
    #[error("device {id} is {lifecycle}; changing its model, province, county or station needs the reassign-devices permission (central-ops or admin)")]
    ReassignNotPermitted { id: DeviceId, lifecycle: Lifecycle },
}

/// Whether a registration moves a device that is already out in the field
/// (shipped or deployed) to another model, province, county or station:
/// that needs its own permission.
pub fn reassigns(existing: &Registration, new: &Registration) -> bool {
    matches!(existing.lifecycle, Lifecycle::Shipped | Lifecycle::Deployed)
        && (existing.model != new.model
            || existing.province != new.province
            || existing.county != new.county
            || existing.station != new.station)
}

/// The county a device is in: the one given, checked against its station's.
pub fn county_of(
    given: Option<CountyCode>,
    station: Option<(&StationId, CountyCode)>,
) -> Result<Option<CountyCode>, RegistrationError> {
    match (given, station) {
        (Some(given), Some((s, of))) if given != of => Err(RegistrationError::StationElsewhere {
            station: s.clone(),
            of,
            given,
        }),
        (Some(given), _) => Ok(Some(given)),
        (None, Some((_, of))) => Ok(Some(of)),
        (None, None) => Ok(None),
    }
}

/// The lifecycle a registration leaves a device in. A new device starts
/// registered (or enrolled, said by the operator; see docs/decisions/0002).
/// An existing device keeps its lifecycle: it changes only through
/// enrolment and `fleetctl device ship|deploy|retire`.
pub fn lifecycle_of(
    id: &DeviceId,
    existing: Option<Lifecycle>,
    asked: Option<Lifecycle>,
) -> Result<Lifecycle, RegistrationError> {
    match (existing, asked) {
        (Some(now), None) => Ok(now),
        (Some(now), Some(a)) if a == now => Ok(now),
        (Some(now), Some(asked)) => Err(RegistrationError::LifecycleFixed {
            id: id.clone(),
            now,
            asked,
        }),
        (None, None) => Ok(Lifecycle::Registered),
        (None, Some(a @ (Lifecycle::Registered | Lifecycle::Enrolled))) => Ok(a),
        (None, Some(a)) => Err(RegistrationError::NewDeviceLifecycle(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn county(s: &str) -> CountyCode {
        CountyCode::parse(s).unwrap()
    }

    #[test]
    fn a_station_decides_the_county_unless_it_contradicts_the_given_one() {
        let s = StationId::parse("ST-1").unwrap();
        assert_eq!(
            county_of(None, Some((&s, county("IR-23-0101")))),
            Ok(Some(county("IR-23-0101")))
        );
        assert_eq!(
            county_of(Some(county("IR-23-0101")), Some((&s, county("IR-23-0101")))),
            Ok(Some(county("IR-23-0101")))
        );
        let err =
            county_of(Some(county("IR-23-0102")), Some((&s, county("IR-23-0101")))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "station ST-1 is in county IR-23-0101, not IR-23-0102"
        );
        assert_eq!(county_of(None, None), Ok(None));
    }

    #[test]
    fn registration_never_moves_an_existing_device_through_its_life() {
        use Lifecycle::*;
        let id = DeviceId::parse("BB-1").unwrap();
        assert_eq!(lifecycle_of(&id, None, None), Ok(Registered));
        assert_eq!(lifecycle_of(&id, None, Some(Enrolled)), Ok(Enrolled));
        assert_eq!(
            lifecycle_of(&id, None, Some(Shipped)),
            Err(RegistrationError::NewDeviceLifecycle(Shipped))
        );
        assert_eq!(lifecycle_of(&id, Some(Deployed), None), Ok(Deployed));
        assert_eq!(
            lifecycle_of(&id, Some(Deployed), Some(Deployed)),
            Ok(Deployed)
        );
        let err = lifecycle_of(&id, Some(Retired), Some(Registered)).unwrap_err();
        assert!(
            err.to_string().starts_with("device BB-1 is retired;"),
            "{err}"
        );
    }
}
