//! Print the OpenAPI document (`cargo run -p fleet-api --example openapi`).
fn main() {
    println!("{}", fleet_api::openapi::document_json());
}
