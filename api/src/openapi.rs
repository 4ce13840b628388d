//! The OpenAPI 3 document of the API, built from [`ENDPOINTS`] and the
//! types' `ToSchema` derives. Each operation lists its parameters, body,
//! answers (an [`crate::ErrorBody`] for every refusal), the bearer
//! requirement where there is one, and in `x-roles` the roles that may call
//! it (`x-permissions`: the permissions, any one of which suffices).

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{Array, ComponentsBuilder, Object};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Content, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required, ResponseBuilder,
    Schema,
};
use utoipa::{IntoParams, PartialSchema};

use crate::endpoints::{Auth, Body, Endpoint, Method, ENDPOINTS};
use crate::roles::Role;
use crate::types::*;

/// The name of the bearer security scheme.
pub const BEARER: &str = "bearer";

/// The document, as `GET /api/v1/openapi.json` serves it.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for e in ENDPOINTS {
        paths.add_path_operation(e.openapi_path(), vec![http_method(e.method)], operation(e));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Sandogh controller API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The election-device fleet controller's HTTP API. Operators call it with a bearer token; its role decides what it may do, and a province-tech token sees only its provinces.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components()))
        .build()
}

/// [`document`] as pretty JSON.
pub fn document_json() -> String {
    document()
        .to_pretty_json()
        .expect("an OpenAPI document of plain strings and maps serializes")
}

fn http_method(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::Get,
        Method::Post => HttpMethod::Post,
        Method::Put => HttpMethod::Put,
        Method::Delete => HttpMethod::Delete,
    }
}

fn components() -> utoipa::openapi::Components {
    ComponentsBuilder::new()
        .schema_from::<ErrorBody>()
        .schema_from::<InvalidItem>()
        .schema_from::<ControllerHealth>()
        .schema_from::<HealthStatus>()
        .schema_from::<BrokerState>()
        .schema_from::<ProvinceRow>()
        .schema_from::<ReadinessRow>()
        .schema_from::<LinkStatus>()
        .schema_from::<Reason>()
        .schema_from::<Readiness>()
        .schema_from::<Lifecycle>()
        .schema_from::<DevicePage>()
        .schema_from::<DeviceSummary>()
        .schema_from::<DeviceDetail>()
        .schema_from::<DeviceEvent>()
        .schema_from::<DesiredState>()
        .schema_from::<EventGap>()
        .schema_from::<OutboxDrops>()
        .schema_from::<CommandRequest>()
        .schema_from::<CommandSent>()
        .schema_from::<CommandsRequest>()
        .schema_from::<CommandSelector>()
        .schema_from::<CommandsSent>()
        .schema_from::<CommandSkipped>()
        .schema_from::<CommandView>()
        .schema_from::<LogsUploaded>()
        .schema_from::<RegisterRequest>()
        .schema_from::<DeviceRegistration>()
        .schema_from::<RegisterResponse>()
        .schema_from::<LifecycleMove>()
        .schema_from::<LifecycleMoved>()
        .schema_from::<RegistryImported>()
        .schema_from::<CountyRow>()
        .schema_from::<Baselines>()
        .schema_from::<BaselineRequest>()
        .schema_from::<Baseline>()
        .schema_from::<BrokerInfo>()
        .schema_from::<BrokerTier>()
        .schema_from::<ProvincialBrokerInfo>()
        .schema_from::<PkiStatus>()
        .schema_from::<CertExpiry>()
        .schema_from::<DeviceCertExpiry>()
        .schema_from::<TokenRequest>()
        .schema_from::<CreatedToken>()
        .schema_from::<TokenRow>()
        .schema_from::<TokenRevoked>()
        .schema_from::<Role>()
        .schema_from::<AuditEntry>()
        .schema_from::<AuditVerification>()
        .schema_from::<EnrolBatch>()
        .schema_from::<EnrolToken>()
        .schema_from::<ShipmentStatus>()
        .schema_from::<ShipmentDevice>()
        .schema_from::<SelfTest>()
        .schema_from::<EnrolRequest>()
        .schema_from::<EnrolResponse>()
        .schema_from::<FreezeSpan>()
        .schema_from::<UpdateView>()
        .schema_from::<DeviceUpdateRequest>()
        .schema_from::<DeviceUpdateSet>()
        .schema_from::<FreezeRequest>()
        .schema_from::<FreezeWindowRequest>()
        .schema_from::<FreezeWindows>()
        .schema_from::<FreezeWindowView>()
        .schema_from::<FirmwareStatus>()
        .schema_from::<RoleStatus>()
        .schema_from::<FirmwareTarget>()
        .schema_from::<ImageUploaded>()
        .schema_from::<TargetsPublished>()
        .schema_from::<RootPublished>()
        .schema_from::<RolloutRequest>()
        .schema_from::<RolloutSelector>()
        .schema_from::<CanaryRequest>()
        .schema_from::<PolicyRequest>()
        .schema_from::<PolicyView>()
        .schema_from::<RolloutPhase>()
        .schema_from::<MemberState>()
        .schema_from::<WaveState>()
        .schema_from::<Counters>()
        .schema_from::<RolloutSummary>()
        .schema_from::<RolloutView>()
        .schema_from::<WaveView>()
        .schema_from::<ProvinceCounters>()
        .schema_from::<RolloutLogEntry>()
        .schema_from::<MemberView>()
        .schema_from::<PauseRequest>()
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An operator token (fleetctl: --token or FLEETCTL_TOKEN)",
                    ))
                    .build(),
            ),
        )
        .build()
}

/// The parameters of a query-string type named in [`ENDPOINTS`].
fn query_params(name: &str) -> Option<Vec<Parameter>> {
    let q = || Some(ParameterIn::Query);
    Some(match name {
        "ReadinessQuery" => ReadinessQuery::into_params(q),
        "DeviceQuery" => DeviceQuery::into_params(q),
        "CountyQuery" => CountyQuery::into_params(q),
        "AuditQuery" => AuditQuery::into_params(q),
        "EnrolBatchQuery" => EnrolBatchQuery::into_params(q),
        "MembersQuery" => MembersQuery::into_params(q),
        _ => return None,
    })
}

fn content(body: Body) -> Option<(&'static str, Content)> {
    let c = |s: RefOr<Schema>| Content::new(Some(s));
    match body {
        Body::Empty => None,
        Body::Json(name) => Some(("application/json", c(Ref::from_schema_name(name).into()))),
        Body::JsonList(name) => Some((
            "application/json",
            c(Schema::Array(Array::new(Ref::from_schema_name(name))).into()),
        )),
        Body::Csv => Some(("text/csv", c(String::schema()))),
        Body::Text => Some(("text/plain", c(String::schema()))),
        Body::AnyJson => Some(("application/json", c(Schema::Object(Object::new()).into()))),
        Body::Binary => Some((
            "application/octet-stream",
            c(Object::builder()
                .schema_type(utoipa::openapi::schema::Type::String)
                .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
                    utoipa::openapi::schema::KnownFormat::Binary,
                )))
                .build()
                .into()),
        )),
    }
}

fn refusal(status: u16) -> &'static str {
    match status {
        400 => "A value is not valid",
        401 => "No bearer token, or not a valid one",
        403 => "Not allowed: the role, the province scope, or a refused enrolment token",
        404 => "No such thing (or it is in another province)",
        409 => "Not allowed in the current state",
        413 => "The body is larger than the controller accepts",
        416 => "The range is not satisfiable",
        422 => "Some items are wrong (one entry each); nothing was changed",
        429 => "Too many refused attempts from this address; try again after Retry-After seconds",
        500 => "Internal error; see the controller log",
        _ => "Refused",
    }
}

fn operation(e: &Endpoint) -> Operation {
    let mut params: Vec<Parameter> = e
        .path_params()
        .map(|name| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(String::schema()))
                .build()
        })
        .collect();
    if let Some(q) = e.query {
        params.extend(
            query_params(q).expect("every query type named in ENDPOINTS is listed in query_params"),
        );
    }
    let mut ok = ResponseBuilder::new().description("Done");
    if let Some((ct, c)) = content(e.response) {
        ok = ok.content(ct, c);
    }
    let mut op = OperationBuilder::new()
        .operation_id(Some(e.operation_id))
        .summary(Some(e.summary))
        .description((!e.description.is_empty()).then_some(e.description))
        .tag(tag(e.path))
        .parameters(Some(params))
        .response("200", ok.build());
    if let Some((ct, c)) = content(e.request) {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(ct, c)
                .required(Some(Required::True))
                .build(),
        ));
    }
    // Anything that reads the store may fail inside; public routes do not.
    let internal: &[u16] = if e.auth == Auth::Public { &[] } else { &[500] };
    for status in e.errors.iter().chain(internal) {
        op = op.response(
            status.to_string(),
            ResponseBuilder::new()
                .description(refusal(*status))
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build(),
        );
    }
    if let Auth::Bearer(any_of) = e.auth {
        op = op.security(SecurityRequirement::new(BEARER, Vec::<String>::new()));
        let mut ext = Extensions::default();
        ext.insert(
            "x-roles".into(),
            e.roles()
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .into(),
        );
        ext.insert(
            "x-permissions".into(),
            any_of.iter().map(|p| p.as_str()).collect::<Vec<_>>().into(),
        );
        op = op.extensions(Some(ext));
    }
    op.build()
}

/// Group operations by resource: `/api/v1/devices/{id}` is `devices`.
fn tag(path: &str) -> &str {
    path.strip_prefix("/api/v1/")
        .and_then(|p| p.split('/').next())
        .map_or("operations", |t| t.trim_end_matches(".json"))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::from_str(&document_json()).unwrap()
    }

    fn op<'a>(doc: &'a Value, e: &Endpoint) -> &'a Value {
        &doc["paths"][e.openapi_path()][e.method.as_str().to_lowercase()]
    }

    #[test]
    fn the_json_is_an_openapi_3_document() {
        let v = doc();
        let version = v["openapi"].as_str().unwrap();
        assert!(version.starts_with("3."), "{version}");
        assert_eq!(v["info"]["title"], "Sandogh controller API");
    }

    #[test]
    fn every_endpoint_is_an_operation_with_its_method() {
        assert!(!ENDPOINTS.is_empty());
        let d = document();
        for e in ENDPOINTS {
            let op = d
                .paths
                .get_path_operation(e.openapi_path(), http_method(e.method))
                .unwrap_or_else(|| panic!("{} {} is not in the document", e.method, e.path));
            assert_eq!(op.operation_id.as_deref(), Some(e.operation_id));
        }
        let operations: usize = doc()["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(operations, ENDPOINTS.len());
    }

    #[test]
    fn bearer_operations_list_the_roles_that_may_call_them() {
        let v = doc();
        let mut checked = 0;
        for e in ENDPOINTS {
            let Auth::Bearer(any_of) = e.auth else {
                continue;
            };
            let want: Vec<&str> = Role::ALL
                .into_iter()
                .filter(|r| any_of.iter().any(|p| r.allows(*p)))
                .map(Role::as_str)
                .collect();
            assert!(!want.is_empty(), "nobody may call {}", e.operation_id);
            let op = op(&v, e);
            assert_eq!(op["x-roles"], serde_json::json!(want), "{}", e.operation_id);
            assert_eq!(
                op["security"],
                serde_json::json!([{ BEARER: [] }]),
                "{}",
                e.operation_id
            );
            checked += 1;
        }
        assert!(checked > 0);
    }

    #[test]
    fn public_and_enrolment_operations_have_no_security_requirement() {
        let v = doc();
        assert!(v.get("security").is_none(), "no document-wide requirement");
        let mut checked = 0;
        for e in ENDPOINTS
            .iter()
            .filter(|e| !matches!(e.auth, Auth::Bearer(_)))
        {
            let op = op(&v, e);
            assert!(op.is_object(), "{}", e.operation_id);
            assert!(op.get("security").is_none(), "{}", e.operation_id);
            assert!(op.get("x-roles").is_none(), "{}", e.operation_id);
            checked += 1;
        }
        // healthz, openapi.json, enrol, artifact, the three TUF routes and
        // the device's log upload
        assert_eq!(checked, 8);
    }

    #[test]
    fn every_schema_named_in_the_table_is_a_component() {
        let v = doc();
        let schemas = v["components"]["schemas"].as_object().unwrap();
        let mut named = 0;
        for e in ENDPOINTS {
            for body in [e.request, e.response] {
                if let Body::Json(name) | Body::JsonList(name) = body {
                    assert!(schemas.contains_key(name), "{name} of {}", e.operation_id);
                    named += 1;
                }
            }
            if let Some(q) = e.query {
                assert!(query_params(q).is_some_and(|p| !p.is_empty()), "{q}");
            }
        }
        assert!(named > 0);
    }

    #[test]
    fn every_reference_resolves_to_a_component() {
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let v = doc();
        let mut found = Vec::new();
        refs(&v, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(v["components"]["schemas"].get(name).is_some(), "{r}");
        }
    }

    #[test]
    fn refusals_answer_the_error_body() {
        let v = doc();
        let mut checked = 0;
        for e in ENDPOINTS {
            for status in e.errors {
                let r = &op(&v, e)["responses"][status.to_string()];
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{status} of {}",
                    e.operation_id
                );
                checked += 1;
            }
        }
        assert!(checked > 0);
    }

    #[test]
    fn parameters_are_listed_from_the_path_and_the_query_type() {
        let v = doc();
        let names = |e: &Endpoint| -> Vec<(String, String)> {
            op(&v, e)["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().into(),
                        p["in"].as_str().unwrap().into(),
                    )
                })
                .collect()
        };
        assert_eq!(
            names(&crate::endpoints::MOVE_DEVICE),
            [("id".to_string(), "path".to_string())]
        );
        let readiness: Vec<String> = names(&crate::endpoints::READINESS)
            .into_iter()
            .map(|(n, i)| format!("{i}:{n}"))
            .collect();
        assert_eq!(readiness, ["query:by", "query:province"]);
        assert_eq!(
            op(&v, &crate::endpoints::IMPORT_REGISTRY)["requestBody"]["content"]["text/csv"]
                ["schema"]["type"],
            "string"
        );
    }

    #[test]
    fn metrics_says_it_refuses_province_scoped_tokens() {
        let v = doc();
        let d = op(&v, &crate::endpoints::METRICS)["description"]
            .as_str()
            .unwrap();
        assert!(d.contains("province-scoped"), "{d}");
    }
}
